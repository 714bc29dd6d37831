"""A step's email as a customer would get it, without sending or storing anything: with the
shop's latest cart or order when it has one, else with sample data. Links in a preview lead
nowhere (they name no real send) and nothing is tracked."""

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.events import LineItem
from app.commerce.models import Checkout, Order, Shipment
from app.commerce.offers import DiscountCode, Offer, OfferError
from app.db import utcnow
from app.mail import compose
from app.shops.models import Shop
from flows.definitions import ABANDONED_CART, POST_PURCHASE, settings_for
from flows.models import Enrollment, Send
from flows.service import FlowSettingError, shop_flow

SAMPLE_ITEMS = (
    LineItem("Merino Crew Sweater", "Oatmeal / M", 1, "89.00", None, "1", "1"),
    LineItem("Wool Beanie", None, 2, "19.00", None, "2", "2"),
)
SAMPLE_PICKS = (compose.Recommended("Alpaca Scarf", None), compose.Recommended("Wool Socks", None))
PREVIEW_SEND_ID = 0  # no send has id 0: the preview's links are refused if followed


async def preview(
    session: AsyncSession,
    shop: Shop,
    flow_name: str,
    step_number: int,
    lang: str,
    *,
    segment: str = "regular",
    items: Sequence[LineItem] = SAMPLE_ITEMS,
    picks: Sequence[compose.Recommended] = SAMPLE_PICKS,
) -> EmailMessage:
    """`segment` is the win-back customer's; `items` and `picks` stand in for a cart or order
    and for recommendations when the shop has none of its own."""
    flow = await shop_flow(session, shop, flow_name)
    if not 1 <= step_number <= len(flow.steps):
        raise FlowSettingError(f"{flow_name} has steps 1 to {len(flow.steps)}, not {step_number}")
    step = flow.steps[step_number - 1]
    if step.get("action"):
        raise FlowSettingError(f"step {step_number} of {flow_name} sends no email")
    shown = shop.model_copy(update={"tracking": False, "locale": lang})
    send = Send(id=PREVIEW_SEND_ID, shop_id=shop.id or 0, enrollment_id=0, step=step_number - 1,
                email="customer@example.com")  # fmt: skip
    discount = _sample_discount(step, segment)
    settings = settings_for(flow_name, flow.settings)
    if flow_name == ABANDONED_CART:
        checkout = await _latest_checkout(session, shop) or _sample_checkout(shop, items)
        checkout = checkout.model_copy(update={"locale": lang})
        kept = checkout.platform_updated_at + timedelta(days=settings["cart_kept_days"])
        return compose.abandoned_cart(shown, checkout, send, step, {}, discount, kept)
    if flow_name == POST_PURCHASE:
        order = await _latest_order(session, shop) or _sample_order(shop, items)
        order = order.model_copy(update={"locale": lang})
        shipments = [_sample_shipment(order)]
        extra: dict[str, Any] = {
            "replenish": [str(i.get("product_id")) for i in order.line_items],
            "runs_out": utcnow() + timedelta(days=5),
            "order_count": 5,
        }
        return compose.order_email(
            shown, order, send, step, {}, shipments, list(picks), discount, settings,
            extra if step["template"] in ("replenishment", "surprise_reward") else {},
        )  # fmt: skip
    enrollment = Enrollment(
        shop_id=shop.id or 0, flow=flow_name, subject="preview", email=send.email,
        context={"segment": segment, "locale": lang,
                 "last_order_at": (utcnow() - timedelta(days=120)).isoformat()},
    )  # fmt: skip
    return compose.winback_email(shown, enrollment, send, step, discount)


async def alert_preview(
    session: AsyncSession, shop: Shop, lang: str, *, items: Sequence[LineItem] = SAMPLE_ITEMS
) -> EmailMessage:
    """The big-cart alert as the shop's customer service would get it, written in `lang` as
    the shop's own language (the alert goes to the shop, not to the shopper)."""
    shown = shop.model_copy(update={"locale": lang})
    checkout = await _latest_checkout(session, shop) or _sample_checkout(shop, items)
    flow = await shop_flow(session, shop, ABANDONED_CART)
    to = settings_for(ABANDONED_CART, flow.settings)["alert_email"] or shop.email
    return compose.internal_alert(shown, checkout, to or "service@example.com", {})


def _sample_discount(step: dict[str, Any], segment: str) -> DiscountCode | None:
    raw = step.get("offer") or (step.get("offers") or {}).get(segment)
    try:
        offer = Offer.from_step({"offer": raw})
    except OfferError:
        return None
    return DiscountCode("BACK-PREVIEW", offer, offer.ends_at(utcnow())) if offer else None


async def _latest_checkout(session: AsyncSession, shop: Shop) -> Checkout | None:
    query = (
        select(Checkout)
        .where(Checkout.shop_id == shop.id, col(Checkout.email).is_not(None))
        .order_by(col(Checkout.platform_updated_at).desc())
        .limit(1)
    )
    found = (await session.exec(query)).first()
    return found if found and found.line_items else None


async def _latest_order(session: AsyncSession, shop: Shop) -> Order | None:
    query = (
        select(Order)
        .where(Order.shop_id == shop.id, col(Order.email).is_not(None))
        .order_by(col(Order.placed_at).desc())
        .limit(1)
    )
    found = (await session.exec(query)).first()
    return found if found and found.line_items else None


def _sample_checkout(shop: Shop, items: Sequence[LineItem]) -> Checkout:
    now = utcnow() - timedelta(hours=1)
    total = sum((Decimal(i.price) * i.quantity for i in items), Decimal(0))
    return Checkout(
        shop_id=shop.id or 0, token="preview", email="customer@example.com", first_name="Alex",  # noqa: S106
        currency=shop.currency or "USD", subtotal_price=str(total), total_price=str(total),
        line_items=[asdict(item) for item in items], started_at=now, platform_updated_at=now,
    )  # fmt: skip


def _sample_order(shop: Shop, items: Sequence[LineItem]) -> Order:
    total = sum((Decimal(i.price) * i.quantity for i in items), Decimal(0))
    return Order(
        shop_id=shop.id or 0, platform_id="preview", name="#1001", email="customer@example.com",
        currency=shop.currency or "USD", total_price=str(total),
        placed_at=utcnow() - timedelta(days=3), line_items=[asdict(item) for item in items],
    )  # fmt: skip


def _sample_shipment(order: Order) -> Shipment:
    tracking = [{"company": "PostNord", "number": "00370712345678901234", "url": None}]
    return Shipment(
        shop_id=order.shop_id, order_platform_id=order.platform_id, platform_id="preview",
        tracking=tracking, shipped_at=order.placed_at + timedelta(days=1),
    )  # fmt: skip
