"""Every query on checkouts and orders."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, or_, true
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.events import (
    CheckoutChanged,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
)
from app.commerce.models import Checkout, Order, OrderItem, Refund, Shipment
from app.customers import repository as customers
from app.db import insert_for, utcnow


def normalize_email(email: str | None) -> str | None:
    email = (email or "").strip().lower()
    return email or None


async def upsert_checkout(session: AsyncSession, shop_id: int, event: CheckoutChanged) -> Checkout:
    """Store the checkout as of `event`, unless a newer version of it is stored already."""
    values = {
        "shop_id": shop_id,
        "token": event.token,
        "cart_token": event.cart_token,
        "email": normalize_email(event.email),
        "first_name": event.first_name,
        "last_name": event.last_name,
        "phone": event.phone,
        "locale": event.locale,
        "currency": event.currency,
        "subtotal_price": event.subtotal_price,
        "total_price": event.total_price,
        "line_items": [asdict(item) for item in event.line_items],
        "restore_url": event.restore_url,
        "started_at": event.started_at,
        "platform_updated_at": event.updated_at,
        "completed_at": event.completed_at,
        "updated_at": utcnow(),
    }
    insert = insert_for(session, Checkout).values(**values)
    table = Checkout.__table__.c  # type: ignore[attr-defined]
    updatable = {key: insert.excluded[key] for key in values if key not in ("shop_id", "token")}
    # Out-of-order deliveries: an older snapshot never overwrites a newer one, and once
    # completed a checkout stays completed.
    updatable["completed_at"] = func.coalesce(insert.excluded.completed_at, table.completed_at)
    statement = insert.on_conflict_do_update(
        index_elements=["shop_id", "token"],
        set_=updatable,
        where=table.platform_updated_at <= insert.excluded.platform_updated_at,
    )
    await session.exec(statement)
    checkout = await get_checkout_by_token(session, shop_id, event.token)
    assert checkout is not None
    await session.refresh(checkout)
    if event.completed_at and checkout.completed_at is None:
        # A stale snapshot was skipped above, but completion is news whatever its timestamp.
        checkout.completed_at = event.completed_at
    return checkout


async def has_any(session: AsyncSession, shop_id: int) -> bool:
    """Whether the shop ever sent a checkout or an order (kept after its webhooks are purged)."""
    checkout = select(Checkout.id).where(Checkout.shop_id == shop_id).limit(1)
    if (await session.exec(checkout)).first() is not None:
        return True
    order = select(Order.id).where(Order.shop_id == shop_id).limit(1)
    return (await session.exec(order)).first() is not None


async def get_checkout(session: AsyncSession, shop_id: int, checkout_id: int) -> Checkout | None:
    query = select(Checkout).where(Checkout.shop_id == shop_id, Checkout.id == checkout_id)
    return (await session.exec(query)).first()


async def get_checkout_by_token(session: AsyncSession, shop_id: int, token: str) -> Checkout | None:
    query = select(Checkout).where(Checkout.shop_id == shop_id, Checkout.token == token)
    return (await session.exec(query)).first()


async def insert_order(session: AsyncSession, shop_id: int, event: OrderPlaced) -> Order:
    """Store the order once; orders/create and orders/paid for the same order are one row (a
    later delivery changes nothing, its email included). A new order updates its customer's
    figures."""
    values = {
        "shop_id": shop_id,
        "platform_id": event.platform_id,
        "name": event.name,
        "checkout_token": event.checkout_token,
        "cart_token": event.cart_token,
        "email": normalize_email(event.email),
        "currency": event.currency,
        "total_price": event.total_price,
        "placed_at": event.placed_at,
        "line_items": [asdict(item) for item in event.line_items],
        "shipping_country": event.shipping_country,
        "locale": event.locale,
        "discount_codes": [code.lower() for code in event.discount_codes],
        "first_name": (event.first_name or "").strip()[:255] or None,
    }
    statement = (
        insert_for(session, Order)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["shop_id", "platform_id"])
        .returning(Order.id)  # RETURNING, not rowcount: psycopg reports -1 for this INSERT
    )
    inserted = (await session.exec(statement)).scalar_one_or_none()
    query = select(Order).where(Order.shop_id == shop_id, Order.platform_id == event.platform_id)
    order = (await session.exec(query)).one()
    if inserted is not None:  # a new order: its products join the "bought together" data
        assert order.id is not None
        for item in event.line_items:
            if item.product_id:
                session.add(
                    OrderItem(
                        shop_id=shop_id,
                        order_id=order.id,
                        email=order.email,
                        product_id=item.product_id,
                        variant_id=item.variant_id,
                        title=item.title[:512],
                    )
                )
        await customers.refresh_figures(session, shop_id, [order.email])
    return order


async def checkout_settled(
    session: AsyncSession, checkout: Checkout, *, by_customer: bool = True
) -> bool:
    """Whether an order settles this checkout: same checkout or cart, or (`by_customer`) any
    order of the same customer since they started it. Asks for one id, not the order rows."""
    matches = [col(Order.checkout_token) == checkout.token]
    if checkout.cart_token:
        matches.append(col(Order.cart_token) == checkout.cart_token)
    if checkout.email and by_customer:
        matches.append(
            (col(Order.email) == checkout.email) & (col(Order.placed_at) >= checkout.started_at)
        )
    query = select(Order.id).where(Order.shop_id == checkout.shop_id, or_(*matches)).limit(1)
    return (await session.exec(query)).first() is not None


async def checkout_ids_for_order(session: AsyncSession, order: Order) -> list[int]:
    """The checkouts an order came from, by checkout token or cart token."""
    matches: list[ColumnElement[bool]] = []
    if order.checkout_token:
        matches.append(col(Checkout.token) == order.checkout_token)
    if order.cart_token:
        matches.append(col(Checkout.cart_token) == order.cart_token)
    if not matches:
        return []
    query = select(Checkout.id).where(Checkout.shop_id == order.shop_id, or_(*matches))
    return [checkout_id for checkout_id in (await session.exec(query)).all() if checkout_id]


async def get_order(session: AsyncSession, shop_id: int, platform_id: str) -> Order | None:
    query = select(Order).where(Order.shop_id == shop_id, Order.platform_id == platform_id)
    return (await session.exec(query)).first()


async def record_cancellation(session: AsyncSession, shop_id: int, event: OrderCancelled) -> None:
    order = await get_order(session, shop_id, event.order_id)
    if order is not None and order.cancelled_at is None:
        order.cancelled_at = event.cancelled_at
        await customers.refresh_figures(session, shop_id, [order.email])


async def record_refund(session: AsyncSession, shop_id: int, event: OrderRefunded) -> None:
    """Store the refund once. One that arrives before its order is counted when the order is
    stored (its figures are recomputed from its refunds then)."""
    values = {
        "shop_id": shop_id,
        "order_platform_id": event.order_id,
        "platform_id": event.refund_id,
        "amount": event.amount,
        "refunded_at": event.refunded_at,
    }
    statement = (
        insert_for(session, Refund)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["shop_id", "order_platform_id", "platform_id"])
        .returning(Refund.id)
    )
    if (await session.exec(statement)).scalar_one_or_none() is None:
        return  # stored before
    refunded = await get_order(session, shop_id, event.order_id)
    if refunded is not None:
        await customers.refresh_figures(session, shop_id, [refunded.email])


async def refunded_total(session: AsyncSession, order: Order) -> Decimal:
    query = select(Refund.amount).where(
        Refund.shop_id == order.shop_id, Refund.order_platform_id == order.platform_id
    )
    return sum((Decimal(amount) for amount in (await session.exec(query)).all()), Decimal(0))


async def is_fully_refunded(session: AsyncSession, order: Order) -> bool:
    return await refunded_total(session, order) >= Decimal(order.total_price)


async def upsert_shipment(session: AsyncSession, shop_id: int, event: OrderShipped) -> Shipment:
    """One row per fulfilment; later deliveries add tracking or the delivery date, never remove.
    A delivery the platform made before the stored one (webhooks come out of order) is ignored:
    a corrected tracking number stays corrected."""
    values = {
        "shop_id": shop_id,
        "order_platform_id": event.order_id,
        "platform_id": event.shipment_id,
        "tracking": [asdict(t) for t in event.tracking],
        "shipped_at": event.shipped_at,
        "delivered_at": event.delivered_at,
        "updated_at": utcnow(),
        "platform_updated_at": event.changed_at,
    }
    insert = insert_for(session, Shipment).values(**values)
    table = Shipment.__table__.c  # type: ignore[attr-defined]
    updatable = {
        "delivered_at": func.coalesce(table.delivered_at, insert.excluded.delivered_at),
        "updated_at": insert.excluded.updated_at,
        "platform_updated_at": func.coalesce(
            insert.excluded.platform_updated_at, table.platform_updated_at
        ),
    }
    if event.tracking:
        updatable["tracking"] = insert.excluded.tracking
    not_older = or_(
        table.platform_updated_at.is_(None),
        insert.excluded.platform_updated_at.is_(None),
        insert.excluded.platform_updated_at >= table.platform_updated_at,
    )
    statement = insert.on_conflict_do_update(
        index_elements=["shop_id", "order_platform_id", "platform_id"],
        set_=updatable,
        where=not_older,
    )
    await session.exec(statement)
    query = select(Shipment).where(
        Shipment.shop_id == shop_id,
        Shipment.order_platform_id == event.order_id,
        Shipment.platform_id == event.shipment_id,
    )
    shipment = (await session.exec(query)).one()
    await session.refresh(shipment)
    return shipment


async def shipments_for_order(session: AsyncSession, order: Order) -> list[Shipment]:
    query = (
        select(Shipment)
        .where(Shipment.shop_id == order.shop_id, Shipment.order_platform_id == order.platform_id)
        .order_by(col(Shipment.shipped_at))
    )
    return list((await session.exec(query)).all())


async def get_order_by_id(session: AsyncSession, shop_id: int, order_id: int) -> Order | None:
    query = select(Order).where(Order.shop_id == shop_id, Order.id == order_id)
    return (await session.exec(query)).first()


async def orders_for_email(session: AsyncSession, shop_id: int, email: str) -> Sequence[Order]:
    query = (
        select(Order)
        .where(Order.shop_id == shop_id, Order.email == email)
        .order_by(col(Order.placed_at))
    )
    return (await session.exec(query)).all()


async def customer_greeting(
    session: AsyncSession, shop_id: int, email: str
) -> tuple[str | None, str | None]:
    """The language of the customer's latest order and their first name from their latest order
    that gives one, else their latest checkout: what a win-back email greets them with."""
    locale = await _latest(session, Order.locale, Order.placed_at, shop_id, email, Order)
    first_name = await _latest(
        session, Order.first_name, Order.placed_at, shop_id, email, Order
    ) or await _latest(session, Checkout.first_name, Checkout.updated_at, shop_id, email, Checkout)
    return locale, first_name


async def customer_greetings(
    session: AsyncSession, shop_id: int, emails: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """`customer_greeting` for a batch of customers in two queries: email → (locale, first
    name); an email with neither has no entry."""
    locales: dict[str, tuple[datetime, str]] = {}
    names: dict[str, tuple[datetime, str]] = {}
    orders = select(Order.email, Order.placed_at, Order.locale, Order.first_name).where(
        Order.shop_id == shop_id,
        col(Order.email).in_(emails),
        or_(col(Order.locale).is_not(None), col(Order.first_name).is_not(None)),
    )
    for email, placed_at, locale, first_name in (await session.exec(orders)).all():
        _keep_latest(locales, email, placed_at, locale)
        _keep_latest(names, email, placed_at, first_name)
    # As in customer_greeting: the latest order's name when it is not empty, else a checkout's.
    unnamed = [email for email in emails if not names.get(email, (None, ""))[1]]
    checkout_names: dict[str, tuple[datetime, str]] = {}
    if unnamed:
        checkouts = select(Checkout.email, Checkout.updated_at, Checkout.first_name).where(
            Checkout.shop_id == shop_id,
            col(Checkout.email).in_(unnamed),
            col(Checkout.first_name).is_not(None),
        )
        for email, updated_at, first_name in (await session.exec(checkouts)).all():
            _keep_latest(checkout_names, email, updated_at, first_name)
    greetings = {}
    for email in emails:
        locale = locales.get(email, (None, None))[1]
        name = names.get(email, (None, None))[1] or checkout_names.get(email, (None, None))[1]
        if locale is not None or name is not None:
            greetings[email] = (locale, name)
    return greetings


def _keep_latest(
    latest: dict[str, tuple[datetime, str]], email: str | None, moment: datetime, value: str | None
) -> None:
    """Keep `value` for `email` when it is not NULL and newer than the one kept."""
    if email is None or value is None:
        return
    if email not in latest or moment > latest[email][0]:
        latest[email] = (moment, value)


async def _latest(
    session: AsyncSession,
    column: Any,
    moment: Any,
    shop_id: int,
    email: str,
    model: type[Order] | type[Checkout],
) -> str | None:
    """The newest non-empty `column` of the customer's rows of `model`."""
    query = (
        select(column)
        .where(model.shop_id == shop_id, model.email == email, col(column).is_not(None))
        .order_by(col(moment).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


async def last_shipping_country(session: AsyncSession, shop_id: int, email: str) -> str | None:
    """Where the customer's latest order went: the best clue Rebound has to their time zone."""
    query = (
        select(Order.shipping_country)
        .where(
            Order.shop_id == shop_id,
            Order.email == email,
            col(Order.shipping_country).is_not(None),
        )
        .order_by(col(Order.placed_at).desc())
        .limit(1)
    )
    return (await session.exec(query)).first()


async def has_order_since(session: AsyncSession, shop_id: int, email: str, since: datetime) -> bool:
    query = (
        select(Order.id)
        .where(Order.shop_id == shop_id, Order.email == email, col(Order.placed_at) > since)
        .limit(1)
    )
    return (await session.exec(query)).first() is not None


@dataclass(frozen=True)
class Recommendation:
    product_id: str
    variant_id: str | None
    title: str
    together: int  # orders that had it with one of the products asked about


async def bought_together(
    session: AsyncSession, shop_id: int, product_ids: Sequence[str], email: str | None, limit: int
) -> list[Recommendation]:
    """Products most often in the same order as any of `product_ids` in this shop, leaving out
    what this customer ever bought. Counted in SQL over `order_items`."""
    if not product_ids:
        return []
    mine = aliased(OrderItem)
    other = aliased(OrderItem)
    owned = select(OrderItem.product_id).where(
        OrderItem.shop_id == shop_id, OrderItem.email == email
    )
    together = func.count(func.distinct(other.order_id))
    query = (
        select(other.product_id, func.max(other.variant_id), func.max(other.title), together)
        .join(mine, (col(mine.order_id) == other.order_id) & (col(mine.shop_id) == other.shop_id))
        .where(
            other.shop_id == shop_id,
            col(mine.product_id).in_(product_ids),
            col(other.product_id).not_in(product_ids),
            col(other.product_id).not_in(owned) if email else true(),
        )
        .group_by(other.product_id)
        .order_by(together.desc(), other.product_id)
        .limit(limit)
    )
    rows = (await session.exec(query)).all()
    return [Recommendation(str(p), v, str(t), int(n)) for p, v, t, n in rows]
