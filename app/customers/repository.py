"""Every query behind win-back: who has lapsed from their own buying rhythm, and RFM scores.

All of it is computed in the database, in one statement with CTEs, and streamed: a shop with a
million customers is read through a server-side cursor in batches of `STREAM_BATCH`, never loaded
whole.

What counts as bought: an order of the shop with an email, not cancelled, placed at or before
`now` (so a past `now` sees the shop as it was), and not refunded in full: an order with refunds
summing to at least its total is left out; one with no refunds counts, even at a total of 0.

Money: totals are summed as stored, whatever their currency: a shop whose orders come in several
currencies gets a mixed sum, good for ranking its customers but not for display. Amounts are
decimal strings. PostgreSQL sums them as NUMERIC. SQLite has no exact decimal type (its NUMERIC is a
float), so both dialects count in integer ten-thousandths (`_money_units`), which is exact for
currencies with up to four decimals and keeps "refunds >= total" free of float rounding.

Time: both dialects turn timestamps into milliseconds since 1970 (`_epoch_ms`): julianday() on
SQLite (millisecond precision), EXTRACT(EPOCH …) on PostgreSQL (microseconds kept as a fraction).
Gaps between orders are milliseconds too: the difference of two such values on SQLite, the
interval's date_part() (a double) on PostgreSQL (`_gap_ms`).

Speed on PostgreSQL (bench/winback.py): the orders are read by an index-only scan of the covering
index (migration 0016) in (email, placed_at) order; nothing between the scan and the per-customer
aggregate sorts, so the shop's orders are never sorted, only its customers (once per quintile and
once by email at the end), with `WORK_MEM` so those sorts stay in memory.
"""

from collections.abc import AsyncGenerator, Sequence
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
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import UTCDateTime, col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.models import Order, Refund
from app.customers.models import LapsedCustomer

# Rows fetched per round trip while streaming; memory holds one batch, whatever the shop's size.
STREAM_BATCH = 1000
# PostgreSQL's work_mem for the analytics' transaction (see _more_work_mem). A sort holds it
# until the query ends, so a 1M-customer scan may take about 0.5 GB of the server's memory.
WORK_MEM = "256MB"

_MONEY_SCALE = 4  # money is counted in units of 10**-4


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


def _not_refunded_in_full(shop_id: int, amount: ColumnElement[int]) -> ColumnElement[bool]:
    """True for an order whose refunds sum to less than its total, or that has none.

    Refunds are few (about 1 % of orders). The set of refunded orders' ids is read once, and
    the sum is looked up only for the orders in it (CASE evaluates its branch only when taken):
    probing the refunds' index for every order cost 10 s at 1M customers. A join (of refunds
    summed per order) would lose the index order the window after it relies on, or read the
    whole orders table to compare totals.
    """
    refunded_ids = select(col(Refund.order_platform_id)).where(col(Refund.shop_id) == shop_id)
    refunded = (
        select(func.sum(_money_units(Refund.amount)))
        .where(
            col(Refund.shop_id) == col(Order.shop_id),
            col(Refund.order_platform_id) == col(Order.platform_id),
        )
        .scalar_subquery()
    )
    return case((col(Order.platform_id).in_(refunded_ids), refunded < amount), else_=true())


def _bought(shop_id: int, *, now: datetime, postgresql: bool) -> CTE:
    """Each order that counts, in (email, placed_at) order, with its gap to the previous one.

    Only filters between the index scan and the lag() window, so the window reads the index's
    order and needs no sort.
    """
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
            col(Order.email).is_not(None),
            col(Order.cancelled_at).is_(None),
            col(Order.placed_at) <= now,
            _not_refunded_in_full(shop_id, amount),
        )
        .cte("bought")
    )


def _gap_ms(
    placed_at: Any, previous: ColumnElement[datetime], *, postgresql: bool
) -> ColumnElement[float]:
    """Milliseconds between two orders. On PostgreSQL through the interval and date_part(),
    both in machine arithmetic: EXTRACT is NUMERIC there, and two of them per order were most
    of the window's 17 s at 1M customers (5M orders). Whole microseconds are far within a
    double's precision, so the median of the gaps comes out the same."""
    if postgresql:
        seconds = func.date_part(literal_column("'epoch'"), placed_at - previous, type_=Float())
        return seconds * literal_column("1000")
    return _epoch_ms(placed_at) - _epoch_ms(previous)


def _per_customer_postgresql(bought: CTE) -> CTE:
    """One row per customer in one pass over the ordered orders: percentile_cont sorts each
    customer's few gaps on its own (in memory), where numbering every gap of the shop by size
    took two sorts of all its orders (spilled to disk at 1M customers). It ignores the first
    order's NULL gap, so a one-time buyer's median is NULL, as on SQLite."""
    median = func.percentile_cont(literal_column("0.5")).within_group(cast(bought.c.gap, Float()))
    return (
        select(
            bought.c.email,
            func.count().label("orders"),
            func.max(bought.c.placed_at).label("last_order_at"),
            _epoch_ms(func.max(bought.c.placed_at)).label("last_t"),
            median.label("median_gap"),
            # Whole units: an integer reaches Python as an int, not a Decimal to parse.
            cast(func.sum(bought.c.amount), BigInteger()).label("monetary"),
        )
        .group_by(bought.c.email)
        .cte("per_customer")
    )


def _per_customer_sqlite(bought: CTE) -> CTE:
    """One row per customer; SQLite has no percentile_cont. The median gap: a customer's n gaps
    numbered by size (the first order's NULL apart); the middle one, or the two middle ones to
    average, are those with n <= 2 * rn <= n + 2."""
    ranked = select(
        bought,
        func.row_number()
        .over(partition_by=(bought.c.email, bought.c.gap.is_(None)), order_by=bought.c.gap)
        .label("rn"),
        func.count(bought.c.gap).over(partition_by=bought.c.email).label("n"),
    ).cte("ranked")
    middle = and_(ranked.c.gap.is_not(None), (ranked.c.rn * 2).between(ranked.c.n, ranked.c.n + 2))
    return (
        select(
            ranked.c.email,
            func.count().label("orders"),
            func.max(ranked.c.placed_at).label("last_order_at"),
            _epoch_ms(func.max(ranked.c.placed_at)).label("last_t"),
            func.avg(case((middle, ranked.c.gap))).label("median_gap"),
            func.sum(ranked.c.amount).label("monetary"),
        )
        .group_by(ranked.c.email)
        .cte("per_customer")
    )


def _scored(shop_id: int, *, now: datetime, top_share: float, postgresql: bool) -> CTE:
    """One row per customer of the shop as of `now`: orders, last order, median gap, money
    spent, RFM quintiles and the top flag, all ranked over the whole shop.

    One pipeline and no joins: orders in (email, placed_at) order, as the index holds them →
    each order's gap to the previous one → one row per customer → scores.
    """
    bought = _bought(shop_id, now=now, postgresql=postgresql)
    per_customer = (_per_customer_postgresql if postgresql else _per_customer_sqlite)(bought)

    # Quintiles over all the shop's customers. NTILE splits ties arbitrarily, so the email breaks
    # them to keep scores stable from one run to the next.
    def quintile(column: ColumnElement[Any]) -> ColumnElement[int]:
        return func.ntile(literal_column("5")).over(
            order_by=(column.asc(), per_customer.c.email.asc())
        )

    # Top: the share of customers who spent at least as much as this one is at most
    # `top_share`. So 2 % of 100 customers is exactly the 2 biggest spenders, customers tied at
    # the boundary are all left out rather than pushing the share over, and a shop with fewer
    # than 1 / top_share customers has none. That share is CUME_DIST over spend, largest
    # first; it is counted here as (N - RANK() + 1) / N over spend smallest first, the same
    # number, because that window's order is a prefix of the monetary quintile's and shares its
    # sort, where a descending one needed a sort of its own.
    at_least = (
        func.count().over()
        - func.rank().over(order_by=per_customer.c.monetary.asc())
        + literal_column("1")
    )
    share = cast(at_least, Float()) / cast(func.count().over(), Float())
    return select(
        per_customer.c.email,
        per_customer.c.orders,
        per_customer.c.last_order_at,
        per_customer.c.last_t,
        per_customer.c.median_gap,
        per_customer.c.monetary,
        quintile(per_customer.c.last_order_at).label("recency_score"),
        quintile(per_customer.c.orders).label("frequency_score"),
        quintile(per_customer.c.monetary).label("monetary_score"),
        (share <= bindparam("top_share", top_share, type_=Float())).label("top"),
    ).cte("scored")


def _select(scored: CTE) -> Select[Any]:
    return select(
        scored.c.email,
        scored.c.orders,
        scored.c.last_order_at,
        scored.c.median_gap,
        scored.c.monetary,
        scored.c.recency_score,
        scored.c.frequency_score,
        scored.c.monetary_score,
        scored.c.top,
    ).order_by(scored.c.email)


def _lapsed(
    scored: CTE, *, now: datetime, k: float, one_time_after: timedelta
) -> ColumnElement[bool]:
    since_last = _epoch_ms(literal(now, UTCDateTime())) - scored.c.last_t
    return or_(
        and_(
            scored.c.orders == 1,
            since_last > bindparam("one_time_after_ms", one_time_after / timedelta(milliseconds=1)),
        ),
        and_(
            scored.c.orders >= 2,
            since_last > bindparam("k", k, type_=Float()) * scored.c.median_gap,
        ),
    )


def _customer(row: Sequence[Any]) -> LapsedCustomer:
    # Unpacked by position, in _select's order: a million rows' attribute lookups by name cost
    # more than the rest of the conversion.
    email, orders, last_order_at, median_gap, monetary, recency, frequency, money, top = row
    return LapsedCustomer(
        email=email,
        orders=int(orders),
        last_order_at=last_order_at,
        median_gap=None if median_gap is None else timedelta(milliseconds=float(median_gap)),
        monetary=Decimal(int(monetary)).scaleb(-_MONEY_SCALE),
        recency_score=int(recency),
        frequency_score=int(frequency),
        monetary_score=int(money),
        top=bool(top),
    )


def _postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _more_work_mem(session: AsyncSession) -> None:
    """On PostgreSQL, tune this transaction for the analytics. `WORK_MEM` for each sort: at 1M
    customers the four sorts of the per-customer rows need 86–164 MB each and spilled about
    740 MB to temporary files at 64 MB. No JIT: compiling took 1.3 s there and never made the
    query faster (bench/winback.py, 2026-12-03). SET LOCAL lasts until the transaction ends
    (the stream's; the win-back scan reads in a session of its own), so the server's settings
    for everything else are untouched."""
    if _postgresql(session):
        await session.exec(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))  # type: ignore[call-overload]
        await session.exec(text("SET LOCAL jit = off"))  # type: ignore[call-overload]


async def _stream(
    session: AsyncSession, query: Select[Any]
) -> AsyncGenerator[LapsedCustomer, None]:
    await _more_work_mem(session)
    # yield_per makes psycopg use a server-side cursor (and aiosqlite fetch in batches).
    result = await session.stream(query.execution_options(yield_per=STREAM_BATCH))
    try:
        async for batch in result.partitions():
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
) -> AsyncGenerator[LapsedCustomer, None]:
    """The shop's customers who have drifted away from their own rhythm, by email.

    With two or more orders: lapsed when `now` - last order > `k` × their median gap. With one:
    lapsed when `now` - that order > `one_time_after`. Scores rank them among all the shop's
    customers. Streams: iterate with `async for`; a caller that may stop early should wrap it in
    `contextlib.aclosing` so the server-side cursor closes at once.
    """
    scored = _scored(shop_id, now=now, top_share=top_share, postgresql=_postgresql(session))
    query = _select(scored).where(_lapsed(scored, now=now, k=k, one_time_after=one_time_after))
    return _stream(session, query)


def rfm_scores(
    session: AsyncSession, shop_id: int, *, now: datetime, top_share: float = 0.02
) -> AsyncGenerator[LapsedCustomer, None]:
    """Every customer of the shop with their recency, frequency and monetary quintiles, by
    email. Streams, like `lapsed_customers`."""
    scored = _scored(shop_id, now=now, top_share=top_share, postgresql=_postgresql(session))
    return _stream(session, _select(scored))


async def customer_summary(
    session: AsyncSession, shop_id: int, email: str, *, now: datetime, top_share: float = 0.02
) -> LapsedCustomer | None:
    """One customer's rhythm and scores, for composing their win-back email; None when they
    have bought nothing that counts. Ranking them still reads the whole shop's orders."""
    scored = _scored(shop_id, now=now, top_share=top_share, postgresql=_postgresql(session))
    query = _select(scored).where(scored.c.email == email.strip().lower())
    await _more_work_mem(session)
    row = (await session.exec(query)).first()  # type: ignore[call-overload]
    return None if row is None else _customer(row)
