"""Every query on checkouts and orders."""

from dataclasses import asdict

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.events import CheckoutChanged, OrderPlaced
from app.commerce.models import Checkout, Order
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


async def get_checkout(session: AsyncSession, shop_id: int, checkout_id: int) -> Checkout | None:
    query = select(Checkout).where(Checkout.shop_id == shop_id, Checkout.id == checkout_id)
    return (await session.exec(query)).first()


async def get_checkout_by_token(session: AsyncSession, shop_id: int, token: str) -> Checkout | None:
    query = select(Checkout).where(Checkout.shop_id == shop_id, Checkout.token == token)
    return (await session.exec(query)).first()


async def insert_order(session: AsyncSession, shop_id: int, event: OrderPlaced) -> Order:
    """Store the order once; orders/create and orders/paid for the same order are one row."""
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
    }
    statement = (
        insert_for(session, Order)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["shop_id", "platform_id"])
    )
    await session.exec(statement)
    query = select(Order).where(Order.shop_id == shop_id, Order.platform_id == event.platform_id)
    return (await session.exec(query)).one()


async def order_for_checkout(session: AsyncSession, checkout: Checkout) -> Order | None:
    """An order that settles this checkout: same checkout or cart, or the same customer since."""
    matches = [col(Order.checkout_token) == checkout.token]
    if checkout.cart_token:
        matches.append(col(Order.cart_token) == checkout.cart_token)
    if checkout.email:
        matches.append(
            (col(Order.email) == checkout.email) & (col(Order.placed_at) >= checkout.started_at)
        )
    query = (
        select(Order)
        .where(Order.shop_id == checkout.shop_id, or_(*matches))
        .order_by(col(Order.placed_at))
    )
    return (await session.exec(query)).first()


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
