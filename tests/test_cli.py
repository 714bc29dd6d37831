"""The `rebound` command as a user runs it: a separate process on the same database and Redis."""

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import httpx
from sqlmodel import select

from app.commerce.models import Checkout
from app.db import sessionmaker
from app.inbox.models import InboxEntry, InboxStatus
from app.settings import get_settings
from app.shops.models import Shop
from flows.models import Flow
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, Mailbox, _free_port, wait_for
from tests.shopify import fixture, post


async def rebound(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=os.environ.copy(),
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def stored_shop() -> Shop | None:
    async with sessionmaker()() as session:
        return (await session.exec(select(Shop))).first()


async def test_shops_add_connects_a_store_with_its_tokens_encrypted() -> None:
    code, output = await rebound(
        "shops", "add", "shopify",
        "--domain", "My-Store.myshopify.com",
        "--access-token", "shpat_plaintext_token",
        "--api-secret", "shpss_plaintext_secret",
    )  # fmt: skip

    assert code == 0, output
    assert "https://rebound.test/webhooks/shopify" in output
    shop = await stored_shop()
    assert shop and shop.domain == "my-store.myshopify.com"
    for stored in (shop.access_token_encrypted, shop.api_secret_encrypted):
        assert stored and "plaintext" not in stored
    async with sessionmaker()() as session:
        flows = (await session.exec(select(Flow))).all()
    assert [flow.name for flow in flows] == ["abandoned_cart"]


async def test_shops_add_refuses_bad_input_and_changes_nothing() -> None:
    bad_domain = await rebound(
        "shops", "add", "shopify",
        "--domain", "evil.com", "--access-token", "t", "--api-secret", "s",
    )  # fmt: skip
    no_secret = await rebound(
        "shops", "add", "shopify", "--domain", "x.myshopify.com", "--access-token", "t"
    )  # fmt: skip

    assert bad_domain[0] == 2 and "is not a shop domain" in bad_domain[1]
    assert no_secret[0] == 2 and "SHOPIFY_API_SECRET" in no_secret[1]
    assert await stored_shop() is None


async def test_flows_set_changes_a_step_delay_and_rejects_nonsense(shop: Shop) -> None:
    ok = await rebound(
        "flows", "set", "--shop", SHOP_DOMAIN, "abandoned_cart", "--step", "2", "--delay", "90m"
    )  # fmt: skip
    bad_delay = await rebound(
        "flows", "set", "--shop", SHOP_DOMAIN, "abandoned_cart", "--step", "1", "--delay", "-5s"
    )  # fmt: skip
    bad_step = await rebound(
        "flows", "set", "--shop", SHOP_DOMAIN, "abandoned_cart", "--step", "9", "--delay", "1h"
    )  # fmt: skip
    listing = await rebound("flows", "list", "--shop", SHOP_DOMAIN)

    assert ok[0] == 0, ok[1]
    assert bad_delay[0] == 2 and "not a duration" in bad_delay[1]
    assert bad_step[0] == 2 and "steps 1 to 3" in bad_step[1]
    assert "abandoned_cart\ton\t0s, 90m, 3d" in listing[1]


async def test_inbox_replay_processes_failed_deliveries_again(
    server: httpx.AsyncClient, worker: None, shop: Shop
) -> None:
    broken = fixture("checkouts_create")
    del broken["token"]
    await post(server, "checkouts/create", broken, secret=SHOP_SECRET, domain=SHOP_DOMAIN)

    async def failed() -> InboxEntry | None:
        async with sessionmaker()() as session:
            query = select(InboxEntry).where(InboxEntry.status == InboxStatus.FAILED)
            return (await session.exec(query)).first()

    entry = await wait_for(failed)
    still_failing = await rebound("inbox", "replay")
    assert "1 failed deliveries: 0 handled, 1 still failing" in still_failing[1]

    # What a fix to the code would do for a payload it could not read: now it can.
    async with sessionmaker()() as session:
        stored = await session.get(InboxEntry, entry.id)
        assert stored
        stored.payload = json.dumps({**broken, "token": "replayed-token"})
        await session.commit()
    code, output = await rebound("inbox", "replay")

    assert code == 0, output
    assert "1 failed deliveries: 1 handled, 0 still failing" in output
    async with sessionmaker()() as session:
        checkout = (await session.exec(select(Checkout))).one()
    assert checkout.token == "replayed-token"


async def test_rebound_serve_turns_a_signed_webhook_into_an_outbox_email(
    shop: Shop, mailbox: Mailbox
) -> None:
    """The README path: `rebound serve` on embedded defaults writes emails to the outbox."""
    outbox = get_settings().outbox_dir
    before = set(outbox.rglob("*.eml")) if outbox.exists() else set()
    port = _free_port()
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: _answers(client), within=30)
            checkout = fixture("checkouts_create")
            now = datetime.now(UTC).isoformat()
            checkout.update(created_at=now, updated_at=now)
            answer = await post(
                client, "checkouts/create", checkout, secret=SHOP_SECRET, domain=SHOP_DOMAIN
            )
            assert answer.status_code == 200

            async def new_email() -> list[Path]:
                return sorted(set(outbox.rglob("*.eml")) - before) if outbox.exists() else []

            written = await wait_for(new_email, within=20)
    finally:
        serve.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(serve.communicate(), timeout=20)

    assert len(written) == 1
    message = message_from_bytes(written[0].read_bytes(), policy=policy.default)
    assert message["To"] == "jane.doe@example.com"
    assert "Merino Crew Sweater" in message.get_body(preferencelist=("plain",)).get_content()
    assert mailbox.messages == []  # no SMTP_URL: nothing went out by SMTP
    assert serve.returncode == 0, output.decode()[-2000:]


async def _answers(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.HTTPError:
        return False
