"""A WooCommerce store end to end, against the local WooCommerce stand-in: connect through
wc-auth, webhooks created by Rebound, signed order deliveries, one recovery email whose link lands
on the order-pay page, nothing after payment. Not one module under flows/ knows WooCommerce."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from arq import Retry
from arq.connections import ArqRedis
from sqlmodel import select

from app.db import sessionmaker
from app.inbox.models import InboxEntry, InboxStatus
from app.settings import get_settings
from app.shops.models import Shop
from app.shops.service import connect_woocommerce
from flows import service as flows_service
from flows.models import Enrollment, EnrollmentStatus
from flows.tasks import sweep
from integrations.woocommerce.connect import set_up_store
from integrations.woocommerce.standin import WooCommerceStandin, order_payload, serve, sign
from tests.conftest import Mailbox, wait_for, without_utm

DOMAIN = "wool.example"
STORE = f"https://{DOMAIN}"


@pytest.fixture
async def woo(server: httpx.AsyncClient) -> AsyncIterator[WooCommerceStandin]:
    """The stand-in store; what it sends (webhooks, the wc-auth callback) reaches Rebound."""
    standin = WooCommerceStandin(outbound_origin=str(server.base_url))
    standin.add_store(DOMAIN, name="Wool Example")
    standin.add_product(DOMAIN, product_id=93, name="Wool Socks", price="12.50")
    settings = get_settings()
    async with serve(standin) as origin:
        settings.woocommerce_api_origin = origin
        try:
            yield standin
        finally:
            settings.woocommerce_api_origin = None


async def connect(server: httpx.AsyncClient, woo: WooCommerceStandin) -> Shop:
    started = await server.get("/connect/woocommerce", params={"store": STORE})
    assert started.status_code == 303
    returned = await woo.approve(started.headers["location"])
    assert parse_qs(urlparse(returned).query)["success"] == ["1"]

    async def set_up() -> Shop | None:
        async with sessionmaker()() as session:
            shop = (await session.exec(select(Shop))).first()
        return shop if shop and shop.currency and len(woo.stores[DOMAIN].webhooks) == 5 else None

    shop: Shop = await wait_for(set_up)
    async with sessionmaker()() as session:
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 0)
        await session.commit()
    return shop


def pending_order(status: str = "pending", **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return order_payload(
        order_id=727,
        store_url=STORE,
        status=status,
        billing={
            "first_name": "Astrid",
            "last_name": "Berg",
            "email": "astrid@example.com",
            "phone": "08-123 456 78",
        },
        line_items=changes.pop(
            "line_items",
            [
                {
                    "product_id": 93,
                    "variation_id": 0,
                    "name": "Wool Socks",
                    "quantity": 2,
                    "price": "12.50",
                }
            ],
        ),
        created_at=now,
        modified_at=now + timedelta(seconds=changes.pop("later", 0)),
        **changes,
    )


async def processed() -> bool:
    async with sessionmaker()() as session:
        query = select(InboxEntry).where(InboxEntry.status == InboxStatus.RECEIVED)
        return (await session.exec(query)).first() is None


async def test_connect_through_wc_auth_creates_webhooks_once(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin
) -> None:
    shop = await connect(server, woo)

    hooks = woo.stores[DOMAIN].webhooks.values()
    assert sorted(h["topic"] for h in hooks) == sorted(
        ["order.created", "order.updated", "order.deleted", "customer.created", "customer.updated"]
    )
    assert {h["delivery_url"] for h in hooks} == {"https://rebound.test/webhooks/woocommerce"}
    assert shop.base_url == STORE and shop.access_token_encrypted
    assert "cs_" not in shop.access_token_encrypted  # stored encrypted


async def test_a_callback_with_an_unknown_user_id_is_refused_and_stores_nothing(
    server: httpx.AsyncClient,
) -> None:
    response = await server.post(
        "/connect/woocommerce/callback",
        json={
            "key_id": 1,
            "user_id": "never-issued",
            "consumer_key": "ck_" + "a" * 40,
            "consumer_secret": "cs_" + "b" * 40,
            "key_permissions": "read_write",
        },
    )

    assert response.status_code == 400
    async with sessionmaker()() as session:
        assert (await session.exec(select(Shop))).first() is None


async def test_a_callback_with_keys_the_store_refuses_stores_nothing_and_spends_nothing(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin
) -> None:
    started = await server.get("/connect/woocommerce", params={"store": STORE})
    user_id = parse_qs(urlparse(started.headers["location"]).query)["user_id"][0]

    forged = await server.post(
        "/connect/woocommerce/callback",
        json={
            "key_id": 1,
            "user_id": user_id,  # visible to anyone who started the connection
            "consumer_key": "ck_" + "a" * 40,
            "consumer_secret": "cs_" + "b" * 40,
            "key_permissions": "read_write",
        },
    )

    assert forged.status_code == 400
    async with sessionmaker()() as session:
        assert (await session.exec(select(Shop))).first() is None
    returned = await woo.approve(started.headers["location"])  # the merchant's own approval
    assert parse_qs(urlparse(returned).query)["success"] == ["1"]


async def test_abandoned_pending_order_gets_one_email_that_lands_on_order_pay(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin, mailbox: Mailbox
) -> None:
    await connect(server, woo)
    order = pending_order()

    deliveries = await woo.fire(DOMAIN, "order.created", order)
    assert [d.status for d in deliveries] == [200]
    # A retried delivery (same id, same bytes) changes nothing.
    again = deliveries[0]
    repeat = await server.post("/webhooks/woocommerce", content=again.body, headers=again.headers)
    assert repeat.json() == {"status": "duplicate"}

    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    message = mailbox.messages[0]
    assert message["To"] == "astrid@example.com" and "Astrid" in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Wool Socks" in text and "$25.00" in text
    link = text.split("https://rebound.test")[1].split()[0]
    restored = await server.get(link)
    assert restored.status_code == 303
    assert without_utm(restored.headers["location"]) == order["payment_url"]

    await woo.fire(DOMAIN, "order.updated", pending_order("processing", later=60))
    await wait_for(processed)
    await asyncio.sleep(0.5)
    assert len(mailbox.messages) == 1


async def test_a_big_cart_alerts_customer_service_with_the_billing_name_and_phone(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin, mailbox: Mailbox
) -> None:
    shop = await connect(server, woo)
    async with sessionmaker()() as session:
        await flows_service.set_setting(
            session, shop, "abandoned_cart", "alert_email", "care@wool.example"
        )
        await flows_service.set_setting(session, shop, "abandoned_cart", "alert_min_total", "20")
        await session.commit()

    await woo.fire(DOMAIN, "order.created", pending_order())

    await wait_for(lambda: asyncio.sleep(0, result=len(mailbox.messages) == 2))
    (alert,) = [m for m in mailbox.messages if m["To"] == "care@wool.example"]
    assert "Astrid Berg" in alert["Subject"] and "$25.00" in alert["Subject"]
    text = alert.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Phone: 08-123 456 78" in text.splitlines() and "Wool Socks" in text
    html = alert.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert 'href="tel:0812345678"' in html and 'href="mailto:astrid@example.com"' in html


async def test_payment_before_the_first_email_means_no_email(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin, mailbox: Mailbox,
    redis: ArqRedis,
) -> None:  # fmt: skip
    shop = await connect(server, woo)
    async with sessionmaker()() as session:
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 3600)
        await session.commit()

    await woo.fire(DOMAIN, "order.created", pending_order())
    await wait_for(processed)
    await woo.fire(DOMAIN, "order.updated", pending_order("processing", later=60))
    await wait_for(processed)
    async with sessionmaker()() as session:
        enrollment = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()
        enrollment.due_at = datetime.now(UTC)
        await session.commit()
    await sweep({"redis": redis})
    await asyncio.sleep(0.5)

    assert mailbox.messages == []
    async with sessionmaker()() as session:
        enrollment = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()
    assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == "purchased"


async def test_ping_is_answered_and_forged_or_unknown_deliveries_are_refused(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin
) -> None:
    await connect(server, woo)
    deliveries = await woo.fire(DOMAIN, "order.created", pending_order())
    genuine = deliveries[0]

    ping = await server.post(
        "/webhooks/woocommerce",
        content=b"webhook_id=12",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    forged = await server.post(
        "/webhooks/woocommerce",
        content=genuine.body.replace(b"Astrid", b"Mallory"),
        headers={**genuine.headers, "X-WC-Webhook-Delivery-ID": "forged"},
    )
    unknown = await server.post(
        "/webhooks/woocommerce",
        content=genuine.body,
        headers={**genuine.headers, "X-WC-Webhook-Source": "https://other.example/"},
    )

    assert ping.status_code == 200 and ping.json() == {"status": "pong"}
    assert forged.status_code == 401 and unknown.status_code == 401
    async with sessionmaker()() as session:
        assert len((await session.exec(select(InboxEntry))).all()) == 1  # the genuine one


async def test_a_signed_body_that_is_not_utf_8_gets_400_and_stores_nothing(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin
) -> None:
    await connect(server, woo)
    (genuine,) = await woo.fire(DOMAIN, "order.created", pending_order())
    (hook,) = [h for h in woo.webhooks(DOMAIN) if h["topic"] == "order.created"]
    latin1 = '{"billing": {"first_name": "Åsa"}}'.encode("latin-1")

    response = await server.post(
        "/webhooks/woocommerce",
        content=latin1,
        headers={
            **genuine.headers,
            "X-WC-Webhook-Signature": sign(latin1, hook["secret"]),
            "X-WC-Webhook-Delivery-ID": "latin-1",
        },
    )

    assert response.status_code == 400 and "not UTF-8" in response.json()["detail"]
    async with sessionmaker()() as session:
        assert len((await session.exec(select(InboxEntry))).all()) == 1  # the genuine one


async def test_a_delivery_from_the_stores_www_home_reaches_the_store_typed_without_it(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin
) -> None:
    await connect(server, woo)
    (genuine,) = await woo.fire(DOMAIN, "order.created", pending_order())
    again = await server.post(
        "/webhooks/woocommerce",
        content=genuine.body,
        headers={
            **genuine.headers,
            "X-WC-Webhook-Source": f"https://www.{DOMAIN}/",
            "X-WC-Webhook-Delivery-ID": "another-delivery",
        },
    )

    assert again.status_code == 200
    async with sessionmaker()() as session:
        assert len((await session.exec(select(InboxEntry))).all()) == 2


async def test_a_store_down_while_setting_up_is_tried_again_until_its_webhooks_exist(
    woo: WooCommerceStandin,
) -> None:
    keys = woo.stores[DOMAIN].credentials
    async with sessionmaker()() as session:
        shop = await connect_woocommerce(
            session,
            url=STORE,
            consumer_key=keys.consumer_key,
            consumer_secret=keys.consumer_secret,
            webhook_secret="s3cret",
        )
        await session.commit()
    assert shop.id is not None
    woo.fail_next(20)  # more than the client's own retries

    with pytest.raises(Retry):
        await set_up_store({"job_try": 1}, shop.id)
    assert woo.stores[DOMAIN].webhooks == {}

    woo.fail_next(0)
    assert await set_up_store({"job_try": 2}, shop.id) == "5 webhooks created"
    assert len(woo.stores[DOMAIN].webhooks) == 5


def test_flows_know_no_platform() -> None:
    for module in (Path(__file__).parents[1] / "flows").glob("*.py"):
        source = module.read_text()
        assert "woocommerce" not in source.lower(), module.name
        assert "integrations.shopify" not in source, module.name


async def test_a_cart_of_variations_shows_each_variation_as_the_store_has_it_now(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin, mailbox: Mailbox
) -> None:
    """Variation ids are not product ids: they are read from their product's variations."""
    woo.add_product(DOMAIN, product_id=22, name="Ship Your Idea", price="12.00")
    woo.add_variation(
        DOMAIN, 22, variation_id=23, attributes={"Size": "M"}, price="10.00",
        image_url=f"{STORE}/wp-content/uploads/idea-m.jpg", image_alt="Ship Your Idea, size M",
    )  # fmt: skip
    await connect(server, woo)
    order = pending_order(
        line_items=[
            {"product_id": 22, "variation_id": 23, "name": "Ship Your Idea", "quantity": 1,
             "price": "12.00"}
        ]
    )  # fmt: skip

    await woo.fire(DOMAIN, "order.created", order)

    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    message = mailbox.messages[0]
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "Ship Your Idea x 1: $10.00" in text  # the variation's price today, not the cart's
    assert "idea-m.jpg" in html and 'alt="Ship Your Idea, size M"' in html
    paths = [r["path"] for r in woo.requests(DOMAIN) if r["method"] == "GET"]
    assert "/products/22/variations" in paths


async def test_the_offer_coupon_is_on_the_pending_order_when_the_restore_link_lands(
    server: httpx.AsyncClient, worker: None, woo: WooCommerceStandin, mailbox: Mailbox
) -> None:
    shop = await connect(server, woo)
    async with sessionmaker()() as session:
        await flows_service.set_step_offer(
            session, shop, "abandoned_cart", 1, flows_service.parse_offer("10%")
        )
        await session.commit()
    order = woo.add_order(DOMAIN, **pending_order_fields())

    await woo.fire(DOMAIN, "order.created", order)

    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    text = mailbox.messages[0].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    (coupon,) = woo.coupons(DOMAIN)
    assert f"use code {coupon['code']}" in text.lower()  # WooCommerce keeps codes in lower case
    assert coupon["email_restrictions"] == ["astrid@example.com"] and coupon["usage_limit"] == 1
    link = text.split("https://rebound.test")[1].split()[0]
    for _ in range(2):  # a second click finds the coupon there and changes nothing
        restored = await server.get(link)
        assert restored.status_code == 303
        assert without_utm(restored.headers["location"]) == order["payment_url"]

    paid_for = woo.stores[DOMAIN].orders[727]
    assert [line["code"] for line in paid_for["coupon_lines"]] == [coupon["code"]]
    assert paid_for["total"] == "22.50"  # 2 × 12.50, less 10 %
    puts = [r for r in woo.requests(DOMAIN) if r["method"] == "PUT"]
    assert [r["path"] for r in puts] == ["/orders/727"]


def pending_order_fields() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "order_id": 727,
        "status": "pending",
        "billing": {"first_name": "Astrid", "email": "astrid@example.com"},
        "line_items": [
            {"product_id": 93, "variation_id": 0, "name": "Wool Socks", "quantity": 2,
             "price": "12.50"}
        ],
        "created_at": now,
    }  # fmt: skip
