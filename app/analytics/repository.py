"""Every query behind the figures: which email an order came from, what each flow sent and
earned, and A/B test assignments and results. Every figure is aggregated by the database.

Money is counted as the win-back queries count it (app/customers/repository.py): decimal strings
as integral ten-thousandths, exact on both SQLite and PostgreSQL. An order's revenue is its total
less the sum of its refunds (never below zero), only when the order is in `currency` (the shop's);
an order in another currency still counts as an order, with no revenue, since there is no rate to
convert it by. A cancelled order counts neither as an order nor as revenue.

Days are UTC days.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from app.analytics.models import AbTest, Assignment, Attribution, DayFigures, FlowFigures, Overview
from app.commerce.models import Checkout, Order, Refund
from app.customers.repository import _epoch_ms, _money_units
from app.db import insert_for
from app.shops.models import Shop
from flows.definitions import ABANDONED_CART, FLOW_NAMES
from flows.models import Click, Enrollment, Send, SendStatus

_MONEY = Decimal(10**4)  # _money_units counts in 10**-4
_DAY_MS = 86_400_000
DEFAULT_CURRENCY = "USD"  # shown for a shop whose currency the platform never told us
MAX_DAYS = 366


def currency_of(shop: Shop) -> str:
    return shop.currency or DEFAULT_CURRENCY


def money(units: Any) -> Decimal:
    """A sum of money units, as read from either dialect, in the currency's own unit."""
    return Decimal(int(units or 0)) / _MONEY


class _utc_day(FunctionElement[str]):  # noqa: N801 - reads as the SQL function it stands for
    """The UTC calendar day of a UTCDateTime column, as 'YYYY-MM-DD' text."""

    type = String()
    inherit_cache = True


@compiles(_utc_day, "sqlite")
def _utc_day_sqlite(element: _utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(_utc_day, "postgresql")
def _utc_day_postgresql(element: _utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # timestamptz to a date follows the session's time zone: ask for UTC's.
    value = compiler.process(element.clauses, **kw)
    return f"to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _counted() -> ColumnElement[bool]:
    return col(Order.cancelled_at).is_(None)


def _revenue_units(currency: str) -> ColumnElement[Any]:
    """The order's revenue in money units as of now: total less refunds, in `currency` only."""
    refunded = (
        select(func.coalesce(func.sum(_money_units(Refund.amount)), 0))
        .where(
            col(Refund.shop_id) == col(Order.shop_id),
            col(Refund.order_platform_id) == col(Order.platform_id),
        )
        .scalar_subquery()
    )
    total = _money_units(Order.total_price)
    return case(
        (
            and_(_counted(), col(Order.currency) == currency, total > refunded),
            total - refunded,
        ),
        else_=literal(0),
    )


def _sent() -> ColumnElement[bool]:
    # Step -1 is the internal alert to customer service, not an email to the customer.
    return and_(col(Send.status) == SendStatus.SENT, col(Send.step) >= 0)


# --- attribution -----------------------------------------------------------------------------


async def cart_send(
    session: AsyncSession,
    shop_id: int,
    *,
    checkout_token: str | None,
    cart_token: str | None,
    since: datetime,
    until: datetime,
) -> tuple[Send, str] | None:
    """The abandoned-cart email an order's own checkout or cart got, sent in [since, until]:
    the one clicked last in that time, else the last one sent; with its flow."""
    matches: list[ColumnElement[bool]] = []
    if checkout_token:
        matches.append(col(Checkout.token) == checkout_token)
    if cart_token:
        matches.append(col(Checkout.cart_token) == cart_token)
    if not matches:
        return None
    last_click = (
        select(func.max(Click.clicked_at))
        .where(
            col(Click.send_id) == col(Send.id),
            col(Click.clicked_at) >= since,
            col(Click.clicked_at) <= until,
        )
        .scalar_subquery()
    )
    query = (
        select(Send, Enrollment.flow)
        .join(Enrollment, col(Enrollment.id) == col(Send.enrollment_id))
        .join(Checkout, col(Checkout.id) == col(Enrollment.checkout_id))
        .where(
            col(Send.shop_id) == shop_id,
            col(Enrollment.flow) == ABANDONED_CART,
            col(Checkout.shop_id) == shop_id,
            or_(*matches),
            _sent(),
            col(Send.sent_at) >= since,
            col(Send.sent_at) <= until,
        )
        .order_by(
            case((last_click.is_(None), 1), else_=0),
            last_click.desc(),
            col(Send.sent_at).desc(),
            col(Send.id).desc(),
        )
        .limit(1)
    )
    row = (await session.exec(query)).first()
    return (row[0], row[1]) if row else None


async def last_clicked_send(
    session: AsyncSession, shop_id: int, email: str, *, since: datetime, until: datetime
) -> tuple[Send, str] | None:
    """The shop's email to `email` whose click in [since, until] came last; with its flow."""
    query = (
        select(Send, Enrollment.flow)
        .join(Enrollment, col(Enrollment.id) == col(Send.enrollment_id))
        .join(Click, col(Click.send_id) == col(Send.id))
        .where(
            col(Send.shop_id) == shop_id,
            col(Send.email) == email,
            _sent(),
            col(Click.shop_id) == shop_id,
            col(Click.clicked_at) >= since,
            col(Click.clicked_at) <= until,
        )
        .order_by(col(Click.clicked_at).desc(), col(Click.id).desc())
        .limit(1)
    )
    row = (await session.exec(query)).first()
    return (row[0], row[1]) if row else None


async def insert_attribution(session: AsyncSession, attribution: Attribution) -> None:
    """Keep the first decision: a repeated order delivery changes nothing."""
    statement = (
        insert_for(session, Attribution)
        .values(**attribution.model_dump(exclude={"id"}))
        .on_conflict_do_nothing(index_elements=["shop_id", "order_id"])
    )
    await session.exec(statement)


async def get_attribution(session: AsyncSession, shop_id: int, order_id: int) -> Attribution | None:
    query = select(Attribution).where(
        Attribution.shop_id == shop_id, Attribution.order_id == order_id
    )
    return (await session.exec(query)).first()


# --- figures per flow ------------------------------------------------------------------------


async def _emails_and_clicks(
    session: AsyncSession, shop_id: int, *, since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """Per flow: emails sent in [since, until], and the clicks on them up to `until`."""
    query = (
        select(
            Enrollment.flow,
            func.count(func.distinct(col(Send.id))),
            func.count(col(Click.id)),
        )
        .select_from(Send)
        .join(Enrollment, col(Enrollment.id) == col(Send.enrollment_id))
        .outerjoin(
            Click,
            and_(
                col(Click.send_id) == col(Send.id),
                col(Click.shop_id) == shop_id,
                col(Click.clicked_at) <= until,
            ),
        )
        .where(
            col(Send.shop_id) == shop_id,
            _sent(),
            col(Send.sent_at) >= since,
            col(Send.sent_at) <= until,
        )
        .group_by(Enrollment.flow)
    )
    return {flow: (int(emails), int(clicks)) for flow, emails, clicks in await session.exec(query)}


async def _earned_by_day(
    session: AsyncSession, shop_id: int, currency: str, *, since: datetime, until: datetime
) -> list[tuple[str, date, int, Decimal, Decimal]]:
    """Per flow and UTC day of the order: attributed orders, their revenue as of now, and the
    part of it from the very carts the reminders were about (recovered)."""
    day = _utc_day(Attribution.attributed_at)
    query: Select[*tuple[Any, ...]] = (
        Select(  # five columns: more than sqlmodel's select() has overloads for
            col(Attribution.flow),
            day,
            func.sum(case((_counted(), 1), else_=0)),
            func.sum(_revenue_units(currency)),
            func.sum(case((col(Attribution.via) == "cart", _revenue_units(currency)), else_=0)),
        )
        .join(Order, col(Order.id) == col(Attribution.order_id))
        .where(
            col(Attribution.shop_id) == shop_id,
            col(Order.shop_id) == shop_id,
            col(Attribution.attributed_at) >= since,
            col(Attribution.attributed_at) <= until,
        )
        .group_by(Attribution.flow, day)
    )
    return [
        (flow, date.fromisoformat(str(on)), int(orders), money(units), money(cart_units))
        for flow, on, orders, units, cart_units in await session.exec(query)
    ]


async def overview(session: AsyncSession, shop: Shop, *, days: int, now: datetime) -> Overview:
    """The shop's last `days` UTC days up to `now` (today is the last of them): per flow, emails
    sent, clicks on them, attributed orders, revenue and conversion (orders / emails), and each
    day's attributed revenue per flow. Every flow and every day is present, zeros included."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}, not {days}")
    assert shop.id is not None
    now = now.astimezone(UTC)
    first = now.date() - timedelta(days=days - 1)
    since = datetime.combine(first, time(), UTC)
    currency = currency_of(shop)

    sent = await _emails_and_clicks(session, shop.id, since=since, until=now)
    earned = await _earned_by_day(session, shop.id, currency, since=since, until=now)

    orders = dict.fromkeys(FLOW_NAMES, 0)
    revenue = dict.fromkeys(FLOW_NAMES, Decimal(0))
    recovered = dict.fromkeys(FLOW_NAMES, Decimal(0))
    by_day = {first + timedelta(days=n): dict(revenue) for n in range(days)}
    for flow, day, count, amount, from_cart in earned:
        if flow in orders:
            orders[flow] += count
            revenue[flow] += amount
            recovered[flow] += from_cart
            by_day[day][flow] += amount

    flows = []
    for flow in FLOW_NAMES:
        emails, clicks = sent.get(flow, (0, 0))
        flows.append(
            FlowFigures(
                flow=flow,
                emails=emails,
                clicks=clicks,
                orders=orders[flow],
                revenue=revenue[flow],
                recovered=recovered[flow],
                conversion=orders[flow] / emails if emails else 0.0,
            )
        )
    series = [DayFigures(day=day, revenue=figures) for day, figures in sorted(by_day.items())]
    return Overview(days=days, currency=currency, flows=flows, series=series)


# --- A/B tests -------------------------------------------------------------------------------


async def running_test(
    session: AsyncSession, shop_id: int, flow: str, step_key: str
) -> AbTest | None:
    query = select(AbTest).where(
        AbTest.shop_id == shop_id,
        AbTest.flow == flow,
        AbTest.step_key == step_key,
        col(AbTest.ended_at).is_(None),
    )
    return (await session.exec(query)).first()


async def insert_assignment(session: AsyncSession, assignment: Assignment) -> None:
    """The first assignment stands: a concurrent or repeated one changes nothing."""
    statement = (
        insert_for(session, Assignment)
        .values(**assignment.model_dump(exclude={"id"}))
        .on_conflict_do_nothing(index_elements=["test_id", "email"])
    )
    await session.exec(statement)


async def get_assignment(session: AsyncSession, test_id: int, email: str) -> Assignment | None:
    query = select(Assignment).where(Assignment.test_id == test_id, Assignment.email == email)
    return (await session.exec(query)).first()


async def link_send(session: AsyncSession, test_id: int, email: str, send_id: int) -> None:
    """Remember the first email the customer got in the test (its clicks are the variant's)."""
    assignment = await get_assignment(session, test_id, email)
    if assignment is not None and assignment.send_id is None:
        assignment.send_id = send_id
        session.add(assignment)


async def variant_figures(
    session: AsyncSession, test: AbTest, *, window_days: int, currency: str
) -> dict[str, tuple[int, int, int, int, Decimal]]:
    """Per variant (holdout included): recipients, clicks on their email, orders, recipients
    who ordered, and revenue. Every arm is measured alike, intention-to-treat: the orders a
    recipient placed within `window_days` after being assigned, whether or not they clicked.
    That is the only measure the holdout, who got no email to click, can have too."""
    assigned_ms = _epoch_ms(Assignment.assigned_at)
    placed_ms = _epoch_ms(Order.placed_at)
    after_assignment = and_(
        col(Order.shop_id) == col(Assignment.shop_id),
        col(Order.email) == col(Assignment.email),
        col(Order.placed_at) >= col(Assignment.assigned_at),
        placed_ms <= assigned_ms + window_days * _DAY_MS,
        _counted(),
    )
    clicks = (
        select(func.count(col(Click.id)))
        .where(col(Click.send_id) == col(Assignment.send_id))
        .scalar_subquery()
    )
    orders = select(func.count(col(Order.id))).where(after_assignment).scalar_subquery()
    revenue = (
        select(func.coalesce(func.sum(_revenue_units(currency)), 0))
        .where(after_assignment)
        .scalar_subquery()
    )
    per_recipient = (
        select(
            col(Assignment.variant).label("variant"),
            clicks.label("clicks"),
            orders.label("orders"),
            revenue.label("revenue"),
        )
        .where(col(Assignment.test_id) == test.id)
        .subquery("per_recipient")
    )
    query: Select[*tuple[Any, ...]] = (
        Select(  # six columns: more than sqlmodel's select() has overloads for
            per_recipient.c.variant,
            func.count(),
            func.sum(per_recipient.c.clicks),
            func.sum(per_recipient.c.orders),
            func.sum(case((per_recipient.c.orders > 0, 1), else_=0)),
            func.sum(per_recipient.c.revenue),
        ).group_by(per_recipient.c.variant)
    )
    rows: Sequence[Any] = (await session.exec(query)).all()
    return {
        str(variant): (int(n), int(clicks or 0), int(orders or 0), int(won or 0), money(units))
        for variant, n, clicks, orders, won, units in rows
    }
