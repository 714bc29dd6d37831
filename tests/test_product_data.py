"""Emails show what the store says now: images, current prices, sold-out items; a cart with
nothing left to buy gets no reminder. Against the local Shopify stand-in."""

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import select

from app import security
from app.commerce import catalog
from app.db import sessionmaker
from app.mail.transport import OutboxTransport
from app.queue import Jobs
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import engine
from flows import service as flows_service
from flows.models import Enrollment, Send
from integrations.shopify import webhooks
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, without_utm
from tests.shopify import fixture

SWEATER, BEANIE = 44123456789012, 44123456789013


async def connected_shop(standin: ShopifyStandin) -> Shop:
    standin.add_shop(SHOP_DOMAIN, name="Nordic Wool")
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session,
            domain=SHOP_DOMAIN,
            access_token=standin.token_for(SHOP_DOMAIN),
            api_secret=SHOP_SECRET,
        )
        shop.currency = "USD"
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 0)
        await session.commit()
        return shop


def stock(standin: ShopifyStandin, *, sweater: bool = True, beanie: bool = True) -> None:
    standin.add_variant(
        SHOP_DOMAIN, variant_id=SWEATER, title="Charcoal / M", price="79.00",
        product_title="Merino Crew Sweater", handle="merino-crew", available=sweater,
        image_url="https://cdn.shopify.com/s/files/sweater.jpg", image_alt="A charcoal sweater",
    )  # fmt: skip
    standin.add_variant(
        SHOP_DOMAIN, variant_id=BEANIE, title="Oatmeal", price="24.50",
        product_title="Wool Beanie", handle="wool-beanie", available=beanie,
    )  # fmt: skip


async def send_step(shop: Shop, outbox: Path, **changes: Any) -> tuple[str, str]:
    """Enroll the documented checkout and run its first step; the outcome and the HTML sent."""
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, updated_at=now, **changes)
    assert shop.id is not None
    async with sessionmaker()() as session:
        for event in webhooks.events("checkouts/create", payload):
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()
        enrollment = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()
        assert enrollment.id is not None
        outcome = await engine.run_step(session, Jobs(), OutboxTransport(outbox), enrollment.id, 0)
    written = list(outbox.rglob("*.eml"))
    if not written:
        return outcome, ""
    message = message_from_bytes(written[0].read_bytes(), policy=policy.default)
    html = message.get_body(preferencelist=("html",))
    return outcome, html.get_content() if html else ""


async def test_email_shows_store_images_and_current_prices(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await connected_shop(standin)
    stock(standin)

    outcome, html = await send_step(shop, tmp_path)

    assert outcome == "sent"
    assert 'src="https://cdn.shopify.com/s/files/sweater.jpg"' in html
    assert 'alt="A charcoal sweater"' in html
    assert 'alt="Wool Beanie"' not in html  # no image: no <img> at all
    assert "$79.00" in html and "$89.00" not in html  # today's price, not the checkout's
    assert len(standin.requests(SHOP_DOMAIN)) == 1  # both variants in one request


async def test_sold_out_items_are_marked_and_a_fully_sold_out_cart_gets_nothing(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await connected_shop(standin)
    stock(standin, sweater=False)

    outcome, html = await send_step(shop, tmp_path / "one")
    assert outcome == "sent" and "(sold out)" in html

    async with sessionmaker()() as session:
        for model in (Send, Enrollment):
            for row in (await session.exec(select(model))).all():
                await session.delete(row)
        await session.commit()
    standin.shops[SHOP_DOMAIN].variants.clear()
    stock(standin, sweater=False, beanie=False)
    catalog.forget()  # five minutes later, as far as the cache knows
    outcome, html = await send_step(shop, tmp_path / "two")
    assert outcome == "exited: sold_out" and html == ""


async def test_an_unreachable_store_still_gets_the_email_with_checkout_prices(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await connected_shop(standin)
    stock(standin)
    async with sessionmaker()() as session:  # a token Shopify no longer knows (revoked)
        stored = await session.get(Shop, shop.id)
        assert stored
        stored.access_token_encrypted = security.encrypt("shpat_revoked")
        await session.commit()

    outcome, html = await send_step(shop, tmp_path)

    product_images = [src for src in re.findall(r'<img src="([^"]+)"', html) if "/o/" not in src]
    assert outcome == "sent" and "$89.00" in html and product_images == []  # only the pixel
    async with sessionmaker()() as session:
        marked = await session.get(Shop, shop.id)
    assert marked and marked.token_invalid_at is not None  # shown by `rebound shops list`


async def test_checkout_without_recovery_url_restores_through_a_cart_permalink(
    server: httpx.AsyncClient, standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await connected_shop(standin)
    stock(standin)

    outcome, html = await send_step(shop, tmp_path, abandoned_checkout_url=None)
    assert outcome == "sent"
    link = html.split('href="https://rebound.test')[1].split('"')[0]

    restored = await server.get(link)

    assert restored.status_code == 303
    assert (
        without_utm(restored.headers["location"])
        == f"https://{SHOP_DOMAIN}/cart/{SWEATER}:1,{BEANIE}:2"
    )


async def test_an_item_the_store_no_longer_has_is_shown_as_gone(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await connected_shop(standin)
    stock(standin)
    del standin.shops[SHOP_DOMAIN].variants[f"gid://shopify/ProductVariant/{BEANIE}"]

    outcome, html = await send_step(shop, tmp_path)

    assert outcome == "sent"
    assert "Wool Beanie</strong> <span" in html and "(no longer available)" in html
    assert "$49.00" in html  # its line keeps the checkout's price
