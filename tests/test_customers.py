"""Win-back analytics against the real database: lapse by each customer's own rhythm, RFM
quintiles and the top spenders, all computed in SQL and streamed."""

import itertools
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlmodel import select

from app.commerce.models import Order, Refund
from app.customers import repository
from app.customers.models import LapsedCustomer
from app.db import sessionmaker
from app.shops.models import Shop
from app.shops.service import connect_shopify

DAY_0 = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
_platform_ids = itertools.count(1000)


def day(n: float) -> datetime:
    return DAY_0 + timedelta(days=n)


def order(
    shop_id: int,
    email: str | None,
    on_day: float,
    total: str = "10.00",
    *,
    cancelled: bool = False,
    currency: str = "USD",
) -> Order:
    platform_id = str(next(_platform_ids))
    return Order(
        shop_id=shop_id,
        platform_id=platform_id,
        name=f"#{platform_id}",
        email=email,
        currency=currency,
        total_price=total,
        placed_at=day(on_day),
        cancelled_at=day(on_day + 1) if cancelled else None,
    )


def refund(refunded: Order, amount: str, *, shop_id: int | None = None) -> Refund:
    return Refund(
        shop_id=shop_id if shop_id is not None else refunded.shop_id,
        order_platform_id=refunded.platform_id,
        platform_id=str(next(_platform_ids)),
        amount=amount,
        refunded_at=refunded.placed_at + timedelta(days=2),
    )


async def store(*rows: Order | Refund) -> None:
    """Store the rows, then recompute the figures of the customers they touch, as the write path
    (app/commerce/repository.py) does for each order, cancellation and refund."""
    async with sessionmaker()() as session:
        session.add_all(rows)
        await session.flush()
        touched: set[tuple[int, str | None]] = set()
        for row in rows:
            if isinstance(row, Order):
                touched.add((row.shop_id, row.email))
            else:
                refunded = select(Order.email).where(
                    Order.shop_id == row.shop_id, Order.platform_id == row.order_platform_id
                )
                touched.update((row.shop_id, email) for email in (await session.exec(refunded)))
        for shop_id, email in touched:
            await repository.refresh_figures(session, shop_id, [email])
        await session.commit()


async def lapsed(
    shop_id: int,
    now: datetime,
    *,
    k: float = 2.0,
    one_time_after: timedelta = timedelta(days=90),
) -> list[LapsedCustomer]:
    async with sessionmaker()() as session:
        stream = repository.lapsed_customers(
            session, shop_id, now=now, k=k, one_time_after=one_time_after
        )
        return [customer async for customer in stream]


async def scores(shop_id: int, **options: float) -> list[LapsedCustomer]:
    async with sessionmaker()() as session:
        return [c async for c in repository.rfm_scores(session, shop_id, **options)]


async def summary(shop_id: int, email: str) -> LapsedCustomer | None:
    async with sessionmaker()() as session:
        return await repository.customer_summary(session, shop_id, email)


@pytest.fixture
async def shop_id(shop: Shop) -> int:
    assert shop.id is not None
    return shop.id


@pytest.fixture
async def other_shop_id() -> int:
    async with sessionmaker()() as session:
        other = await connect_shopify(
            session, domain="other-store.myshopify.com", access_token="shpat_other", api_secret="s"
        )
        await session.commit()
        assert other.id is not None
        return other.id


async def test_a_repeat_customer_lapses_after_k_times_their_median_gap(shop_id: int) -> None:
    # Given orders on days 0, 10 and 30: gaps of 10 and 20 days, so a median of 15 days
    await store(
        order(shop_id, "ann@example.com", 0, "20.00"),
        order(shop_id, "ann@example.com", 10, "30.50"),
        order(shop_id, "ann@example.com", 30, "5.25"),
    )

    # Then with k = 2 she lapses once more than 30 days have passed since day 30
    assert await lapsed(shop_id, day(59)) == []
    assert await lapsed(shop_id, day(61)) == [
        LapsedCustomer(
            email="ann@example.com",
            orders=3,
            last_order_at=day(30),
            median_gap=timedelta(days=15),
            monetary=Decimal("55.75"),
            recency_score=1,
            frequency_score=1,
            monetary_score=1,
            top=False,
        )
    ]
    # k is the caller's: at k = 3 the same day is not yet a lapse (31 < 45)
    assert await lapsed(shop_id, day(61), k=3.0) == []


async def test_the_median_of_an_even_number_of_gaps_is_the_mean_of_the_middle_two(
    shop_id: int,
) -> None:
    await store(
        # gaps 10, 20, 30, 40 (in time order): median (20 + 30) / 2 = 25 days
        *(order(shop_id, "even@example.com", d) for d in (0, 10, 30, 60, 100)),
        # gaps 40, 10, 20 in time order, 10, 20, 40 by size: median 20 days, not 10
        *(order(shop_id, "odd@example.com", d) for d in (0, 40, 50, 70)),
        # a single gap of 7.5 days is its own median
        order(shop_id, "two@example.com", 0),
        order(shop_id, "two@example.com", 7.5),
    )

    even = await summary(shop_id, "even@example.com")
    odd = await summary(shop_id, "Odd@Example.com ")
    two = await summary(shop_id, "two@example.com")

    assert even and even.median_gap == timedelta(days=25)
    assert odd and odd.median_gap == timedelta(days=20)
    assert two and two.median_gap == timedelta(days=7.5)


async def test_a_one_time_buyer_lapses_after_one_time_after(shop_id: int) -> None:
    await store(order(shop_id, "once@example.com", 0, "12.00"))

    assert await lapsed(shop_id, day(89)) == []
    [once] = await lapsed(shop_id, day(91))
    assert (once.email, once.orders, once.median_gap) == ("once@example.com", 1, None)
    assert await lapsed(shop_id, day(91), one_time_after=timedelta(days=120)) == []


async def test_a_customer_whose_last_order_is_after_now_has_not_lapsed(shop_id: int) -> None:
    # Figures cover every stored order; `now` is only when the lapse is measured.
    await store(*(order(shop_id, "ann@example.com", d) for d in (0, 10, 30)))

    ann = await summary(shop_id, "ann@example.com")

    assert ann and (ann.orders, ann.last_order_at) == (3, day(30))
    # Long lapsed on day 29 as of her first two orders, but her last one is later still.
    assert await lapsed(shop_id, day(29), one_time_after=timedelta(days=1), k=0.1) == []


async def test_cancelled_fully_refunded_and_anonymous_orders_are_not_bought(
    shop_id: int,
) -> None:
    partly_refunded = order(shop_id, "bo@example.com", 10, "30.00")
    # 0.70 + 0.10 is 0.7999999999999999 in floats: the refund check must not use them
    fully_refunded = order(shop_id, "bo@example.com", 60, "0.80")
    await store(
        order(shop_id, "bo@example.com", 0, "20.00"),
        partly_refunded,
        order(shop_id, "bo@example.com", 50, "99.00", cancelled=True),
        fully_refunded,
        order(shop_id, None, 70, "500.00"),
        # a free order nobody refunded is still an order
        order(shop_id, "free@example.com", 5, "0.00"),
    )
    await store(
        refund(partly_refunded, "5.00"),
        refund(fully_refunded, "0.70"),
        refund(fully_refunded, "0.10"),
    )

    everyone = await scores(shop_id)

    assert [(c.email, c.orders) for c in everyone] == [
        ("bo@example.com", 2),
        ("free@example.com", 1),
    ]
    bo = everyone[0]
    # the monetary value sums order totals: a partial refund does not reduce it
    assert (bo.last_order_at, bo.median_gap, bo.monetary) == (
        day(10),
        timedelta(days=10),
        Decimal("50.00"),
    )
    assert everyone[1].monetary == Decimal("0")


async def test_another_shops_orders_and_refunds_never_appear(
    shop_id: int, other_shop_id: int
) -> None:
    ours = order(shop_id, "ann@example.com", 0, "10.00")
    await store(
        ours,
        order(other_shop_id, "ann@example.com", 80, "1000.00"),
        order(other_shop_id, "zed@example.com", 0, "1000.00"),
    )
    # The other shop refunds an order of its own that has the same platform id as ours
    await store(refund(ours, "10.00", shop_id=other_shop_id))

    [ann] = await lapsed(shop_id, day(100))
    everyone = await scores(shop_id)

    assert (ann.email, ann.orders, ann.last_order_at, ann.monetary) == (
        "ann@example.com",
        1,
        day(0),
        Decimal("10.00"),
    )
    assert [c.email for c in everyone] == ["ann@example.com"]
    assert await summary(shop_id, "zed@example.com") is None


async def test_rfm_scores_are_quintiles_within_the_shop(shop_id: int) -> None:
    # Given 10 customers: c0 spends least and ordered most recently; order counts are a
    # permutation of 1..10, so each dimension ranks them differently
    counts = [(3 * i) % 10 + 1 for i in range(10)]
    rows = []
    for i, count in enumerate(counts):
        last = 200 - i
        rows.append(order(shop_id, f"c{i}@example.com", last - 10 * (count - 1), f"{i + 1}00.00"))
        rows += [
            order(shop_id, f"c{i}@example.com", last - 10 * j, "1.00") for j in range(count - 1)
        ]
    await store(*rows)

    by_email = {c.email: c for c in await scores(shop_id)}
    customers = [by_email[f"c{i}@example.com"] for i in range(10)]

    assert [c.orders for c in customers] == counts
    assert [c.monetary_score for c in customers] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [c.recency_score for c in customers] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    # quintiles of the order count 1..10: counts 1-2 score 1, 3-4 score 2, … 9-10 score 5
    assert [c.frequency_score for c in customers] == [(n + 1) // 2 for n in counts]
    # one customer's summary is ranked among the whole shop too
    assert await summary(shop_id, "c7@example.com") == customers[7]


async def test_mixed_currencies_are_summed_as_they_are(shop_id: int) -> None:
    await store(
        order(shop_id, "ann@example.com", 0, "10.00", currency="USD"),
        order(shop_id, "ann@example.com", 10, "1500", currency="JPY"),
        order(shop_id, "ann@example.com", 20, "2.125", currency="KWD"),
    )

    ann = await summary(shop_id, "ann@example.com")

    assert ann and ann.monetary == Decimal("1512.125")


async def test_top_is_the_top_share_of_customers_by_spend(shop_id: int) -> None:
    # 100 customers spending 1, 2, … 100
    await store(*(order(shop_id, f"c{i:03}@example.com", 0, f"{i}.00") for i in range(1, 101)))

    def top(customers: list[LapsedCustomer]) -> list[str]:
        return sorted(c.email for c in customers if c.top)

    # 2 % of 100 is the 2 biggest spenders, exactly: CUME_DIST of the 2nd is 0.02 <= 0.02
    assert top(await scores(shop_id)) == ["c099@example.com", "c100@example.com"]
    assert len(top(await scores(shop_id, top_share=0.05))) == 5
    # lapsed customers carry the same flag
    assert top(await lapsed(shop_id, day(100))) == ["c099@example.com", "c100@example.com"]


async def test_customers_tied_at_the_top_boundary_are_all_left_out(shop_id: int) -> None:
    # 50 customers: 2 % is one customer, but the two biggest spent the same
    await store(
        *(order(shop_id, f"c{i:02}@example.com", 0, f"{i}.00") for i in range(1, 49)),
        order(shop_id, "big1@example.com", 0, "900.00"),
        order(shop_id, "big2@example.com", 0, "900.00"),
    )

    assert [c.email for c in await scores(shop_id) if c.top] == []
    tied = [c.email for c in await scores(shop_id, top_share=0.04) if c.top]
    assert tied == ["big1@example.com", "big2@example.com"]


async def test_lapsed_customers_stream_in_batches(
    shop_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "STREAM_BATCH", 3)
    await store(*(order(shop_id, f"c{i:02}@example.com", i) for i in range(10)))

    async with sessionmaker()() as session:
        postgresql = session.get_bind().dialect.name == "postgresql"
        seen = []
        stream = repository.lapsed_customers(session, shop_id, now=day(200))
        async with aclosing(stream):
            async for customer in stream:
                seen.append(customer.email)
                if postgresql and len(seen) == 4:
                    # mid-stream, the rows come from a cursor held open on the server
                    cursors = await session.exec(text("SELECT count(*) FROM pg_cursors"))  # type: ignore[call-overload]
                    assert cursors.scalar_one() == 1

    assert seen == [f"c{i:02}@example.com" for i in range(10)]
