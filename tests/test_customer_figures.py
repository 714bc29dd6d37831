"""Each customer's figures are kept up to date as their orders, cancellations and refunds are
stored, and go when they are redacted; lapse, RFM and one customer's summary read them and agree
with a recomputation from the orders."""

import importlib.util
import random
import re
import statistics
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import col, select

from app.commerce import repository as commerce
from app.commerce.events import Customer, OrderCancelled, OrderPlaced, OrderRefunded
from app.commerce.models import Order
from app.customers import repository
from app.customers.models import CustomerFigures, LapsedCustomer
from app.db import get_engine, sessionmaker
from app.privacy import repository as privacy
from tests.test_customers import day, order, other_shop_id, refund, shop_id, store

__all__ = ["other_shop_id", "shop_id"]  # fixtures

MIGRATION = Path(__file__).parents[1] / "migrations/versions/0019_customer_figures.py"


def placed(platform_id: str, email: str | None, on_day: float, total: str = "10.00") -> OrderPlaced:
    return OrderPlaced(
        platform_id=platform_id,
        name=f"#{platform_id}",
        checkout_token=None,
        cart_token=None,
        email=email,
        currency="USD",
        total_price=total,
        placed_at=day(on_day),
    )


async def apply(shop_id: int, *events: OrderPlaced | OrderCancelled | OrderRefunded) -> None:
    """Store the events as the ingest path does, in one transaction."""
    async with sessionmaker()() as session:
        for item in events:
            if isinstance(item, OrderPlaced):
                await commerce.insert_order(session, shop_id, item)
            elif isinstance(item, OrderCancelled):
                await commerce.record_cancellation(session, shop_id, item)
            else:
                await commerce.record_refund(session, shop_id, item)
        await session.commit()


async def figures(shop_id: int) -> dict[str, tuple[int, Any, Any, float | None, int]]:
    async with sessionmaker()() as session:
        rows = await session.exec(select(CustomerFigures).where(CustomerFigures.shop_id == shop_id))
        return {
            f.email: (f.orders, f.first_order_at, f.last_order_at, f.median_gap_ms, f.monetary)
            for f in rows
        }


DAY_MS = 86_400_000


async def test_an_order_cancellation_and_refund_each_update_the_customers_figures(
    shop_id: int,
) -> None:
    await apply(shop_id, placed("1", "Ann@Example.com", 0, "20.00"))
    assert await figures(shop_id) == {"ann@example.com": (1, day(0), day(0), None, 200_000)}

    await apply(shop_id, placed("2", "ann@example.com", 10, "30.00"))
    await apply(shop_id, placed("3", "ann@example.com", 30, "5.00"))
    assert await figures(shop_id) == {"ann@example.com": (3, day(0), day(30), 15 * DAY_MS, 550_000)}

    # A repeated delivery changes nothing; a cancellation takes the order out
    await apply(shop_id, placed("3", "ann@example.com", 30, "5.00"))
    await apply(shop_id, OrderCancelled(order_id="3", cancelled_at=day(31)))
    assert await figures(shop_id) == {"ann@example.com": (2, day(0), day(10), 10 * DAY_MS, 500_000)}

    # A partial refund leaves the order counted; refunds reaching its total take it out
    await apply(shop_id, OrderRefunded("2", "r1", "10.00", day(12)))
    assert (await figures(shop_id))["ann@example.com"][0] == 2
    await apply(shop_id, OrderRefunded("2", "r2", "20.00", day(13)))
    assert await figures(shop_id) == {"ann@example.com": (1, day(0), day(0), None, 200_000)}

    # The last order that counted gone, the row goes too
    await apply(shop_id, OrderCancelled(order_id="1", cancelled_at=day(40)))
    assert await figures(shop_id) == {}


async def test_a_refund_stored_before_its_order_counts_when_the_order_comes(shop_id: int) -> None:
    await apply(shop_id, OrderRefunded("9", "r1", "10.00", day(1)))
    await apply(shop_id, placed("9", "bo@example.com", 0, "10.00"), placed("8", None, 0))

    assert await figures(shop_id) == {}


async def test_an_order_moved_to_another_address_is_recomputed_for_both(shop_id: int) -> None:
    await apply(
        shop_id, placed("1", "old@example.com", 0), placed("2", "old@example.com", 5, "7.00")
    )
    async with sessionmaker()() as session:
        moved = await commerce.get_order(session, shop_id, "2")
        assert moved is not None
        moved.email = "new@example.com"
        await repository.refresh_figures(session, shop_id, ["old@example.com", moved.email])
        await session.commit()

    assert await figures(shop_id) == {
        "old@example.com": (1, day(0), day(0), None, 100_000),
        "new@example.com": (1, day(5), day(5), None, 70_000),
    }


async def test_redaction_deletes_the_customers_figures_and_no_one_elses(shop_id: int) -> None:
    await apply(
        shop_id,
        placed("1", "jane@example.com", 0),
        placed("2", "jane@example.com", 9),
        placed("3", "kim@example.com", 3),
        placed("4", "kim@example.com", 4),
    )

    async with sessionmaker()() as session:
        # Kim's order 4 is named by the request too: it loses its address, Kim keeps order 3
        jane = Customer(email="JANE@example.com", phone=None, platform_id=None, order_ids=("4",))
        await privacy.redact_customer(session, shop_id, jane)
        await session.commit()

    assert await figures(shop_id) == {"kim@example.com": (1, day(3), day(3), None, 100_000)}


async def test_deleting_a_shop_deletes_its_figures(shop_id: int, other_shop_id: int) -> None:
    await apply(shop_id, placed("1", "jane@example.com", 0))
    await apply(other_shop_id, placed("1", "jane@example.com", 0))

    async with sessionmaker()() as session:
        await privacy.delete_shop(session, shop_id)
        await session.commit()

    assert await figures(shop_id) == {}
    assert list(await figures(other_shop_id)) == ["jane@example.com"]


# --- against a recomputation from the orders --------------------------------------------------


def _random_orders(shop_id: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Orders of 60 customers (1 to 6 each, some on the same day), 5 % cancelled, 8 % refunded
    in part or in full, a few anonymous."""
    rng = random.Random(seed)
    orders, refunds = [], []
    for n in range(60):
        email = f"c{n:02}@example.com"
        for _ in range(rng.randint(1, 6)):
            total = f"{rng.randint(0, 30000) / 100:.2f}"
            row = order(shop_id, email, rng.choice([rng.uniform(0, 400), rng.randint(0, 400)]),
                        total, cancelled=rng.random() < 0.05)  # fmt: skip
            orders.append(row)
            roll = rng.random()
            if roll < 0.08:
                refunds.append(refund(row, total if roll < 0.04 else "0.01"))
    orders += [order(shop_id, None, 10), order(shop_id, None, 20)]
    return orders, refunds


def _expected(orders: list[Any], refunds: list[Any], top_share: float) -> list[LapsedCustomer]:
    """Every customer's figures and scores computed from scratch, in Python."""
    refunded: dict[str, Decimal] = {}
    for r in refunds:
        refunded[r.order_platform_id] = refunded.get(r.order_platform_id, Decimal(0)) + Decimal(
            r.amount
        )
    bought: dict[str, list[Any]] = {}
    for o in orders:
        counts = o.platform_id not in refunded or refunded[o.platform_id] < Decimal(o.total_price)
        if o.email and o.cancelled_at is None and counts:
            bought.setdefault(o.email, []).append(o)
    rows = []
    for email, mine in bought.items():
        times = sorted(o.placed_at for o in mine)
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        rows.append({
            "email": email,
            "orders": len(mine),
            "last_order_at": times[-1],
            "median_gap": statistics.median(gaps) if gaps else None,
            "monetary": sum(Decimal(o.total_price) for o in mine),
        })  # fmt: skip
    n = len(rows)

    def ntile(key: str) -> dict[str, int]:
        ranked = sorted(rows, key=lambda r: (r[key], r["email"]))
        size, bigger = divmod(n, 5)
        buckets = [b for b in range(1, 6) for _ in range(size + (1 if b <= bigger else 0))]
        return {r["email"]: bucket for r, bucket in zip(ranked, buckets, strict=True)}

    recency, frequency, money = ntile("last_order_at"), ntile("orders"), ntile("monetary")
    return sorted(
        (
            LapsedCustomer(
                email=r["email"],
                orders=r["orders"],
                last_order_at=r["last_order_at"],
                median_gap=r["median_gap"],
                monetary=r["monetary"],
                recency_score=recency[r["email"]],
                frequency_score=frequency[r["email"]],
                monetary_score=money[r["email"]],
                top=sum(1 for o in rows if o["monetary"] >= r["monetary"]) / n <= top_share,
            )
            for r in rows
        ),
        key=lambda c: c.email,
    )


def _is_lapsed(
    c: LapsedCustomer, now: Any, k: float, one_time: timedelta, least: timedelta
) -> bool:
    since = now - c.last_order_at
    if since < least:
        return False
    if c.median_gap is None:
        return since > one_time
    return since > k * c.median_gap


def _close(got: list[LapsedCustomer], want: list[LapsedCustomer]) -> None:
    """Equal, but for a median gap off by the database's rounding to milliseconds."""
    assert [c.email for c in got] == [c.email for c in want]
    for g, w in zip(got, want, strict=True):
        assert (g.median_gap is None) == (w.median_gap is None)
        if g.median_gap is not None and w.median_gap is not None:
            assert abs(g.median_gap - w.median_gap) < timedelta(milliseconds=1)
        assert g == replace(w, median_gap=g.median_gap)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_lapse_and_rfm_agree_with_a_recomputation_from_the_orders(
    shop_id: int, seed: int
) -> None:
    orders, refunds = _random_orders(shop_id, seed)
    await store(*orders)
    await store(*refunds)
    expected = _expected(orders, refunds, top_share=0.05)
    now, k, one_time, least = day(420), 1.5, timedelta(days=60), timedelta(days=20)

    async with sessionmaker()() as session:
        everyone = [c async for c in repository.rfm_scores(session, shop_id, top_share=0.05)]
        lapsed = [
            c
            async for c in repository.lapsed_customers(
                session, shop_id, now=now, k=k, one_time_after=one_time, top_share=0.05,
                min_lapse=least,
            )
        ]  # fmt: skip
        summaries = [
            await repository.customer_summary(session, shop_id, c.email, top_share=0.05)
            for c in expected
        ]

    _close(everyone, expected)
    _close(lapsed, [c for c in expected if _is_lapsed(c, now, k, one_time, least)])
    assert lapsed, "the data should have some lapsed customers"
    _close([s for s in summaries if s], expected)
    assert any(c.top for c in expected)


async def test_figures_kept_up_to_date_equal_the_migrations_backfill(shop_id: int) -> None:
    # Stored one event at a time through the write path
    rng = random.Random(7)
    events: list[Any] = []
    for n in range(200):
        email = f"c{rng.randint(0, 40):02}@example.com"
        events.append(placed(str(n), email, rng.uniform(0, 300), f"{rng.randint(1, 9999)}.25"))
        if rng.random() < 0.1:
            events.append(OrderCancelled(order_id=str(rng.randint(0, n)), cancelled_at=day(301)))
        if rng.random() < 0.1:
            events.append(OrderRefunded(str(rng.randint(0, n)), f"r{n}", "5000", day(302)))
    for item in events:
        await apply(shop_id, item)
    kept = await figures(shop_id)

    # The same figures recomputed by the migration's backfill
    spec = importlib.util.spec_from_file_location("migration_0019", MIGRATION)
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    async with sessionmaker()() as session:
        await session.exec(text("DELETE FROM customer_figures"))  # type: ignore[call-overload]
        dialect = session.get_bind().dialect.name
        statement = text(migration.backfill_sql(dialect, one_shop=True))
        await session.exec(statement, params={"shop_id": shop_id})  # type: ignore[call-overload]
        await session.commit()
    backfilled = await figures(shop_id)

    assert len(kept) > 30
    assert kept.keys() == backfilled.keys()
    for email, (orders, first, last, gap, money) in kept.items():
        again = backfilled[email]
        assert (orders, first, last, money) == (again[0], again[1], again[2], again[4])
        assert (gap is None) == (again[3] is None)
        assert gap is None or abs(gap - again[3]) < 1e-3  # type: ignore[operator]


async def test_one_customers_summary_never_reads_the_shops_orders(shop_id: int) -> None:
    await store(*(order(shop_id, f"c{i:02}@example.com", i, f"{i}.00") for i in range(30)))
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = get_engine().sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with sessionmaker()() as session:
            summary = await repository.customer_summary(session, shop_id, "c29@example.com")
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert summary and (summary.orders, summary.monetary_score, summary.top) == (1, 5, False)
    tables = [re.findall(r"(?:FROM|JOIN) (\w+)", s) for s in statements]
    assert {table for read in tables for table in read} == {"customer_figures"}
    assert len(statements) <= 6


async def test_the_lapse_scan_leaves_out_who_lapsed_too_recently(shop_id: int) -> None:
    # Gaps of a day: lapsed after two days, but min_lapse holds them for 30
    await store(*(order(shop_id, "daily@example.com", d) for d in (0, 1, 2)))

    async with sessionmaker()() as session:
        early = [c async for c in repository.lapsed_customers(session, shop_id, now=day(10))]
        held = repository.lapsed_customers(
            session, shop_id, now=day(10), min_lapse=timedelta(days=30)
        )
        assert [c.email for c in early] == ["daily@example.com"]
        assert [c async for c in held] == []
        late = repository.lapsed_customers(
            session, shop_id, now=day(33), min_lapse=timedelta(days=30)
        )
        assert [c.email async for c in late] == ["daily@example.com"]


async def test_orders_of_the_customer_are_counted_only_in_their_shop(
    shop_id: int, other_shop_id: int
) -> None:
    await apply(shop_id, placed("1", "ann@example.com", 0))
    await apply(other_shop_id, placed("1", "ann@example.com", 5, "99.00"))

    async with sessionmaker()() as session:
        ours = await session.exec(select(Order).where(col(Order.shop_id) == shop_id))
        assert len(ours.all()) == 1
    assert await figures(shop_id) == {"ann@example.com": (1, day(0), day(0), None, 100_000)}
    assert await figures(other_shop_id) == {"ann@example.com": (1, day(5), day(5), None, 990_000)}
