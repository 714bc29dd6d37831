"""Every query behind win-back: each customer's figures, who has lapsed from their own buying
rhythm, and RFM scores.

Figures, not orders: `customer_figures` holds one row per customer of a shop (orders that count,
first and last order, median gap, money spent), recomputed from that customer's orders by
`refresh_figures` whenever one of their orders, cancellations or refunds is stored, in the same
transaction. The daily lapse scan and RFM scoring then read a million small rows, not five
million orders; one customer's summary reads their row and counts where it ranks in one pass.

What counts as bought: an order of the shop with an email, not cancelled, and not refunded in
full: an order with refunds summing to at least its total is left out; one with no refunds
counts, even at a total of 0. Figures cover every stored order: `now` only says when the lapse is
measured, and a customer whose last order is after `now` (clocks apart; in tests) has not lapsed.

Money: totals are summed as stored, whatever their currency: a shop whose orders come in several
currencies gets a mixed sum, good for ranking its customers but not for display. Amounts are
decimal strings. PostgreSQL sums them as NUMERIC. SQLite has no exact decimal type (its NUMERIC is a
float), so both dialects count in integer ten-thousandths (`_money_units`), which is exact for
currencies with up to four decimals and keeps "refunds >= total" free of float rounding.

Time: both dialects turn timestamps into milliseconds since 1970 (`_epoch_ms`): julianday() on
SQLite (millisecond precision), EXTRACT(EPOCH …) on PostgreSQL (microseconds kept as a fraction).
Gaps between orders are milliseconds too: the difference of two such values on SQLite, the
interval's date_part() (a double) on PostgreSQL (`_gap_ms`).

Scores: quintiles as NTILE(5) over the shop's customers by (value, email) would number them,
but a window over a million rows in three orders is three sorts. The same buckets come from
their four break-points: NTILE's bucket sizes follow from the number of customers alone
(`_ntile_ends`), so the customers at those positions are read in index order
(`_break_points`), and a customer's score is how many break-points they lie beyond. The break-
points and the stream are separate statements: a customer whose order is stored between them is
scored against break-points one order old.
"""

from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Float,
    Select,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.models import Order, Refund
from app.customers.models import CustomerFigures, LapsedCustomer
from app.db import insert_for

# Rows fetched per round trip while streaming; memory holds one batch, whatever the shop's size.
STREAM_BATCH = 1000

_MONEY_SCALE = 4  # money is counted in units of 10**-4
_QUINTILES = 5


class _epoch_ms(FunctionElement[float]):  # noqa: N801 - reads as the SQL function it stands for
    """Milliseconds since 1970-01-01 UTC of a UTCDateTime column or value."""

    type = Float()
    inherit_cache = True


@compiles(_epoch_ms, "sqlite")
def _epoch_ms_sqlite(element: _epoch_ms, compiler: SQLCompiler, **kw: Any) -> str:
    # julianday() counts whole milliseconds; rounding makes the value an exact integer.
    value = compiler.process(element.clauses, **kw)
    return f"CAST(ROUND((julianday({value}) - 2440587.5) * 86400000) AS INTEGER)"


@compiles(_epoch_ms, "postgresql")
def _epoch_ms_postgresql(element: _epoch_ms, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) * 1000)"


class _money_units(FunctionElement[int]):  # noqa: N801
    """A decimal string as an integral number of 10**-4 units, exact on both dialects."""

    type = BigInteger()
    inherit_cache = True


@compiles(_money_units, "sqlite")
def _money_units_sqlite(element: _money_units, compiler: SQLCompiler, **kw: Any) -> str:
    # A REAL holds any price to far better than 10**-4; rounding to the unit makes it exact.
    value = compiler.process(element.clauses, **kw)
    return f"CAST(ROUND(CAST({value} AS REAL) * {10**_MONEY_SCALE}) AS INTEGER)"


@compiles(_money_units, "postgresql")
def _money_units_postgresql(element: _money_units, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"ROUND(CAST({value} AS NUMERIC) * {10**_MONEY_SCALE})"


def _not_refunded_in_full(amount: ColumnElement[int]) -> ColumnElement[bool]:
    """True for an order whose refunds sum to less than its total, or that has none (the sum
    is NULL, and so is the comparison). Looked up per order through the refunds' unique index:
    a customer has a few orders, where the shop's set of refunded orders may hold 50k."""
    refunded = (
        select(func.sum(_money_units(Refund.amount)))
        .where(
            col(Refund.shop_id) == col(Order.shop_id),
            col(Refund.order_platform_id) == col(Order.platform_id),
        )
        .scalar_subquery()
    )
    return func.coalesce(refunded < amount, true())


def _bought(shop_id: int, emails: Sequence[str], *, postgresql: bool) -> CTE:
    """These customers' orders that count, in (email, placed_at) order, as the index holds
    them, with each one's gap to the previous one."""
    amount = _money_units(Order.total_price)
    previous = func.lag(col(Order.placed_at)).over(
        partition_by=col(Order.email), order_by=col(Order.placed_at)
    )
    return (
        select(
            col(Order.email).label("email"),
            col(Order.placed_at).label("placed_at"),
            amount.label("amount"),
            # NULL for a customer's first order
            _gap_ms(col(Order.placed_at), previous, postgresql=postgresql).label("gap"),
        )
        .where(
            col(Order.shop_id) == shop_id,
            col(Order.email).in_(emails),
            col(Order.cancelled_at).is_(None),
            _not_refunded_in_full(amount),
        )
        .cte("bought")
    )


def _gap_ms(
    placed_at: Any, previous: ColumnElement[datetime], *, postgresql: bool
) -> ColumnElement[float]:
    """Milliseconds between two orders. On PostgreSQL through the interval and date_part(),
    both in machine arithmetic (EXTRACT is NUMERIC there). Whole microseconds are far within a
    double's precision, so the median of the gaps comes out the same."""
    if postgresql:
        seconds = func.date_part(literal_column("'epoch'"), placed_at - previous, type_=Float())
        return seconds * literal_column("1000")
    return _epoch_ms(placed_at) - _epoch_ms(previous)


def _figures_postgresql(shop_id: int, bought: CTE) -> Select[Any]:
    """One row of figures per customer. percentile_cont ignores the first order's NULL gap, so a
    one-time buyer's median is NULL, as on SQLite."""
    median = func.percentile_cont(literal_column("0.5")).within_group(cast(bought.c.gap, Float()))
    return select(
        literal_column(str(int(shop_id))).label("shop_id"),
        bought.c.email,
        func.count().label("orders"),
        func.min(bought.c.placed_at).label("first_order_at"),
        func.max(bought.c.placed_at).label("last_order_at"),
        _epoch_ms(func.max(bought.c.placed_at)).label("last_order_ms"),
        median.label("median_gap_ms"),
        cast(func.sum(bought.c.amount), BigInteger()).label("monetary"),
    ).group_by(bought.c.email)


def _figures_sqlite(shop_id: int, bought: CTE) -> Select[Any]:
    """One row of figures per customer; SQLite has no percentile_cont. The median gap: a
    customer's n gaps numbered by size (the first order's NULL apart); the middle one, or the
    two middle ones to average, are those with n <= 2 * rn <= n + 2."""
    ranked = select(
        bought,
        func.row_number()
        .over(partition_by=(bought.c.email, bought.c.gap.is_(None)), order_by=bought.c.gap)
        .label("rn"),
        func.count(bought.c.gap).over(partition_by=bought.c.email).label("n"),
    ).cte("ranked")
    middle = and_(ranked.c.gap.is_not(None), (ranked.c.rn * 2).between(ranked.c.n, ranked.c.n + 2))
    return select(
        literal_column(str(int(shop_id))).label("shop_id"),
        ranked.c.email,
        func.count().label("orders"),
        func.min(ranked.c.placed_at).label("first_order_at"),
        func.max(ranked.c.placed_at).label("last_order_at"),
        _epoch_ms(func.max(ranked.c.placed_at)).label("last_order_ms"),
        func.avg(case((middle, ranked.c.gap))).label("median_gap_ms"),
        func.sum(ranked.c.amount).label("monetary"),
    ).group_by(ranked.c.email)


_FIGURES = (
    "shop_id",
    "email",
    "orders",
    "first_order_at",
    "last_order_at",
    "last_order_ms",
    "median_gap_ms",
    "monetary",
)


async def refresh_figures(
    session: AsyncSession, shop_id: int, emails: Iterable[str | None]
) -> None:
    """Recompute these customers' figures from their orders as stored (flushed) in this
    transaction: call it wherever an order, a cancellation or a refund is written, and with
    both addresses when an order moves from one to another. A customer left with no order that
    counts loses their row. Reads only their orders, through the (shop_id, email, placed_at)
    index.
    """
    wanted = sorted({email for email in emails if email})
    if not wanted:
        return
    await session.flush()
    postgresql = _postgresql(session)
    if postgresql:
        await _lock_customers(session, shop_id, wanted)
    bought = _bought(shop_id, wanted, postgresql=postgresql)
    figures = (_figures_postgresql if postgresql else _figures_sqlite)(shop_id, bought)
    insert = insert_for(session, CustomerFigures).from_select(_FIGURES, figures)
    upsert = insert.on_conflict_do_update(
        index_elements=["shop_id", "email"],
        set_={name: insert.excluded[name] for name in _FIGURES[2:]},
    ).returning(col(CustomerFigures.email))
    kept = set((await session.exec(upsert)).scalars().all())
    gone = [email for email in wanted if email not in kept]
    if gone:
        await session.exec(
            delete(CustomerFigures).where(
                col(CustomerFigures.shop_id) == shop_id, col(CustomerFigures.email).in_(gone)
            )
        )


async def _lock_customers(session: AsyncSession, shop_id: int, emails: Sequence[str]) -> None:
    """Two transactions storing orders of the same customer at once would each recompute from a
    snapshot without the other's order, and the later write would lose it. A transaction lock
    per customer makes the second wait, then read the first's order. Taken in email order, so
    two transactions locking the same pair cannot deadlock."""
    for email in emails:
        await session.exec(  # type: ignore[call-overload]
            text("SELECT pg_advisory_xact_lock(:shop_id, hashtext(:email))"),
            params={"shop_id": shop_id, "email": email},
        )


# --- scores ------------------------------------------------------------------------------------


def _ntile_ends(customers: int) -> list[int]:
    """The 1-based positions of the last customer in quintiles 1 to 4, as NTILE(5) splits
    `customers`: the first `customers % 5` buckets hold one more. Below 5 customers each is a
    bucket of its own."""
    size, bigger = divmod(customers, _QUINTILES)
    return [k * size + min(k, bigger) for k in range(1, _QUINTILES)]


def _ntile(position: int, customers: int) -> int:
    """The NTILE(5) bucket of the customer at this 1-based position."""
    return 1 + sum(1 for end in _ntile_ends(customers) if position > end)


def _top_count(customers: int, top_share: float) -> int:
    """How many customers can be top: the largest t with t / customers <= top_share, divided as
    doubles, as a SQL share of them would be."""
    top = min(customers, max(0, int(top_share * customers)))
    while top < customers and (top + 1) / customers <= top_share:
        top += 1
    while top > 0 and top / customers > top_share:
        top -= 1
    return top


_Point = tuple[Any, str]  # (value, email) of the customer at a break-point


@dataclass(frozen=True)
class _Breaks:
    """Where the shop's customers split into quintiles in each dimension, and the least spend
    that is not top (None: no one is top; a customer spending more than it is)."""

    recency: list[_Point]
    frequency: list[_Point]
    monetary: list[_Point]
    top_above: int | None
    everyone_top: bool


def _dimensions() -> tuple[Any, Any, Any]:
    return (
        col(CustomerFigures.last_order_at),
        col(CustomerFigures.orders),
        col(CustomerFigures.monetary),
    )


async def _customer_count(session: AsyncSession, shop_id: int) -> int:
    query = select(func.count()).where(col(CustomerFigures.shop_id) == shop_id)
    return int((await session.exec(query)).scalar_one())  # type: ignore[call-overload]


async def _at_positions(
    session: AsyncSession, shop_id: int, value: Any, positions: Sequence[int]
) -> dict[int, _Point]:
    """The (value, email) of the customers at these 1-based positions by (value, email): read
    in the order of the dimension's index, no sort."""
    ranked = (
        select(
            value.label("value"),
            col(CustomerFigures.email).label("email"),
            func.row_number().over(order_by=(value, col(CustomerFigures.email))).label("rn"),
        )
        .where(col(CustomerFigures.shop_id) == shop_id)
        .subquery()
    )
    query = select(ranked.c.rn, ranked.c.value, ranked.c.email).where(
        ranked.c.rn.in_(sorted(set(positions)))
    )
    rows = (await session.exec(query)).all()  # type: ignore[call-overload]
    return {int(rn): (found, email) for rn, found, email in rows}


async def _break_points(session: AsyncSession, shop_id: int, top_share: float) -> _Breaks | None:
    """The shop's break-points as its figures stand; None for a shop with no customers."""
    customers = await _customer_count(session, shop_id)
    if not customers:
        return None
    ends = _ntile_ends(customers)
    top = _top_count(customers, top_share)
    # Top: at most `top` customers spent at least as much. So the customer at position
    # customers - top, by spend from the least, is the biggest spender who is not top.
    not_top = customers - top
    recency, frequency, monetary = _dimensions()
    recency_at = await _at_positions(session, shop_id, recency, ends)
    frequency_at = await _at_positions(session, shop_id, frequency, ends)
    monetary_at = await _at_positions(
        session, shop_id, monetary, [*ends, not_top] if 0 < top < customers else ends
    )
    return _Breaks(
        recency=[recency_at[end] for end in ends],
        frequency=[frequency_at[end] for end in ends],
        monetary=[monetary_at[end] for end in ends],
        top_above=monetary_at[not_top][0] if 0 < top < customers else None,
        everyone_top=top == customers,
    )


def _quintile(value: Any, points: list[_Point]) -> ColumnElement[int]:
    """1 for a customer at or before the first break-point, … 5 beyond the last."""
    me = tuple_(value, col(CustomerFigures.email))
    return case(*[(me <= point, k) for k, point in enumerate(points, start=1)], else_=_QUINTILES)


def _top(breaks: _Breaks) -> ColumnElement[bool]:
    if breaks.everyone_top:
        return true()
    if breaks.top_above is None:
        return false()
    return col(CustomerFigures.monetary) > breaks.top_above


def _scored(shop_id: int, breaks: _Breaks) -> Select[*tuple[Any, ...]]:
    """Every customer of the shop with their scores, by email: the primary key's order."""
    recency, frequency, monetary = _dimensions()
    return (
        select(
            col(CustomerFigures.email),
            col(CustomerFigures.orders),
            col(CustomerFigures.last_order_at),
            col(CustomerFigures.median_gap_ms),
            col(CustomerFigures.monetary),
            _quintile(recency, breaks.recency),
            _quintile(frequency, breaks.frequency),
            _quintile(monetary, breaks.monetary),
            _top(breaks),
        )
        .where(col(CustomerFigures.shop_id) == shop_id)
        .order_by(col(CustomerFigures.email))
    )


def _epoch_ms_of(moment: datetime) -> float:
    return moment.timestamp() * 1000


def _lapsed(
    *, now: datetime, k: float, one_time_after: timedelta, min_lapse: timedelta
) -> ColumnElement[bool]:
    last = col(CustomerFigures.last_order_ms)
    since_last = bindparam("now_ms", _epoch_ms_of(now), type_=Float()) - last
    return and_(
        last <= bindparam("latest_ms", _epoch_ms_of(now - min_lapse), type_=Float()),
        or_(
            and_(
                col(CustomerFigures.orders) == 1,
                since_last
                > bindparam("one_time_after_ms", one_time_after / timedelta(milliseconds=1)),
            ),
            and_(
                col(CustomerFigures.orders) >= 2,
                since_last > bindparam("k", k, type_=Float()) * col(CustomerFigures.median_gap_ms),
            ),
        ),
    )


def _customer(row: Sequence[Any]) -> LapsedCustomer:
    # Unpacked by position, in _scored's order: a million rows' attribute lookups by name cost
    # more than the rest of the conversion.
    email, orders, last_order_at, median_gap, monetary, recency, frequency, money, top = row
    return LapsedCustomer(
        email=email,
        orders=orders,
        last_order_at=last_order_at,
        median_gap=None if median_gap is None else timedelta(milliseconds=median_gap),
        monetary=Decimal(monetary).scaleb(-_MONEY_SCALE),
        recency_score=recency,
        frequency_score=frequency,
        monetary_score=money,
        top=bool(top),
    )


def _postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _without_jit(session: AsyncSession) -> None:
    """On PostgreSQL, no JIT for this transaction: compiling took 1.3 s of a scan of a million
    rows and never made it faster (bench/winback.py, 2026-12-03). SET LOCAL lasts until the
    transaction ends, so the server's settings for everything else are untouched."""
    if _postgresql(session):
        await session.exec(text("SET LOCAL jit = off"))  # type: ignore[call-overload]


async def _stream(
    session: AsyncSession,
    shop_id: int,
    top_share: float,
    condition: ColumnElement[bool] | None = None,
) -> AsyncGenerator[LapsedCustomer, None]:
    await _without_jit(session)
    breaks = await _break_points(session, shop_id, top_share)
    if breaks is None:
        return
    query = _scored(shop_id, breaks)
    if condition is not None:
        query = query.where(condition)
    # yield_per makes psycopg use a server-side cursor (and aiosqlite fetch in batches). On the
    # session's connection, in its transaction, but as a Core statement: the ORM's row loading
    # was a fifth of the time at a million rows, for plain columns.
    connection = await session.connection()
    result = await connection.stream(query.execution_options(yield_per=STREAM_BATCH))
    try:
        async for batch in result.partitions(STREAM_BATCH):
            for row in batch:
                yield _customer(row)
    finally:
        await result.close()


def lapsed_customers(
    session: AsyncSession,
    shop_id: int,
    *,
    now: datetime,
    k: float = 2.0,
    one_time_after: timedelta = timedelta(days=90),
    top_share: float = 0.02,
    min_lapse: timedelta = timedelta(0),
) -> AsyncGenerator[LapsedCustomer, None]:
    """The shop's customers who have drifted away from their own rhythm, by email.

    With two or more orders: lapsed when `now` - last order > `k` × their median gap. With one:
    lapsed when `now` - that order > `one_time_after`. Either way only once their last order is
    at least `min_lapse` before `now` (filtered here, not by the caller, so the rows it would
    drop are never sent). Scores rank them among all the shop's customers. Streams: iterate
    with `async for`; a caller that may stop early should wrap it in `contextlib.aclosing` so
    the server-side cursor closes at once.
    """
    condition = _lapsed(now=now, k=k, one_time_after=one_time_after, min_lapse=min_lapse)
    return _stream(session, shop_id, top_share, condition)


def rfm_scores(
    session: AsyncSession, shop_id: int, *, top_share: float = 0.02
) -> AsyncGenerator[LapsedCustomer, None]:
    """Every customer of the shop with their recency, frequency and monetary quintiles, by
    email. Streams, like `lapsed_customers`."""
    return _stream(session, shop_id, top_share)


async def customer_summary(
    session: AsyncSession, shop_id: int, email: str, *, top_share: float = 0.02
) -> LapsedCustomer | None:
    """One customer's rhythm and scores, for composing their email; None when they have bought
    nothing that counts. Their row, then where it ranks (`_standing`), never the shop's
    orders."""
    figures = await session.get(CustomerFigures, (shop_id, email.strip().lower()))
    if figures is None:
        return None
    customers, before, at_least = await _standing(session, figures)
    recency, frequency, monetary = (_ntile(1 + n, customers) for n in before)
    return LapsedCustomer(
        email=figures.email,
        orders=figures.orders,
        last_order_at=figures.last_order_at,
        median_gap=None
        if figures.median_gap_ms is None
        else timedelta(milliseconds=figures.median_gap_ms),
        monetary=Decimal(figures.monetary).scaleb(-_MONEY_SCALE),
        recency_score=recency,
        frequency_score=frequency,
        monetary_score=monetary,
        # the share of customers who spent at least as much, as _top_count divides it
        top=at_least / customers <= top_share,
    )


async def _standing(session: AsyncSession, figures: CustomerFigures) -> tuple[int, list[int], int]:
    """(the shop's customers, how many come before this one by (value, email) in each RFM
    dimension, how many spent at least as much), counted in one pass over the shop's figures:
    one small row per customer, no sort; on PostgreSQL from the monetary index alone, which
    includes the other dimensions. Counting through each dimension's index instead took four
    scans."""
    me = figures.email
    before = [
        func.count().filter(
            tuple_(value, col(CustomerFigures.email)) < (getattr(figures, value.key), me)
        )
        for value in _dimensions()
    ]
    at_least = func.count().filter(col(CustomerFigures.monetary) >= figures.monetary)
    query = select(func.count(), *before, at_least).where(
        col(CustomerFigures.shop_id) == figures.shop_id
    )
    customers, recency, frequency, monetary, spent = (await session.exec(query)).one()  # type: ignore[call-overload]
    return customers, [recency, frequency, monetary], spent
