"""Every query that finds or erases one customer's data, or a whole shop's."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.analytics.models import Assignment
from app.commerce.events import Customer
from app.commerce.models import Checkout, Order, OrderItem, Refund, Shipment
from app.commerce.repository import normalize_email
from app.customers import repository as customers
from app.customers.models import CustomerFigures
from app.inbox.models import InboxEntry
from app.mail.models import Suppression, Unsubscribe
from app.models import (
    Click,
    CustomerPreference,
    Enrollment,
    Flow,
    NpsAnswer,
    Open,
    Send,
    Shop,
)
from app.privacy.models import DataRequest

REDACTED_PAYLOAD = '{"redacted": true}'


def _order_match(shop_id: int, customer: Customer) -> ColumnElement[bool]:
    email = normalize_email(customer.email)
    matches: list[ColumnElement[bool]] = [col(Order.platform_id).in_(customer.order_ids)]
    if email:
        matches.append(col(Order.email) == email)
    return (col(Order.shop_id) == shop_id) & or_(*matches)


async def checkouts(session: AsyncSession, shop_id: int, customer: Customer) -> Sequence[Checkout]:
    """The customer's checkouts by address, or by phone number as typed: a checkout may hold
    a phone and no address."""
    email = normalize_email(customer.email)
    phone = (customer.phone or "").strip()
    matches: list[ColumnElement[bool]] = []
    if email:
        matches.append(col(Checkout.email) == email)
    if phone:
        matches.append(col(Checkout.phone) == phone)
    if not matches:
        return []
    query = select(Checkout).where(Checkout.shop_id == shop_id, or_(*matches))
    return (await session.exec(query)).all()


async def orders(session: AsyncSession, shop_id: int, customer: Customer) -> Sequence[Order]:
    return (await session.exec(select(Order).where(_order_match(shop_id, customer)))).all()


async def enrollments(
    session: AsyncSession,
    shop_id: int,
    checkout_ids: Sequence[int],
    order_ids: Sequence[int] = (),
    email: str | None = None,
) -> Sequence[Enrollment]:
    """The customer's enrollments: by their carts, their orders, or their address (win-back)."""
    matches: list[ColumnElement[bool]] = [
        col(Enrollment.checkout_id).in_(checkout_ids),
        col(Enrollment.order_id).in_(order_ids),
    ]
    if email:
        matches.append(col(Enrollment.email) == email)
    query = select(Enrollment).where(Enrollment.shop_id == shop_id, or_(*matches))
    return (await session.exec(query)).all()


async def sends(
    session: AsyncSession, shop_id: int, enrollment_ids: Sequence[int]
) -> Sequence[Send]:
    query = select(Send).where(Send.shop_id == shop_id, col(Send.enrollment_id).in_(enrollment_ids))
    return (await session.exec(query)).all()


async def click_count(session: AsyncSession, shop_id: int, send_ids: Sequence[int]) -> int:
    query = select(Click.id).where(Click.shop_id == shop_id, col(Click.send_id).in_(send_ids))
    return len((await session.exec(query)).all())


async def unsubscribe(session: AsyncSession, shop_id: int, email: str | None) -> Unsubscribe | None:
    query = select(Unsubscribe).where(
        Unsubscribe.shop_id == shop_id, Unsubscribe.email == normalize_email(email)
    )
    return (await session.exec(query)).first()


async def suppression(session: AsyncSession, shop_id: int, email: str | None) -> Suppression | None:
    query = select(Suppression).where(
        Suppression.shop_id == shop_id, Suppression.email == normalize_email(email)
    )
    return (await session.exec(query)).first()


def _mentions(shop_id: int, customer: Customer) -> ColumnElement[bool] | None:
    needles = [value for value in (customer.email, customer.phone, customer.platform_id) if value]
    needles += list(customer.order_ids)
    if not needles:
        return None
    return (col(InboxEntry.shop_id) == shop_id) & or_(
        *[col(InboxEntry.payload).ilike(f"%{_literal(needle)}%", escape="\\") for needle in needles]
    )


def _literal(text: str) -> str:
    # An address like jane_doe@… must not match janeXdoe@…: LIKE's wildcards are escaped.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def inbox_mentions(session: AsyncSession, shop_id: int, customer: Customer) -> int:
    condition = _mentions(shop_id, customer)
    if condition is None:
        return 0
    return len((await session.exec(select(InboxEntry.id).where(condition))).all())


async def redact_customer(session: AsyncSession, shop_id: int, customer: Customer) -> None:
    """Erase personal fields; rows, counts and money stay for the merchant's figures."""
    found = await checkouts(session, shop_id, customer)
    checkout_ids = [c.id for c in found if c.id is not None]
    found_orders = await orders(session, shop_id, customer)
    order_ids = [o.id for o in found_orders if o.id is not None]
    email = normalize_email(customer.email)
    # Read before the orders lose them: an order found by its id alone may carry another address.
    ordered_as = [email, *(o.email for o in found_orders)]
    enrolled = await enrollments(session, shop_id, checkout_ids, order_ids, email)
    enrollment_ids = [e.id for e in enrolled if e.id is not None]
    await session.exec(
        update(Checkout)
        .where(col(Checkout.id).in_(checkout_ids))
        .values(
            email=None,
            first_name=None,
            last_name=None,
            phone=None,
            restore_url=None,
            cart_token=None,
        )
    )
    await session.exec(
        update(Order)
        .where(_order_match(shop_id, customer))
        .values(email=None, cart_token=None, first_name=None)
    )
    await session.exec(
        update(OrderItem).where(col(OrderItem.order_id).in_(order_ids)).values(email=None)
    )
    # Their figures go with the address; another address's are recomputed without the order.
    await customers.refresh_figures(session, shop_id, ordered_as)
    await session.exec(
        update(Enrollment)
        .where(col(Enrollment.id).in_(enrollment_ids))
        .values(email="", context={})
    )
    await session.exec(
        update(Send).where(col(Send.enrollment_id).in_(enrollment_ids)).values(email="")
    )
    if email:
        # A/B assignments keep counting for the test, under a name that is no one's address.
        assigned = select(Assignment).where(
            col(Assignment.shop_id) == shop_id, col(Assignment.email) == email
        )
        for assignment in (await session.exec(assigned)).all():
            assignment.email = f"redacted:{assignment.id}"
        await session.exec(
            delete(CustomerPreference).where(
                col(CustomerPreference.shop_id) == shop_id, col(CustomerPreference.email) == email
            )
        )
        await session.exec(
            delete(Unsubscribe).where(
                col(Unsubscribe.shop_id) == shop_id, col(Unsubscribe.email) == email
            )
        )
        await session.exec(
            delete(Suppression).where(
                col(Suppression.shop_id) == shop_id, col(Suppression.email) == email
            )
        )
        await session.exec(
            delete(DataRequest).where(
                col(DataRequest.shop_id) == shop_id, col(DataRequest.customer_email) == email
            )
        )
    condition = _mentions(shop_id, customer)
    if condition is not None:
        await session.exec(update(InboxEntry).where(condition).values(payload=REDACTED_PAYLOAD))


async def delete_shop(session: AsyncSession, shop_id: int) -> None:
    """Every row of the shop, children first."""
    children: tuple[Any, ...] = (
        NpsAnswer, Click, Open, Send, Enrollment, Checkout, OrderItem, Order, Shipment, Refund,
        CustomerFigures, Unsubscribe, Suppression, DataRequest, InboxEntry, CustomerPreference,
        Flow,
    )  # fmt: skip
    for model in children:
        await session.exec(delete(model).where(model.shop_id == shop_id))
    await session.exec(delete(Shop).where(col(Shop.id) == shop_id))


async def data_requests(session: AsyncSession, shop_id: int) -> Sequence[DataRequest]:
    """The shop's data requests, newest first."""
    query = (
        select(DataRequest)
        .where(DataRequest.shop_id == shop_id)
        .order_by(col(DataRequest.created_at).desc(), col(DataRequest.id).desc())
    )
    return (await session.exec(query)).all()


async def data_request(session: AsyncSession, shop_id: int, request_id: int) -> DataRequest | None:
    """One of the shop's data requests; another shop's is None, like a missing one."""
    query = select(DataRequest).where(DataRequest.shop_id == shop_id, DataRequest.id == request_id)
    return (await session.exec(query)).first()
