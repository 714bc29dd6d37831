"""Uninstall and Shopify's mandatory privacy webhooks, end to end over HTTP and the worker."""

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel import SQLModel, func, select

from app.commerce.events import CheckoutChanged, Customer
from app.commerce.models import Order
from app.db import sessionmaker
from app.inbox.models import InboxEntry, InboxStatus
from app.mail.transport import OutboxTransport
from app.privacy.models import DataRequest
from app.settings import get_settings
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import service as flows_service
from flows.models import Enrollment, Flow, Send
from flows.tasks import sweep
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, running_worker, wait_for
from tests.shopify import fixture, post

PERSONAL = ("jane.doe@example.com", "Jane", "Doe", "555-555-0142")


@pytest.fixture
async def outbox_worker(redis: ArqRedis) -> AsyncIterator[Path]:
    """The worker writing to the outbox folder, as on embedded defaults."""
    folder = get_settings().outbox_dir
    shutil.rmtree(folder, ignore_errors=True)  # each test reads only its own messages
    async with running_worker(redis, OutboxTransport(folder)):
        yield folder


async def deliver(client: httpx.AsyncClient, topic: str, payload: dict[str, object]) -> None:
    response = await post(client, topic, payload, secret=SHOP_SECRET, domain=SHOP_DOMAIN)
    assert response.status_code == 200, response.text


async def processed() -> bool:
    async with sessionmaker()() as session:
        query = select(InboxEntry).where(InboxEntry.status == InboxStatus.RECEIVED)
        return (await session.exec(query)).first() is None


def fresh_checkout() -> dict[str, object]:
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, updated_at=now)
    return payload


async def shop_row() -> Shop | None:
    async with sessionmaker()() as session:
        return (await session.exec(select(Shop))).first()


async def test_uninstall_cancels_due_steps_deletes_the_token_and_reinstall_keeps_settings(
    server: httpx.AsyncClient, outbox_worker: Path, shop: Shop, redis: ArqRedis
) -> None:
    async with sessionmaker()() as session:
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 2, 7200)
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 3600)
        await session.commit()
    await deliver(server, "checkouts/create", fresh_checkout())
    await wait_for(processed)

    await deliver(server, "app/uninstalled", {"id": 548380009, "domain": SHOP_DOMAIN})
    await wait_for(processed)
    async with sessionmaker()() as session:
        enrollment = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()
        enrollment.due_at = datetime.now(UTC)  # the step falls due after the uninstall
        await session.commit()
    await sweep({"redis": redis})
    await asyncio.sleep(1)

    assert list(outbox_worker.rglob("*.eml")) == []
    async with sessionmaker()() as session:
        assert (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one().exit_reason == "uninstalled"
    uninstalled = await shop_row()
    assert uninstalled and uninstalled.uninstalled_at and uninstalled.access_token_encrypted is None

    async with sessionmaker()() as session:
        await connect_shopify(
            session, domain=SHOP_DOMAIN, access_token="new", api_secret=SHOP_SECRET
        )
        await session.commit()
        flow = (await session.exec(select(Flow).where(Flow.name == "abandoned_cart"))).one()
    reinstalled = await shop_row()
    assert reinstalled and reinstalled.uninstalled_at is None
    assert [step["delay"] for step in flow.steps] == [3600, 7200, 259200]


async def test_data_request_keeps_an_export_of_everything_held_for_the_merchant(
    server: httpx.AsyncClient, outbox_worker: Path, shop: Shop
) -> None:
    checkout = fresh_checkout()
    await deliver(server, "checkouts/create", checkout)
    await wait_for(lambda: asyncio.sleep(0, result=list(outbox_worker.rglob("*.eml"))))
    await deliver(server, "orders/create", fixture("orders_create"))
    await wait_for(processed)

    await deliver(server, "customers/data_request", fixture("customers_data_request"))
    await wait_for(processed)

    async with sessionmaker()() as session:
        request = (await session.exec(select(DataRequest))).one()
    export = json.loads(request.export)
    assert request.platform_request_id == "9999"
    assert [c["token"] for c in export["checkouts"]] == [checkout["token"]]
    (exported,) = export["checkouts"]
    assert (exported["first_name"], exported["last_name"]) == ("Jane", "Doe")
    assert exported["phone"] == "555-555-0142"
    assert [o["name"] for o in export["orders"]] == ["#1042"]
    assert export["messages_sent"][0]["status"] == "sent"
    assert export["emails"][0]["flow"] == "abandoned_cart"


async def test_customer_redact_erases_every_personal_trace_but_keeps_the_figures(
    server: httpx.AsyncClient, outbox_worker: Path, shop: Shop, database: str
) -> None:
    await deliver(server, "checkouts/create", fresh_checkout())
    emails = await wait_for(lambda: asyncio.sleep(0, result=list(outbox_worker.rglob("*.eml"))))
    assert b"Jane" in emails[0].read_bytes()
    await deliver(server, "orders/create", fixture("orders_create"))
    await wait_for(processed)
    await deliver(server, "customers/data_request", fixture("customers_data_request"))
    await wait_for(processed)
    # The checkout holds every personal value the redaction must erase.
    assert {f"checkouts: {value}" for value in PERSONAL} <= set(await _rows_mentioning(PERSONAL))

    await deliver(server, "customers/redact", fixture("customers_redact"))
    await wait_for(processed)

    assert await _rows_mentioning(PERSONAL) == []
    assert list(outbox_worker.rglob("*.eml")) == []
    async with sessionmaker()() as session:
        assert len((await session.exec(select(Send))).all()) == 1  # counts stay
        order = (await session.exec(select(Order))).one()
        assert order.total_price == "146.28"  # revenue stays
    if database.startswith("sqlite"):
        path = Path(database.removeprefix("sqlite:///"))
        for file in (path, Path(f"{path}-wal")):
            content = file.read_bytes() if file.exists() else b""
            for value in PERSONAL:
                assert value.encode() not in content, f"{value} lingers in {file.name}"


async def test_shop_redact_deletes_everything_of_the_shop(
    server: httpx.AsyncClient, outbox_worker: Path, shop: Shop
) -> None:
    await deliver(server, "checkouts/create", fresh_checkout())
    await wait_for(lambda: asyncio.sleep(0, result=list(outbox_worker.rglob("*.eml"))))

    await deliver(server, "shop/redact", fixture("shop_redact"))
    await wait_for(lambda: _no_shop())

    async with sessionmaker()() as session:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await session.exec(select(func.count()).select_from(table))).one()
            assert rows == 0, f"{table.name} still holds {rows} rows"
    assert list(outbox_worker.rglob("*.eml")) == []


async def test_compliance_webhooks_check_the_signature(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    for topic, name in [
        ("customers/redact", "customers_redact"),
        ("customers/data_request", "customers_data_request"),
        ("shop/redact", "shop_redact"),
    ]:
        forged = await post(server, topic, fixture(name), secret="forged", domain=SHOP_DOMAIN)
        assert forged.status_code == 401
    async with sessionmaker()() as session:
        assert (await session.exec(select(InboxEntry))).first() is None


async def test_compliance_webhook_for_a_shop_never_installed_is_acknowledged(
    server: httpx.AsyncClient,
) -> None:
    settings = get_settings()
    settings.shopify_api_secret = SecretStr("app-secret")
    try:
        genuine = await post(
            server, "shop/redact", fixture("shop_redact"), secret="app-secret",
            domain="never-installed.myshopify.com",
        )  # fmt: skip
        forged = await post(
            server, "shop/redact", fixture("shop_redact"), secret="nope",
            domain="never-installed.myshopify.com",
        )  # fmt: skip
    finally:
        settings.shopify_api_secret = None
    assert genuine.status_code == 200
    assert forged.status_code == 401


async def _no_shop() -> bool:
    return await shop_row() is None


async def _rows_mentioning(values: tuple[str, ...]) -> list[str]:
    """Every (table, row) in the database whose text contains any of the values."""
    found = []
    async with sessionmaker()() as session:
        for table in SQLModel.metadata.sorted_tables:
            rows = await session.exec(text(f"SELECT * FROM {table.name}"))  # type: ignore[call-overload]  # noqa: S608
            for row in rows.all():
                # Ciphertexts are random text: "doe" turns up in one now and then.
                cells = [v for k, v in row._mapping.items() if not k.endswith("_encrypted")]
                flat = " ".join(str(cell) for cell in cells).lower()
                found += [f"{table.name}: {v}" for v in values if v.lower() in flat]
    return found


async def test_a_checkout_with_a_phone_and_no_address_is_redacted_by_its_phone(
    shop: Shop,
) -> None:
    from app.commerce.models import Checkout
    from app.commerce.repository import upsert_checkout
    from app.privacy import repository as privacy
    from integrations.shopify import webhooks

    guest = fresh_checkout() | {"email": None, "customer": None, "phone": "+1 613 555 0100"}
    other = fresh_checkout() | {"token": "someone-else", "email": "bo@example.com"}
    assert shop.id is not None
    async with sessionmaker()() as session:
        for payload in (guest, other):
            (event,) = webhooks.events("checkouts/create", payload)
            assert isinstance(event, CheckoutChanged)
            await upsert_checkout(session, shop.id, event)
        await session.commit()
        customer = Customer(email="jane.doe@example.com", phone="+1 613 555 0100", platform_id=None)
        await privacy.redact_customer(session, shop.id, customer)
        await session.commit()
        rows = {c.token: c for c in (await session.exec(select(Checkout))).all()}

    redacted, kept = rows[str(guest["token"])], rows["someone-else"]
    assert (redacted.phone, redacted.first_name, redacted.last_name) == (None, None, None)
    assert redacted.total_price == "146.28"  # the figures stay
    assert kept.email == "bo@example.com" and kept.phone == "555-555-0142"


async def test_redaction_matches_addresses_literally(shop: Shop) -> None:
    from app.privacy import repository as privacy

    assert shop.id is not None
    async with sessionmaker()() as session:
        for number, email in enumerate(["jane_doe@example.com", "janeXdoe@example.com"]):
            session.add(
                InboxEntry(
                    shop_id=shop.id,
                    platform="shopify",
                    topic="checkouts/create",
                    delivery_id=f"d{number}",
                    payload=json.dumps({"email": email}),
                )
            )
        await session.commit()
        customer = Customer(email="jane_doe@example.com", phone=None, platform_id=None)
        await privacy.redact_customer(session, shop.id, customer)
        await session.commit()
        payloads = sorted(e.payload for e in (await session.exec(select(InboxEntry))).all())

    assert payloads == ['{"email": "janeXdoe@example.com"}', privacy.REDACTED_PAYLOAD]
