"""Win-back at scale: the lapse scan and RFM scoring over 10k, 100k and 1M customers on PostgreSQL.

Run: .venv/bin/python bench/winback.py [--sizes 10000,100000,1000000] [--orders-per-customer 5]
     [--scan [--scan-sizes 10000,100000] [--scan-limit 10000]]

What it does:
1. Creates a fresh database (`rebound_bench_winback` on postgresql://postgres@127.0.0.1:5432 unless
   --server/--database say otherwise; never `test`), migrates it with app.migrate.upgrade.
2. Per size, one shop with that many customers and about --orders-per-customer orders each (1 to
   2n-1, uniformly). Each customer has a rhythm (a gap of 7 to 120 days, varied ±50 % order to
   order); the last order falls 0 to 4 gaps before `now`, so about half the repeat buyers have
   lapsed (k = 2); one-time buyers' only order is 0 to 365 days old. 1 % of orders are cancelled,
   1 % refunded (half in full). Rows are generated in Python, COPYed into an unlogged staging table,
   then moved into `orders` in `placed_at` order, as a live shop writes them: the
   (shop_id, email, placed_at) index then points all over the heap, as it would in production.
   The orders table's secondary indexes are dropped for the move and built again after it (so
   they come out freshly packed), then VACUUM ANALYZE: as autovacuum does in production after
   that many inserts, it sets the visibility map, without which the lapse and RFM queries'
   index-only scan of the covering index (migration 0016) would fetch every order from the heap.
   Then the shop's `customer_figures` are built by migration 0019's own backfill statement
   (timed: "backfill", what an existing shop's upgrade costs), and VACUUM ANALYZE them.
3. Per size and query, each in a fresh subprocess so peaks do not carry over, it measures:
   - baseline: streaming the shop's orders in (email, placed_at) order, three columns, through the
     same session and server-side cursor (`yield_per`): the read no analytics can avoid;
   - `lapsed_customers` iterated to the end;
   - `rfm_scores` iterated to the end;
   - summary: `customer_summary` (which every email of the other flows asks for its segment)
     for 50 random customers one at a time, median and slowest;
   - maintain: new orders of existing customers stored through `commerce.insert_order`, 50 a
     transaction, in rounds alternating between keeping the figures up to date and not
     (refresh_figures swapped for a no-op in that process: the write path before 0019), as ms
     an order and their ratio; the orders are deleted after and the figures recomputed.
   - with --scan (at --scan-sizes, default every size): `flows.winback.scan_shop`, the daily job
     itself, with the flow settings as installed: the lapse stream read in one session, an
     enrollment written per lapsed customer in another, committed every `flows.winback.BATCH`
     (without Redis: no jobs are enqueued). Before the clock, the shop gets the default flows
     and loses the enrollments of any earlier scan. Its rows are the enrollments written; the
     resident set is also sampled after each batch (after the first and at the end are shown).
     It writes an enrollment per lapsed customer (about 500k at 1M, some ten round trips each):
     --scan-limit N stops it, right after a batch's commit, once N lapsed customers are read.
   --repeat N measures each N times, each in its own process, and shows the median.
   Time is wall time from the call to the last row (and to the first row: the break-points are
   read before the first row comes). Memory is the
   subprocess's peak resident set, VmHWM from /proc/self/status: the whole Python process,
   interpreter and imports included; the resident set just before the query is shown too.
   (Not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's peak, carried over the
   exec, and this parent has just generated the data. ru_maxrss is kept in the JSON.)
   --tracemalloc adds tracemalloc's peak of Python-side allocations (slower). PostgreSQL's own
   memory is not in either: its sorts spill to temporary files past `work_mem`, reported as
   "temp MB" (pg_stat_database.temp_bytes during the query).

Prints a table and the growth from one size to the next, compares with the targets (1M customers
in at most 20 s, peak at most 300 MB), and writes bench/winback.json. --explain adds where the
lapse query's time goes at the largest size (EXPLAIN ANALYZE, time per plan node). Progress goes
to stderr.
The database is dropped at the end unless --keep; --reuse keeps an existing database and the
shops already loaded in it (handy for measuring again without loading 1M customers again).
"""

import argparse
import asyncio
import io
import json
import random
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_DATABASE = "rebound_bench_winback"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the scan's `now`; every order is before it
DAY_S = 86400.0
TARGET_SECONDS = 20.0
TARGET_MB = 300.0
TARGET_SIZE = 1_000_000
QUERIES = ("baseline", "lapsed", "rfm")
SCAN = "scan"  # flows.winback.scan_shop, with --scan
SUMMARY = "summary"  # customer_summary of SUMMARIES customers, one at a time
MAINTAIN = "maintain"  # orders stored with the figures kept up to date, and without
SUMMARIES = 50
MAINTENANCE_ROUNDS = 10
MAINTENANCE_BATCH = 50  # orders per transaction, as ingest commits deliveries together


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mb(kilobytes: float) -> float:
    return round(kilobytes / 1024, 1)


# --- database --------------------------------------------------------------------------------


def connect(url: str, **kwargs: object):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url, **kwargs)


def create_database(server: str, name: str, *, reuse: bool) -> bool:
    """A fresh database (or the existing one with --reuse); True when it was created now."""
    if name == "test":
        raise SystemExit("refusing to use the `test` database: other engineers' tests use it")
    with connect(f"{server}/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and reuse:
            return False
        if exists:
            log(f"dropping the old {name}")
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return True


def drop_database(server: str, name: str) -> None:
    with connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shop_domain(size: int, per_customer: int) -> str:
    return f"bench-{size}-x{per_customer}.myshopify.com"


def find_shop(url: str, domain: str) -> tuple[int, int] | None:
    """(shop id, orders) of a shop loaded before, if it was loaded to the end."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM shops WHERE platform = 'shopify' AND domain = %s AND name = 'loaded'",
            (domain,),
        ).fetchone()
        if row is None:
            return None
        (count,) = conn.execute(
            "SELECT count(*) FROM orders WHERE shop_id = %s", (row[0],)
        ).fetchone()  # type: ignore[misc]
        return int(row[0]), int(count)


# --- loading ---------------------------------------------------------------------------------


def generate(customers: int, per_customer: int, seed: int):  # type: ignore[no-untyped-def]
    """Yield (order lines, refund lines) for blocks of customers, as COPY text.

    An order line: email, platform id, epoch seconds of placed_at, total in cents, cancelled.
    A refund line: order platform id, refund platform id, amount in cents, epoch seconds."""
    rng = random.Random(seed)
    now = NOW.timestamp()
    most = 2 * per_customer - 1
    platform_id = 0
    block = 20_000
    for first in range(0, customers, block):
        orders = io.StringIO()
        refunds = io.StringIO()
        for n in range(first, min(first + block, customers)):
            email = f"customer{n:07d}@example.com"
            count = rng.randint(1, most)
            if count == 1:
                times = [now - rng.uniform(0, 365) * DAY_S]
            else:
                gap = rng.uniform(7, 120) * DAY_S
                t = now - rng.uniform(0, 4) * gap
                times = [t]
                for _ in range(count - 1):
                    t -= gap * rng.uniform(0.5, 1.5)
                    times.append(t)
            basket = rng.randint(1500, 15000)
            for t in times:
                platform_id += 1
                cents = max(100, int(basket * rng.uniform(0.5, 1.5)))
                roll = rng.random()
                cancelled = "t" if roll < 0.01 else "f"
                orders.write(f"{email}\t{platform_id}\t{t:.3f}\t{cents}\t{cancelled}\n")
                if 0.01 <= roll < 0.02:
                    refunded = cents if roll < 0.015 else cents // 3
                    when = t + 2 * DAY_S
                    refunds.write(f"{platform_id}\t{platform_id}\t{refunded}\t{when:.3f}\n")
        yield orders.getvalue(), refunds.getvalue(), min(first + block, customers)


def load(url: str, size: int, per_customer: int, seed: int) -> tuple[int, int, float]:
    """Load one shop; (shop id, orders, seconds)."""
    domain = shop_domain(size, per_customer)
    started = time.perf_counter()
    with connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        # A shop left half loaded by an interrupted run goes first, with its rows.
        for table in ("orders", "refunds", "customer_figures"):
            conn.execute(
                f"DELETE FROM {table} WHERE shop_id IN (SELECT id FROM shops WHERE domain = %s)",
                (domain,),
            )
        conn.execute("DELETE FROM shops WHERE domain = %s", (domain,))
        (shop_id,) = conn.execute(
            "INSERT INTO shops (platform, domain, name, is_demo, created_at, quiet_hours,"
            " frequency_cap, tracking, attribution_days, address, profile)"
            " VALUES ('shopify', %s, 'loading', false, now(), NULL, NULL, true, 5, '[]', '{}')"
            " RETURNING id",
            (domain,),
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS bench_orders (email text, platform_id bigint,"
            " t double precision, cents integer, cancelled boolean)"
        )
        conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS bench_refunds (order_platform_id bigint,"
            " platform_id bigint, cents integer, t double precision)"
        )
        conn.execute("TRUNCATE bench_orders, bench_refunds")
        conn.commit()

        # 1. generate and COPY into staging
        rows = 0
        last_report = 0.0
        for orders, refunds, done in generate(size, per_customer, seed):
            with conn.cursor().copy("COPY bench_orders FROM STDIN") as copy:
                copy.write(orders)
            with conn.cursor().copy("COPY bench_refunds FROM STDIN") as copy:
                copy.write(refunds)
            rows += orders.count("\n")
            if time.perf_counter() - last_report > 2 or done == size:
                last_report = time.perf_counter()
                log(f"  {size:>9,} customers: generated {done:,} customers, {rows:,} orders "
                    f"({last_report - started:.0f}s)")  # fmt: skip
        conn.commit()

        # 2. into orders in time order, in slices of equal size for progress. The secondary
        # indexes are dropped meanwhile and built again after (much faster than keeping them up
        # to date row by row); constraints and their indexes stay.
        conn.execute("CREATE INDEX IF NOT EXISTS bench_orders_t ON bench_orders (t)")
        conn.execute("ANALYZE bench_orders")
        slices = 20 if rows > 200_000 else 1
        (bounds,) = conn.execute(
            "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY t) FROM bench_orders",
            ([i / slices for i in range(1, slices)],),
        ).fetchone()  # type: ignore[misc]
        edges = [float("-inf"), *bounds, float("inf")]
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'orders' AND indexname"
            " NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'orders'::regclass)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.commit()
        moved = 0
        try:
            for i in range(slices):
                cursor = conn.execute(
                    "INSERT INTO orders (shop_id, platform_id, name, email, currency, total_price,"
                    " placed_at, created_at, line_items, discount_codes, cancelled_at)"
                    " SELECT %(shop)s, platform_id::text, '#' || platform_id, email, 'USD',"
                    " to_char(cents / 100.0, 'FM999999990.00'), to_timestamp(t), to_timestamp(t),"
                    " '[]', '[]', CASE WHEN cancelled THEN to_timestamp(t + 86400) END"
                    " FROM bench_orders WHERE t > %(lower)s AND t <= %(upper)s ORDER BY t",
                    {"shop": shop_id, "lower": edges[i], "upper": edges[i + 1]},
                )
                moved += cursor.rowcount
                conn.commit()
                if slices > 1:
                    log(f"  {size:>9,} customers: {moved:,}/{rows:,} orders into `orders` in "
                        f"time order ({time.perf_counter() - started:.0f}s)")  # fmt: skip
        finally:
            conn.rollback()
            conn.execute("SET maintenance_work_mem = '256MB'")
            for name, definition in indexes:
                log(f"  {size:>9,} customers: building {name} "
                    f"({time.perf_counter() - started:.0f}s)")  # fmt: skip
                conn.execute(definition)
            conn.commit()
        conn.execute(
            "INSERT INTO refunds (shop_id, order_platform_id, platform_id, amount, refunded_at)"
            " SELECT %s, order_platform_id::text, 'r' || platform_id,"
            " to_char(cents / 100.0, 'FM999999990.00'), to_timestamp(t) FROM bench_refunds",
            (shop_id,),
        )
        conn.execute("DROP TABLE bench_orders, bench_refunds")
        conn.commit()
    with connect(url, autocommit=True) as conn:
        log(f"  {size:>9,} customers: VACUUM ANALYZE")
        conn.execute("VACUUM ANALYZE orders")
        conn.execute("VACUUM ANALYZE refunds")
    backfill_seconds = backfill(url, shop_id, size)
    with connect(url) as conn:
        conn.execute("UPDATE shops SET name = 'loaded' WHERE id = %s", (shop_id,))
        conn.commit()
    return shop_id, rows, time.perf_counter() - started, backfill_seconds


def backfill(url: str, shop_id: int, size: int) -> float:
    """The shop's customer figures from its orders, by migration 0019's own statement (what an
    existing shop gets on upgrade); its seconds. VACUUM ANALYZE after, as autovacuum would."""
    import importlib.util

    path = ROOT / "migrations" / "versions" / "0019_customer_figures.py"
    spec = importlib.util.spec_from_file_location("migration_0019", path)
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    statement = migration.backfill_sql("postgresql", one_shop=True).replace(":shop_id", "%(shop)s")
    log(f"  {size:>9,} customers: backfilling customer_figures (migration 0019's statement)")
    started = time.perf_counter()
    with connect(url) as conn:
        conn.execute("DELETE FROM customer_figures WHERE shop_id = %s", (shop_id,))
        conn.execute("SET LOCAL work_mem = '256MB'")
        conn.execute(statement, {"shop": shop_id})
        conn.commit()
    seconds = time.perf_counter() - started
    log(f"  {size:>9,} customers: backfilled in {seconds:.1f}s; VACUUM ANALYZE customer_figures")
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE customer_figures")
    return seconds


# --- measuring (in a fresh subprocess) -------------------------------------------------------


def peak_rss_kb() -> float:
    """This process's peak resident set in kB: VmHWM, the high-water mark of its own address
    space. ru_maxrss is not used for the figure: on Linux it carries over the peak of the process
    that spawned this one (the kernel keeps the old address space's high-water mark across exec),
    so a subprocess of a parent that has loaded data would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_kb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def temp_bytes(url: str, name: str) -> int:
    """The database's temporary-file bytes so far. A backend reports its figures when it ends,
    or now and then while it lives, so this first waits (up to 5 s) for the database's other
    connections to close."""
    with connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            (others,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()  # type: ignore[misc]
            if not others:
                break
            time.sleep(0.1)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        (value,) = conn.execute(
            "SELECT temp_bytes FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()  # type: ignore[misc]
        return int(value)


async def _measure(
    query: str, url: str, shop_id: int, tracing: bool, scan_limit: int | None = None
) -> dict[str, object]:
    import os
    import tracemalloc

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from sqlmodel.ext.asyncio.session import AsyncSession

    from app import db
    from app.db import make_engine

    engine = make_engine(url)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    database = url.rsplit("/", 1)[1]
    sync_url = url.replace("postgresql+psycopg://", "postgresql://")
    if query == "scan":
        # scan_shop opens its sessions from the app's settings: point them at the bench database
        # (only in this subprocess), import everything it runs and connect before the clock.
        os.environ["DATABASE_URL"] = url
        db.get_settings.cache_clear()
        import flows.winback  # noqa: F401

        await _prepare_scan(sessions, shop_id)
        async with db.get_engine().connect() as connection:
            await connection.execute(text("SELECT 1"))
    temp_before = temp_bytes(sync_url, database)
    async with engine.connect() as connection:  # connect first: the pool is not part of it
        await connection.execute(text("SELECT 1"))
    rss_before = rss_kb()
    if tracing:
        tracemalloc.start()
    rows = 0
    first = None
    extra: dict[str, object] = {}
    start = time.perf_counter()
    if query == "scan":
        rows, first, extra = await _scan(shop_id, start, scan_limit)
    elif query == SUMMARY:
        rows, extra = await _summaries(sessions, shop_id)
    elif query == MAINTAIN:
        rows, extra = await _maintenance(sessions, shop_id)
    else:
        rows, first = await _read(query, sessions, shop_id, start)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] if tracing else None
    await engine.dispose()
    if query == "scan":
        await db.get_engine().dispose()
    return {
        "query": query,
        "rows": rows,
        "seconds": round(seconds, 3),
        "first_row_seconds": round(first or seconds, 3),
        "peak_rss_mb": mb(peak_rss_kb()),
        "rss_before_query_mb": mb(rss_before),
        "ru_maxrss_mb": mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "tracemalloc_peak_mb": None if traced is None else round(traced / 2**20, 1),
        "pg_temp_mb": round((temp_bytes(sync_url, database) - temp_before) / 2**20, 1),
        **extra,
    }


async def _read(query: str, sessions: Any, shop_id: int, start: float) -> tuple[int, float | None]:
    """Read the baseline, the lapse stream or the RFM stream to the end: (rows, first row s)."""
    from sqlalchemy import select
    from sqlmodel import col

    from app.commerce.models import Order
    from app.customers import repository

    rows = 0
    first = None
    async with sessions() as session:
        if query == "baseline":
            # A select(), not text(): session.stream() of a text() statement ignores yield_per
            # and fetches every row before the first (no server-side cursor).
            statement = (
                select(col(Order.email), col(Order.placed_at), col(Order.total_price))
                .where(col(Order.shop_id) == shop_id)
                .order_by(col(Order.email), col(Order.placed_at))
            )
            result = await session.stream(
                statement.execution_options(yield_per=repository.STREAM_BATCH)
            )
            async for batch in result.partitions():  # as the repository's _stream reads
                if first is None:
                    first = time.perf_counter() - start
                rows += len(batch)
        else:
            if query == "lapsed":
                stream = repository.lapsed_customers(session, shop_id, now=NOW)
            else:
                stream = repository.rfm_scores(session, shop_id)
            async for _ in stream:
                if first is None:
                    first = time.perf_counter() - start
                rows += 1
    return rows, first


async def _summaries(sessions: Any, shop_id: int) -> tuple[int, dict[str, object]]:
    """customer_summary (what every email of a flow other than win-back asks for its segment)
    for SUMMARIES customers picked at random, each in a session of its own: (found, the median
    and the slowest in ms)."""
    from sqlalchemy import text

    from app.customers import repository

    async with sessions() as session:
        picked = await session.exec(
            text("SELECT email FROM customer_figures WHERE shop_id = :shop ORDER BY random()"
                 f" LIMIT {SUMMARIES}"),
            params={"shop": shop_id},
        )  # fmt: skip
        emails = [email for (email,) in picked]
    times = []
    found = 0
    for email in emails:
        started = time.perf_counter()
        async with sessions() as session:
            found += await repository.customer_summary(session, shop_id, email) is not None
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return found, {
        "median_ms": round(times[len(times) // 2], 2),
        "slowest_ms": round(times[-1], 2),
    }


async def _maintenance(sessions: Any, shop_id: int) -> tuple[int, dict[str, object]]:
    """New orders of existing customers stored through commerce.insert_order, as ingest does,
    MAINTENANCE_BATCH per transaction, in rounds that alternate between keeping the figures up
    to date (as built) and not (refresh_figures replaced by a no-op in this process only: the
    write path before customer_figures). Then the orders are deleted and their customers'
    figures recomputed, so the shop is as loaded. (orders stored per mode, seconds of each.)"""
    from datetime import timedelta

    from sqlalchemy import text

    from app.commerce import repository as commerce
    from app.commerce.events import OrderPlaced
    from app.customers import repository as customers

    refresh = customers.refresh_figures

    async def no_refresh(*args: object, **kwargs: object) -> None:
        return None

    async with sessions() as session:
        picked = await session.exec(
            text("SELECT email FROM customer_figures WHERE shop_id = :shop ORDER BY random()"
                 " LIMIT :n"),
            params={"shop": shop_id, "n": 2 * MAINTENANCE_ROUNDS * MAINTENANCE_BATCH},
        )  # fmt: skip
        emails = [email for (email,) in picked]
    spent = {"with": 0.0, "without": 0.0}
    stored = 0
    for round_ in range(MAINTENANCE_ROUNDS):
        modes = ("with", "without") if round_ % 2 == 0 else ("without", "with")
        for mode in modes:
            batch = [emails.pop() for _ in range(MAINTENANCE_BATCH)]
            customers.refresh_figures = refresh if mode == "with" else no_refresh  # type: ignore[assignment]
            started = time.perf_counter()
            async with sessions() as session:
                for email in batch:
                    stored += 1
                    await commerce.insert_order(session, shop_id, OrderPlaced(
                        platform_id=f"bench-m-{stored}", name=f"#m{stored}", checkout_token=None,
                        cart_token=None, email=email, currency="USD", total_price="42.00",
                        placed_at=NOW - timedelta(hours=stored),
                    ))  # fmt: skip
                await session.commit()
            spent[mode] += time.perf_counter() - started
    customers.refresh_figures = refresh  # type: ignore[assignment]
    async with sessions() as session:
        gone = await session.exec(
            text("DELETE FROM orders WHERE shop_id = :shop AND platform_id LIKE 'bench-m-%'"
                 " RETURNING email"),
            params={"shop": shop_id},
        )  # fmt: skip
        await customers.refresh_figures(session, shop_id, [email for (email,) in gone])
        await session.commit()
    each = stored // 2
    return each, {
        "with_seconds": round(spent["with"], 3),
        "without_seconds": round(spent["without"], 3),
        "with_ms_per_order": round(spent["with"] / each * 1000, 3),
        "without_ms_per_order": round(spent["without"] / each * 1000, 3),
        "ratio": round(spent["with"] / spent["without"], 2),
    }


async def _prepare_scan(sessions: Any, shop_id: int) -> None:
    """Before the clock: the shop gets the default flows (win-back on, as installed) and loses
    any enrollments an earlier scan wrote, so every run enrolls the same customers."""
    from sqlalchemy import delete
    from sqlmodel import col

    from app.shops.models import Shop
    from flows import service as flows_service
    from flows.models import Enrollment

    async with sessions() as session:
        await session.exec(delete(Enrollment).where(col(Enrollment.shop_id) == shop_id))
        shop = await session.get(Shop, shop_id)
        assert shop is not None
        await flows_service.install_defaults(session, shop)
        await session.commit()


class _Enough(Exception):
    """Raised from scan_shop's progress callback to stop a scan at --scan-limit."""


async def _scan(
    shop_id: int, start: float, limit: int | None
) -> tuple[int, float | None, dict[str, object]]:
    """flows.winback.scan_shop as the daily job runs it (without Redis: the jobs are not
    enqueued, the sweeper would find the steps when due): (enrollments written, first batch s,
    lapsed seen and the resident set after the first batch and at the end). With `limit`, the
    scan is stopped (from its progress callback, right after a batch is committed) once that
    many lapsed customers are read."""
    from flows import winback

    seen = {"lapsed": 0, "started": 0}
    first: list[float] = []
    samples: list[float] = []
    last = [start]

    def progress(lapsed: int, started: int) -> None:
        now = time.perf_counter()
        seen["lapsed"], seen["started"] = lapsed, started
        samples.append(rss_kb())
        if not first:
            first.append(now - start)
        if now - last[0] > 5:
            last[0] = now
            log(f"    scan: {lapsed:,} lapsed read, {started:,} enrolled, "
                f"RSS {mb(samples[-1])} MB ({now - start:.0f}s)")  # fmt: skip
        if limit is not None and lapsed >= limit:
            raise _Enough

    try:
        started = await winback.scan_shop(shop_id, NOW, progress=progress)
        stopped = False
    except _Enough:
        started, stopped = seen["started"], True
    return (
        started,
        (first[0] if first else None),
        {
            "lapsed_seen": seen["lapsed"],
            "stopped_at_limit": stopped,
            "rss_after_first_batch_mb": mb(samples[0]) if samples else None,
            "rss_at_end_mb": mb(samples[-1]) if samples else None,
        },
    )


async def _explain(url: str, shop_id: int) -> dict[str, object]:
    """EXPLAIN (ANALYZE, BUFFERS) of the lapse query as `lapsed_customers` builds it (with its
    defaults), and the plan's nodes by the time spent in each alone."""
    from datetime import timedelta as _td

    from sqlalchemy import text
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql.expression import ClauseElement, Executable

    from app.customers import repository
    from app.db import make_engine

    class Explain(Executable, ClauseElement):
        inherit_cache = False

        def __init__(self, statement: object) -> None:
            self.statement = statement

    @compiles(Explain, "postgresql")
    def _compile(element: Explain, compiler: object, **kw: object) -> str:
        inner = compiler.process(element.statement, **kw)  # type: ignore[attr-defined]
        return f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {inner}"

    from sqlmodel.ext.asyncio.session import AsyncSession

    engine = make_engine(url)
    async with AsyncSession(engine) as session:
        # As the repository runs it: its break-points first, without JIT.
        await session.exec(text("SET LOCAL jit = off"))  # type: ignore[call-overload]
        breaks = await repository._break_points(session, shop_id, 0.02)
        assert breaks is not None
        query = repository._scored(shop_id, breaks).where(
            repository._lapsed(now=NOW, k=2.0, one_time_after=_td(days=90), min_lapse=_td(0))
        )
        (plan,) = (await session.exec(Explain(query))).one()  # type: ignore[call-overload]
    await engine.dispose()
    if isinstance(plan, str):
        plan = json.loads(plan)
    top = plan[0]
    nodes: list[dict[str, object]] = []

    def walk(node: dict[str, object], within: str = "") -> None:
        children = node.get("Plans", []) or []
        loops = float(node.get("Actual Loops", 1) or 1)  # type: ignore[arg-type]
        total = float(node["Actual Total Time"]) * loops  # type: ignore[arg-type]
        inner = sum(
            float(c["Actual Total Time"]) * float(c.get("Actual Loops", 1) or 1)  # type: ignore[index,arg-type]
            for c in children  # type: ignore[union-attr]
        )
        label = str(node["Node Type"])
        if node.get("Index Name"):
            label += f" {node['Index Name']}"
        if node.get("Sort Key"):
            label += f" [{', '.join(node['Sort Key'])}]"  # type: ignore[arg-type]
        if node.get("Parent Relationship") == "SubPlan":
            within = "(correlated subquery, once per order) "
        label = within + label
        nodes.append({
            "node": label,
            "self_seconds": round(max(total - inner, 0) / 1000, 2),
            "rows": node.get("Actual Rows"),
            "loops": node.get("Actual Loops"),
            "sort": node.get("Sort Method"),
            "disk_kb": node.get("Sort Space Used") if node.get("Sort Space Type") == "Disk"
            else None,
        })  # fmt: skip
        for child in children:  # type: ignore[union-attr]
            walk(child, within)

    walk(top["Plan"])
    nodes.sort(key=lambda n: -float(n["self_seconds"]))  # type: ignore[arg-type]
    return {
        "execution_seconds": round(float(top["Execution Time"]) / 1000, 2),
        "jit_seconds": round(float(top.get("JIT", {}).get("Timing", {}).get("Total", 0)) / 1000, 2)
        if isinstance(top.get("JIT", {}).get("Timing", {}).get("Total"), (int, float))
        else None,
        "nodes": nodes,
        "plan": plan,
    }


def measure_in_subprocess(
    query: str, url: str, shop_id: int, tracing: bool, scan_limit: int | None = None
) -> dict[str, object]:
    command = [sys.executable, __file__, "--measure", query, "--url", url, "--shop-id",
               str(shop_id)] + (["--tracemalloc"] if tracing else [])  # fmt: skip
    if scan_limit is not None:
        command += ["--scan-limit", str(scan_limit)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    ticker = threading.Event()

    def tick() -> None:
        while not ticker.wait(5):
            log(f"    {query}: {time.perf_counter() - started:.0f}s …")

    threading.Thread(target=tick, daemon=True).start()
    out, _ = process.communicate()
    ticker.set()
    if process.returncode:
        raise SystemExit(f"measuring {query} failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------


def report(results: list[dict[str, object]], args: argparse.Namespace) -> dict[str, object]:
    print()
    if args.repeat > 1:
        print(f"seconds: the median of {args.repeat} runs (all runs in the last column); "
              "peak MB: the largest")  # fmt: skip
    print(f"{'customers':>10} {'orders':>9} {'query':<9} {'rows':>9} {'seconds':>8} "
          f"{'1st row':>8} {'x base':>7} {'peak MB':>8} {'RSS before':>10} {'PG temp MB':>10}"
          + ("  tracemalloc MB" if args.tracemalloc else "")
          + ("  runs" if args.repeat > 1 else ""))  # fmt: skip
    for size in results:
        base = size["baseline"]["seconds"]  # type: ignore[index]
        for query in (q for q in (*QUERIES, SCAN) if q in size):
            r = size[query]  # type: ignore[index]
            ratio = "base" if query == "baseline" else f"{r['seconds'] / base:.2f}x"
            print(f"{size['customers']:>10,} {size['orders']:>9,} {query:<9} {r['rows']:>9,} "
                  f"{r['seconds']:>8.2f} {r['first_row_seconds']:>8.2f} {ratio:>7} "
                  f"{r['peak_rss_mb']:>8} {r['rss_before_query_mb']:>10} {r['pg_temp_mb']:>10}"
                  + (f"  {r['tracemalloc_peak_mb']:>15}" if args.tracemalloc else "")
                  + ("  " + " ".join(f"{t:.2f}" for t in r["runs_seconds"])
                     if args.repeat > 1 else ""))  # fmt: skip
    growth = []
    if len(results) > 1:
        print("\ngrowth from one size to the next (time ratio / size ratio; 1.0 is linear):")
        for smaller, larger in zip(results, results[1:], strict=False):
            factor = larger["customers"] / smaller["customers"]  # type: ignore[operator]
            line = {"from": smaller["customers"], "to": larger["customers"], "size_x": factor}
            parts = []
            for query in (q for q in (*QUERIES, SCAN) if q in smaller and q in larger):
                t = larger[query]["seconds"] / smaller[query]["seconds"]  # type: ignore[index]
                m = larger[query]["peak_rss_mb"] / smaller[query]["peak_rss_mb"]  # type: ignore[index]
                line[f"{query}_time_x"] = round(t, 2)
                line[f"{query}_peak_mb_x"] = round(m, 2)
                parts.append(f"{query} time {t:.1f}x ({t / factor:.2f}), peak MB {m:.2f}x")
            growth.append(line)
            print(f"  {smaller['customers']:,} -> {larger['customers']:,} ({factor:.0f}x): "
                  + "; ".join(parts))  # fmt: skip
    verdict = {}
    biggest = results[-1]
    scale = TARGET_SIZE / biggest["customers"]  # type: ignore[operator]
    print(f"\ntargets at {TARGET_SIZE:,} customers: <= {TARGET_SECONDS:.0f} s, "
          f"<= {TARGET_MB:.0f} MB peak")  # fmt: skip
    for query in ("lapsed", "rfm"):
        r = biggest[query]  # type: ignore[index]
        if biggest["customers"] == TARGET_SIZE:
            ok = r["seconds"] <= TARGET_SECONDS and r["peak_rss_mb"] <= TARGET_MB
            verdict[query] = {"met": ok, "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]}
            print(f"  {query}: {r['seconds']:.1f} s, {r['peak_rss_mb']} MB peak: "
                  f"{'met' if ok else 'NOT met'}")  # fmt: skip
        else:
            # Not measured at 1M: a linear extrapolation, said as such.
            guess = r["seconds"] * scale
            verdict[query] = {"met": None, "linear_estimate_seconds": round(guess, 1)}
            print(f"  {query}: not run at {TARGET_SIZE:,}; linear from "
                  f"{biggest['customers']:,}: about {guess:.0f} s")  # fmt: skip
    print("\ncustomer_figures (backfill: migration 0019's statement for the shop; summary: "
          f"customer_summary of {SUMMARIES} customers one by one; maintenance: orders stored "
          f"through commerce.insert_order, {MAINTENANCE_BATCH} a transaction, with the figures "
          "kept up to date against without):")  # fmt: skip
    for size in results:
        backfilled = size.get("backfill_seconds")
        summary = size.get(SUMMARY)
        kept = size.get(MAINTAIN)
        parts = [f"backfill {backfilled:.1f} s" if backfilled is not None else "backfill -"]
        if summary:
            parts.append(f"summary median {summary['median_ms']} ms, slowest "  # type: ignore[index]
                         f"{summary['slowest_ms']} ms")  # type: ignore[index]  # fmt: skip
        if kept:
            parts.append(f"{kept['rows']} orders: {kept['with_ms_per_order']} ms an order with, "  # type: ignore[index]
                         f"{kept['without_ms_per_order']} ms without ({kept['ratio']}x)")  # type: ignore[index]  # fmt: skip
        print(f"  {size['customers']:>9,} customers: " + "; ".join(parts))
    scanned = [size for size in results if SCAN in size]
    if scanned:
        from flows.winback import BATCH

        print(f"\nflows.winback.scan_shop (rows: enrollments written; 1st row: its first batch "
              f"of {BATCH} lapsed customers read):")  # fmt: skip
        for size in scanned:
            r = size[SCAN]  # type: ignore[index]
            cut = " (stopped there: --scan-limit)" if r.get("stopped_at_limit") else ""
            print(f"  {size['customers']:>9,} customers: {r['lapsed_seen']:,} lapsed read{cut}, "
                  f"{r['rows']:,} enrolled in {r['seconds']:.1f} s "
                  f"({r['rows'] / max(r['seconds'], 1e-9):,.0f}/s); RSS after the first batch "
                  f"{r['rss_after_first_batch_mb']} MB, at the end {r['rss_at_end_mb']} MB, "
                  f"peak {r['peak_rss_mb']} MB (target <= {TARGET_MB:.0f} MB)")  # fmt: skip
    return {"growth": growth, "targets": verdict}


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--orders-per-customer", type=int, default=5)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="postgresql://user@host:port")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", action="store_true", help="reuse the database and its shops")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each query this many times (fresh processes); the median is shown",
    )
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also EXPLAIN ANALYZE the lapse query at the largest size: where its time goes",
    )
    parser.add_argument(
        "--scan",
        action="store_true",
        help="also measure flows.winback.scan_shop (lapse stream read, enrollments written)",
    )
    parser.add_argument(
        "--scan-sizes",
        help="the sizes to run --scan at (default: all of --sizes); it writes an enrollment "
        "per lapsed customer, so it takes far longer than the queries",
    )
    parser.add_argument(
        "--scan-limit",
        type=int,
        help="stop each --scan once this many lapsed customers are read (at the batch's commit): "
        "a scan of 1M customers writes an enrollment for each of about 500k",
    )
    parser.add_argument(
        "--backfill-again",
        action="store_true",
        help="with --reuse: rebuild reused shops' figures by the backfill, timed",
    )
    parser.add_argument(
        "--measure", choices=(*QUERIES, SCAN, SUMMARY, MAINTAIN, "explain"), help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--shop-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure == "explain":
        print(json.dumps(asyncio.run(_explain(args.url, args.shop_id))))
        return
    if args.measure:
        result = asyncio.run(
            _measure(args.measure, args.url, args.shop_id, args.tracemalloc, args.scan_limit)
        )
        print(json.dumps(result))
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    scan_sizes = set(sizes if not args.scan_sizes else map(int, args.scan_sizes.split(",")))
    server = args.server.rstrip("/")
    url = f"{server}/{args.database}"
    if create_database(server, args.database, reuse=args.reuse):
        log(f"created {args.database}; migrating")
    from app import migrate

    migrate.upgrade(url)
    results: list[dict[str, object]] = []
    explained: dict[str, object] | None = None
    try:
        for size in sizes:
            domain = shop_domain(size, args.orders_per_customer)
            found = find_shop(url, domain) if args.reuse else None
            backfill_seconds = None
            if found:
                shop_id, orders = found
                load_seconds = None
                log(f"{size:,} customers: reusing shop {shop_id} ({orders:,} orders)")
                if args.backfill_again:
                    backfill_seconds = backfill(url, shop_id, size)
            else:
                log(f"{size:,} customers: loading")
                shop_id, orders, load_seconds, backfill_seconds = load(
                    url, size, args.orders_per_customer, args.seed + size
                )
                log(f"{size:,} customers: {orders:,} orders loaded in {load_seconds:.0f}s")
            entry: dict[str, object] = {
                "customers": size,
                "orders": orders,
                "load_seconds": None if load_seconds is None else round(load_seconds, 1),
                "backfill_seconds": None
                if backfill_seconds is None
                else round(backfill_seconds, 2),
            }
            async_url = url.replace("postgresql://", "postgresql+psycopg://")
            queries = (*QUERIES, SUMMARY, MAINTAIN)
            if args.scan and size in scan_sizes:
                queries += (SCAN,)
            for query in queries:
                runs = []
                for attempt in range(args.repeat):
                    count = f" ({attempt + 1}/{args.repeat})" if args.repeat > 1 else ""
                    log(f"{size:,} customers: measuring {query} in a fresh process{count}")
                    runs.append(measure_in_subprocess(query, async_url, shop_id, args.tracemalloc,
                                                      args.scan_limit))  # fmt: skip
                runs.sort(key=lambda run: float(run["seconds"]))  # type: ignore[arg-type]
                entry[query] = {
                    **runs[len(runs) // 2],  # the median run (the upper one of an even count)
                    "runs_seconds": [run["seconds"] for run in runs],
                    "peak_rss_mb": max(float(run["peak_rss_mb"]) for run in runs),  # type: ignore[arg-type]
                }
                log(f"    {query}: {entry[query]['rows']:,} rows in "  # type: ignore[index]
                    f"{entry[query]['seconds']:.2f}s, peak {entry[query]['peak_rss_mb']} MB")  # type: ignore[index]  # fmt: skip
            results.append(entry)
        if args.explain and results:
            log(f"{sizes[-1]:,} customers: EXPLAIN ANALYZE of the lapse query")
            explained = measure_in_subprocess("explain", async_url, shop_id, False)
    finally:
        if not args.keep:
            log(f"dropping {args.database}")
            drop_database(server, args.database)
    summary = report(results, args)
    if explained is not None:
        print(f"\nwhere the lapse query's time goes at {sizes[-1]:,} customers (EXPLAIN "
              f"ANALYZE, {explained['execution_seconds']} s with its own timing overhead; "
              f"JIT {explained['jit_seconds']} s), time in each plan node alone:")  # fmt: skip
        for node in explained["nodes"][:8]:  # type: ignore[index]
            disk = f", sort spilled {node['disk_kb'] / 1024:.0f} MB" if node["disk_kb"] else ""
            print(f"  {node['self_seconds']:>7.2f} s  {node['node'][:90]}  "
                  f"(rows {node['rows']:,} x {node['loops']:,} loops{disk})")  # fmt: skip
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({
        "now": NOW.isoformat(),
        "orders_per_customer": args.orders_per_customer,
        "memory": "peak_rss_mb: VmHWM (peak resident set) of a fresh subprocess per query, "
                  "whole process; ru_maxrss_mb: getrusage's figure, which on Linux includes the "
                  "spawning parent's peak; tracemalloc_peak_mb: Python allocations only",
        "explain": explained,
        "baseline": "stream the shop's orders (email, placed_at, total_price) in index order "
                    "through the same server-side cursor",
        "sizes": results,
        **summary,
    }, indent=2) + "\n")  # fmt: skip
    print(f"written to {out}")


if __name__ == "__main__":
    main()
