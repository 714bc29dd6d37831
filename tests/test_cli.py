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
from flows.models import Enrollment, EnrollmentStatus, Flow, Send, SendStatus
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, Mailbox, _free_port, wait_for
from tests.shopify import fixture, post


async def rebound(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=os.environ | (env or {}),
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def stored_shop() -> Shop | None:
    async with sessionmaker()() as session:
        return (await session.exec(select(Shop))).first()


def at_standin() -> dict[str, str]:
    """The command's environment for the stand-in the `standin` fixture started."""
    origin = get_settings().shopify_api_origin
    assert origin
    return {"SHOPIFY_API_ORIGIN": origin}


async def test_shops_add_connects_a_store_with_its_tokens_encrypted(
    standin: ShopifyStandin,
) -> None:
    standin.add_shop(
        "my-store.myshopify.com",
        access_token="shpat_plaintext_token",
        name="Nordic Wool",
        email="hej@nordicwool.example",
        currency="SEK",
        locale="sv",
        iana_timezone="Europe/Stockholm",
        country_code="SE",
    )
    code, output = await rebound(
        "shops", "add", "shopify",
        "--domain", "My-Store.myshopify.com",
        "--access-token", "shpat_plaintext_token",
        "--api-secret", "shpss_plaintext_secret",
        env=at_standin(),
    )  # fmt: skip

    assert code == 0, output
    assert "https://rebound.test/webhooks/shopify" in output
    assert "Nordic Wool: SEK, Europe/Stockholm, SE" in output
    shop = await stored_shop()
    assert shop and shop.domain == "my-store.myshopify.com"
    # The same details the OAuth install reads, with the token the command was given.
    assert (shop.name, shop.email, shop.locale) == ("Nordic Wool", "hej@nordicwool.example", "sv")
    assert (shop.currency, shop.timezone, shop.country_code) == ("SEK", "Europe/Stockholm", "SE")
    assert shop.address and "150 Elgin Street" in shop.address
    for stored in (shop.access_token_encrypted, shop.api_secret_encrypted):
        assert stored and "plaintext" not in stored
    async with sessionmaker()() as session:
        flows = (await session.exec(select(Flow).where(Flow.name == "abandoned_cart"))).all()
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


async def test_shops_add_keeps_a_name_given_on_the_command_line(standin: ShopifyStandin) -> None:
    standin.add_shop("my-store.myshopify.com", access_token="shpat_t", name="Nordic Wool")
    code, output = await rebound(
        "shops", "add", "shopify", "--domain", "my-store.myshopify.com",
        "--access-token", "shpat_t", "--api-secret", "s", "--name", "Wool & Co",
        env=at_standin(),
    )  # fmt: skip

    assert code == 0, output
    shop = await stored_shop()
    assert shop and shop.name == "Wool & Co" and shop.currency == "USD"


async def test_shops_add_with_a_token_shopify_refuses_stores_nothing(
    standin: ShopifyStandin,
) -> None:
    standin.add_shop("my-store.myshopify.com", access_token="shpat_real")
    code, output = await rebound(
        "shops", "add", "shopify", "--domain", "my-store.myshopify.com",
        "--access-token", "shpat_mistyped", "--api-secret", "s",
        env=at_standin(),
    )  # fmt: skip

    assert code == 2, output
    assert "Shopify refused the access token for my-store.myshopify.com (401)" in output
    assert "Nothing was stored" in output and "shpat_mistyped" not in output
    assert await stored_shop() is None


async def test_shops_add_when_shopify_cannot_be_reached_stores_nothing() -> None:
    nowhere = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    code, output = await rebound(
        "shops", "add", "shopify", "--domain", "my-store.myshopify.com",
        "--access-token", "shpat_t", "--api-secret", "s",
        env={"SHOPIFY_API_ORIGIN": nowhere},
    )  # fmt: skip

    assert code == 2, output
    assert "could not read the store from Shopify" in output and "Nothing was stored" in output
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
    assert "abandoned_cart\ton\treminder 0s, still_there 90m, last_call 3d (10% off)" in listing[1]


async def test_flows_list_json_and_settings_and_shop_sending_rules(shop: Shop) -> None:
    async with sessionmaker()() as session:
        query = select(Flow).where(Flow.name == "abandoned_cart")
        before = (await session.exec(query)).one().version
    setting = await rebound(
        "flows", "set", "--shop", SHOP_DOMAIN, "abandoned_cart", "--setting", "min_cart_value=50"
    )  # fmt: skip
    unknown = await rebound(
        "flows", "set", "--shop", SHOP_DOMAIN, "abandoned_cart", "--setting", "colour=red"
    )  # fmt: skip
    step_on = await rebound(
        "flows", "set", "--shop", SHOP_DOMAIN, "post_purchase", "--step", "1", "--step-on"
    )  # fmt: skip
    rules = await rebound(
        "shops", "set", "--shop", SHOP_DOMAIN, "--quiet-hours", "22:00-07:00",
        "--frequency-cap", "off", "--timezone", "Europe/Oslo",
    )  # fmt: skip
    bad_zone = await rebound("shops", "set", "--shop", SHOP_DOMAIN, "--timezone", "Mars/Base")
    listing = await rebound("flows", "list", "--shop", SHOP_DOMAIN, "--json")

    assert setting[0] == 0 and step_on[0] == 0 and rules[0] == 0, (setting, step_on, rules)
    assert unknown[0] == 2 and "no setting 'colour'" in unknown[1]
    assert bad_zone[0] == 2 and "not a time zone" in bad_zone[1]
    flows = {f["name"]: f for f in json.loads(listing[1][listing[1].index("[") :])}
    assert flows["abandoned_cart"]["settings"]["min_cart_value"] == 50
    assert flows["post_purchase"]["steps"][0]["enabled"] is True
    # One edit kept, one refused: the version moved once.
    assert flows["abandoned_cart"]["version"] == before + 1 and flows["winback"]["version"] == 1
    async with sessionmaker()() as session:
        stored = (await session.exec(select(Shop))).one()
    assert (stored.quiet_hours, stored.frequency_cap, stored.timezone) == (
        "22:00-07:00", None, "Europe/Oslo",
    )  # fmt: skip


async def test_flows_export_and_import_edit_a_flow_as_data(shop: Shop, tmp_path: Path) -> None:
    code, exported = await rebound("flows", "export", "--shop", SHOP_DOMAIN, "winback")
    assert code == 0, exported
    document = json.loads(exported[exported.index("{") :])  # after the log lines
    offer, values, goodbye, ignored = document["steps"]
    offer["offers"]["top"]["value"] = "25"
    document["steps"] = [offer, goodbye | {"delay": 10 * 86400}, ignored]  # no values email
    edited = tmp_path / "winback.json"
    edited.write_text(json.dumps(document))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"steps": [offer | {"template": "abandoned_cart"}]}))
    broken = tmp_path / "broken.json"
    broken.write_text("{steps: ")

    imported = await rebound("flows", "import", "--shop", SHOP_DOMAIN, "winback", str(edited))
    refused = await rebound("flows", "import", "--shop", SHOP_DOMAIN, "winback", str(wrong))
    unreadable = await rebound("flows", "import", "--shop", SHOP_DOMAIN, "winback", str(broken))

    assert imported[0] == 0 and "3 steps, version 2" in imported[1], imported[1]
    assert refused[0] == 2 and "not one of winback's" in refused[1]
    assert unreadable[0] == 2 and "is not JSON" in unreadable[1]
    async with sessionmaker()() as session:
        flow = (await session.exec(select(Flow).where(Flow.name == "winback"))).one()
    assert [step["key"] for step in flow.steps] == ["we_miss_you", "goodbye", "goodbye_ignored"]
    assert flow.steps[0]["offers"]["top"]["value"] == "25" and flow.version == 2


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


async def test_flows_activity_shows_sent_skipped_withheld_and_waiting(shop: Shop) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        flow = (await session.exec(select(Flow).where(Flow.name == "abandoned_cart"))).one()
        cart = Enrollment(
            shop_id=shop.id, flow="abandoned_cart", subject="checkout:x", email="a@example.com",
            steps=flow.steps, next_step=None, status=EnrollmentStatus.DONE,
        )  # fmt: skip
        parcel = Enrollment(
            shop_id=shop.id, flow="post_purchase", subject="order:x", email="b@example.com",
            steps=[{"key": "shipping_notice", "delay": 0}], next_step=0, waiting_for="shipped",
        )  # fmt: skip
        crashed = Enrollment(
            shop_id=shop.id, flow="abandoned_cart", subject="checkout:y", email="c@example.com",
            steps=flow.steps, next_step=1,
        )  # fmt: skip
        session.add_all([cart, parcel, crashed])
        await session.flush()
        assert cart.id is not None and crashed.id is not None
        session.add_all(
            [
                Send(shop_id=shop.id, enrollment_id=cart.id, step=0, email="a@example.com",
                     status=SendStatus.SENT),
                Send(shop_id=shop.id, enrollment_id=crashed.id, step=0, email="c@example.com",
                     status=SendStatus.UNKNOWN, message_id="<m1@rebound.test>",
                     error="the hand-off began and its end was never recorded"),
                Send(shop_id=shop.id, enrollment_id=cart.id, step=2, email="a@example.com",
                     status=SendStatus.SENT, offer_skipped="offer guard: an offer went out"),
                Send(shop_id=shop.id, enrollment_id=cart.id, step=1, email="a@example.com",
                     status=SendStatus.SKIPPED, error="total below 50"),
            ]
        )  # fmt: skip
        await session.commit()

    code, output = await rebound("flows", "activity", "--shop", SHOP_DOMAIN)

    assert code == 0, output
    assert "last_call\ta@example.com\tsent\toffer withheld: offer guard" in output
    assert "still_there\ta@example.com\tskipped\ttotal below 50" in output
    assert "post_purchase\tshipping_notice\tb@example.com\twaiting\tshipped" in output
    assert (
        "reminder\tc@example.com\tunknown\tmay not have been sent — check your mail provider's "
        "log (Message-ID <m1@rebound.test>); the hand-off began" in output
    )
