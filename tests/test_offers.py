"""An offer step: one single-use code per recipient, made in the store once however often the
step is retried, shown in the email and applied by the restore link."""

from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlmodel import select

from app.db import sessionmaker
from app.mail.transport import OutboxTransport
from app.queue import Jobs
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import engine
from flows import service as flows_service
from flows.models import Enrollment, Send
from flows.service import FlowSettingError, parse_offer
from integrations.shopify import webhooks
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET
from tests.shopify import fixture


class FailingOnce:
    """A transport whose first delivery fails the way a dropped connection does."""

    def __init__(self, then: OutboxTransport) -> None:
        self.then, self.failed = then, False

    async def deliver(self, message: Any, *, shop_domain: str) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionResetError("connection dropped")
        await self.then.deliver(message, shop_domain=shop_domain)


async def shop_with_offer(standin: ShopifyStandin | None, offer: str) -> Shop:
    if standin is not None:
        standin.add_shop(SHOP_DOMAIN, name="Nordic Wool")
        for variant_id, product in (
            (44123456789012, "Merino Crew Sweater"),
            (44123456789013, "Wool Beanie"),
        ):
            standin.add_variant(
                SHOP_DOMAIN, variant_id=variant_id, title="Default", price="10.00",
                product_title=product, handle=product.lower().replace(" ", "-"),
            )  # fmt: skip
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session,
            domain=SHOP_DOMAIN,
            access_token=standin.token_for(SHOP_DOMAIN) if standin else "shpat_unknown",
            api_secret=SHOP_SECRET,
        )
        shop.currency = "USD"
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 0)
        await flows_service.set_step_offer(session, shop, "abandoned_cart", 1, parse_offer(offer))
        await session.commit()
        return shop


async def enroll(shop: Shop) -> int:
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, updated_at=now)
    assert shop.id is not None
    async with sessionmaker()() as session:
        for event in webhooks.events("checkouts/create", payload):
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()
        enrollment = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()
        assert enrollment.id is not None
        return enrollment.id


async def run(enrollment_id: int, transport: Any) -> str:
    async with sessionmaker()() as session:
        return await engine.run_step(session, Jobs(), transport, enrollment_id, 0)


def sent_text(outbox: Path) -> str:
    (written,) = list(outbox.rglob("*.eml"))
    message = message_from_bytes(written.read_bytes(), policy=policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


async def test_one_code_per_recipient_across_retries_shown_and_applied(
    server: httpx.AsyncClient, standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await shop_with_offer(standin, "15%")
    enrollment_id = await enroll(shop)
    transport = FailingOnce(OutboxTransport(tmp_path))

    with pytest.raises(ConnectionResetError):
        await run(enrollment_id, transport)
    assert await run(enrollment_id, transport) == "sent"

    discounts = standin.discounts(SHOP_DOMAIN)
    assert len(discounts) == 1  # the retry found its code already made
    async with sessionmaker()() as session:
        send = (await session.exec(select(Send))).one()
    assert send.discount_code and discounts[0]["code"] == send.discount_code
    text = sent_text(tmp_path)
    assert "15% off your order" in text and send.discount_code in text

    link = text.split("https://rebound.test")[1].split()[0]
    restored = await server.get(link)
    target = urlparse(restored.headers["location"])
    assert restored.status_code == 303
    assert target.path == f"/discount/{send.discount_code}"
    recovery = urlparse(fixture("checkouts_create")["abandoned_checkout_url"])
    assert parse_qs(target.query)["redirect"] == [f"{recovery.path}?{recovery.query}"]


async def test_an_offer_the_store_cannot_make_is_left_out_with_the_reason(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await shop_with_offer(None, "free-shipping")  # a token Shopify does not know
    enrollment_id = await enroll(shop)

    assert await run(enrollment_id, OutboxTransport(tmp_path)) == "sent"

    async with sessionmaker()() as session:
        send = (await session.exec(select(Send))).one()
    assert send.discount_code is None
    assert send.offer_skipped and "Shopify refused the discount" in send.offer_skipped
    assert "code" not in sent_text(tmp_path).lower().split("unsubscribe")[0]


@pytest.mark.parametrize("words", ["0%", "150%", "-5", "abc", "free"])
def test_nonsense_offers_are_refused_with_the_reason(words: str) -> None:
    with pytest.raises(FlowSettingError):
        parse_offer(words)


async def test_an_unreachable_woocommerce_store_still_gets_the_email_without_the_offer(
    tmp_path: Path,
) -> None:
    from app.settings import get_settings
    from app.shops.service import connect_woocommerce
    from integrations.woocommerce import webhooks as woo_webhooks
    from integrations.woocommerce.standin import order_payload
    from tests.conftest import _free_port

    async with sessionmaker()() as session:
        shop = await connect_woocommerce(
            session, url="https://wool.example", consumer_key="ck_" + "a" * 40,
            consumer_secret="cs_" + "b" * 40, webhook_secret="s",
        )  # fmt: skip
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 0)
        await flows_service.set_step_offer(session, shop, "abandoned_cart", 1, parse_offer("10%"))
        await session.commit()
        now = datetime.now(UTC)
        payload = order_payload(
            order_id=5, store_url="https://wool.example", status="pending",
            billing={"first_name": "Astrid", "email": "astrid@example.com"},
            line_items=[{"product_id": 9, "variation_id": 0, "name": "Socks", "quantity": 1,
                         "price": "9.00"}],
            created_at=now, modified_at=now,
        )  # fmt: skip
        assert shop.id is not None
        for event in woo_webhooks.events("order.created", payload):
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()
        enrollment_id = (
            (await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart")))
            .one()
            .id
        )
    assert enrollment_id is not None
    settings = get_settings()
    settings.woocommerce_api_origin = f"http://127.0.0.1:{_free_port()}"  # nothing listens
    try:
        assert await run(enrollment_id, OutboxTransport(tmp_path)) == "sent"
    finally:
        settings.woocommerce_api_origin = None

    async with sessionmaker()() as session:
        send = (await session.exec(select(Send))).one()
    assert send.discount_code is None
    assert send.offer_skipped and "could not be reached" in send.offer_skipped
