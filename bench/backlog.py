"""A backlog of due steps: N abandoned-cart reminders due at once, queued and sent by the worker.

Run: .venv/bin/python bench/backlog.py [--steps 100000] [--workers 1] [--database sqlite|postgres]
     [--transport smtp|outbox] [--skip-baseline]

What it does:
1. A temporary data folder (REBOUND_HOME) and database: an SQLite file in it (default), or with
   --database postgres a fresh `rebound_bench_backlog` on postgresql://postgres@127.0.0.1:5432
   (never `test`), migrated. Redis is redis://127.0.0.1:6379/9 (--redis-db; never 0): only that
   database is flushed, before and after.
2. One Shopify shop with the default flows (no access token, so no call leaves the machine: the
   email uses the checkout's own item data; no quiet hours, no frequency cap) and N checkouts with
   two items, each enrolled in abandoned cart with its first reminder due an hour ago: the rows
   `engine.enroll` would have written, bulk-inserted.
3. Enqueue: `flows.tasks.sweep` offers every due step to Redis, as the worker's cron does every
   minute. Reported: its time, and Redis memory per pending step (INFO memory `used_memory` after
   minus before, divided by the jobs queued; also the sum of MEMORY USAGE over the keys, which
   other clients of the same server cannot skew).
4. Send: `rebound worker` process(es) (--workers) with SMTP_URL pointing at an SMTP sink (an
   aiosmtpd subprocess that counts messages; --transport outbox counts the outbox's files
   instead). Time from starting the workers until N emails have arrived, with progress every few
   seconds; then the database is checked (sends marked sent, enrollments moved on) and the worker
   log is counted for retries. The workers' own startup sweep and the minute cron run too, as in
   production.
5. Baseline, in the same run: N plain arq no-op jobs (same function arguments and id shape)
   enqueued the same way and run by a plain arq worker with the same options as Rebound's
   (max_jobs, poll_delay, keep_result), the same number of processes. Ratios: Redis bytes per
   job, enqueue time, and time to drain.

Also reported: the worker processes' CPU seconds (from /proc) against the wall time, and their
peak resident set (VmHWM). With --enqueue-only it stops after step 3 (and the baseline's
enqueue): Redis memory per step at a size whose sending would take too long.

Writes bench/backlog.json (bench/backlog-enqueue.json with --enqueue-only). Progress goes to
stderr. --keep keeps the data folder (and the PostgreSQL database); the Redis db is flushed
either way.
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_DATABASE = "rebound_bench_backlog"
SHOP_DOMAIN = "bench-backlog.myshopify.com"
BATCH = 5000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, field: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


# --- helper processes: the SMTP sink and the no-op worker ------------------------------------


def run_sink(port: int, count_file: Path) -> None:
    """An SMTP server that accepts everything and keeps the number of messages in a file."""
    from aiosmtpd.controller import Controller

    class Counter:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            self.count += 1
            return "250 OK"

    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    stop = False

    def finish(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    partial = count_file.with_suffix(".part")
    while not stop:
        partial.write_text(str(counter.count))
        os.replace(partial, count_file)
        time.sleep(0.2)
    partial.write_text(str(counter.count))
    os.replace(partial, count_file)
    controller.stop()


async def noop(ctx: dict[str, Any], enrollment_id: int, step: int) -> str:
    return "sent"


def run_noop_worker(redis_url: str) -> None:
    """A plain arq worker with Rebound's worker options, running only `noop`; stops when the
    queue is empty (burst)."""
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    from app.worker import make_worker

    reference = make_worker(redis_settings=RedisSettings.from_dsn(redis_url))
    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(redis_url),
        max_jobs=reference.max_jobs,
        poll_delay=reference.poll_delay_s,
        keep_result=reference.keep_result_s,
        max_tries=reference.max_tries,
        burst=True,
    )
    worker.run()


# --- set-up ----------------------------------------------------------------------------------


def configure(args: argparse.Namespace, home: Path) -> str:
    """Environment for this process and the workers; returns the database URL."""
    if args.redis_db == 0:
        raise SystemExit("refusing Redis db 0: other engineers' tests use it")
    if args.database == "postgres":
        import psycopg

        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        url = f"{args.server}/{PG_DATABASE}"
    else:
        url = f"sqlite:///{home / 'rebound.db'}"
    os.environ.update({
        "REBOUND_HOME": str(home),
        "DATABASE_URL": url,
        "REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
        "SECRET_KEY": "bench-backlog-secret",
        "APP_URL": "https://rebound.bench",
        "MAIL_FROM": "Bench Shop <shop@rebound.bench>",
    })  # fmt: skip
    for unset in ("MAIL_TRANSPORT", "SMTP_URL"):
        os.environ.pop(unset, None)
    return url


async def populate(steps: int) -> float:
    """The shop, its flows, and `steps` checkouts enrolled with their first step due; seconds."""
    from sqlalchemy import insert, select

    from app.commerce.models import Checkout
    from app.db import sessionmaker, utcnow
    from app.shops.models import Shop
    from flows import repository as flows_repository
    from flows import service as flows_service
    from flows.definitions import ABANDONED_CART, settings_for
    from flows.models import Enrollment, EnrollmentStatus

    started = time.perf_counter()
    now = utcnow()
    active = now - timedelta(hours=2)  # the shopper left two hours ago
    async with sessionmaker()() as session:
        shop = Shop(platform="shopify", domain=SHOP_DOMAIN, name="Bench Wool", currency="USD",
                    locale="en", quiet_hours=None, frequency_cap=None)  # fmt: skip
        session.add(shop)
        await session.flush()
        await flows_service.install_defaults(session, shop)
        assert shop.id is not None
        flow = await flows_repository.get_flow(session, shop.id, ABANDONED_CART)
        assert flow is not None
        await session.commit()
        shop_id = shop.id
        flow_steps, version = flow.steps, flow.version
        settings = settings_for(ABANDONED_CART, flow.settings)
        due = active + timedelta(seconds=flow_steps[0]["delay"])
        items = [
            {"variant_id": "4001", "product_id": "3001", "title": "Merino scarf",
             "variant_title": "Grey", "quantity": 1, "price": "35.00"},
            {"variant_id": "4002", "product_id": "3002", "title": "Wool socks",
             "variant_title": "M", "quantity": 2, "price": "7.50"},
        ]  # fmt: skip
    checkouts, enrollments = Checkout.__table__, Enrollment.__table__  # type: ignore[attr-defined]
    for first in range(0, steps, BATCH):
        numbers = range(first, min(first + BATCH, steps))
        async with sessionmaker()() as session:
            connection = await session.connection()
            await connection.execute(
                insert(checkouts),
                [
                    {"shop_id": shop_id, "token": f"bench-{n}", "email": f"shopper{n}@example.com",
                     "first_name": "Ada", "locale": "en", "currency": "USD",
                     "subtotal_price": "50.00", "total_price": "50.00", "line_items": items,
                     "restore_url": f"https://{SHOP_DOMAIN}/checkouts/bench-{n}/recover",
                     "started_at": active, "platform_updated_at": active, "updated_at": active}
                    for n in numbers
                ],
            )  # fmt: skip
            rows = (
                await connection.execute(
                    select(checkouts.c.id, checkouts.c.email).where(
                        checkouts.c.shop_id == shop_id,
                        checkouts.c.token.in_([f"bench-{n}" for n in numbers]),
                    )
                )
            ).all()
            await connection.execute(
                insert(enrollments),
                [
                    {"shop_id": shop_id, "flow": ABANDONED_CART, "subject": f"checkout:{cid}",
                     "checkout_id": cid, "email": email, "steps": flow_steps,
                     "flow_version": version, "context": {"settings": settings},
                     "status": EnrollmentStatus.ACTIVE, "next_step": 0, "due_at": due,
                     "created_at": active, "updated_at": active}
                    for cid, email in rows
                ],
            )  # fmt: skip
            await session.commit()
        done = min(first + BATCH, steps)
        if done % (BATCH * 4) == 0 or done == steps:
            log(f"  {done:,}/{steps:,} enrollments ({time.perf_counter() - started:.0f}s)")
    return time.perf_counter() - started


async def redis_memory(pool: Any) -> int:
    info = await pool.info("memory")
    return int(info["used_memory"])


async def key_bytes(pool: Any) -> tuple[int, int]:
    """(keys, sum of MEMORY USAGE) over the selected Redis db."""
    keys = total = 0
    async for batch in _scan_batches(pool):
        pipe = pool.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for used in await pipe.execute():
            total += int(used or 0)
        keys += len(batch)
    return keys, total


async def _scan_batches(pool: Any):  # type: ignore[no-untyped-def]
    cursor = 0
    while True:
        cursor, batch = await pool.scan(cursor, count=2000)
        if batch:
            yield batch
        if cursor == 0:
            return


async def enqueue_rebound(pool: Any) -> dict[str, Any]:
    from flows.tasks import sweep

    await pool.flushdb()
    before = await redis_memory(pool)
    started = time.perf_counter()
    outcome = await sweep({"redis": pool})
    seconds = time.perf_counter() - started
    after = await redis_memory(pool)
    queued = await pool.zcard("arq:queue")
    keys, summed = await key_bytes(pool)
    return {"outcome": outcome, "seconds": seconds, "queued": queued,
            "used_memory_delta": after - before, "keys": keys,
            "memory_usage_sum": summed}  # fmt: skip


async def enqueue_noop(pool: Any, steps: int) -> dict[str, Any]:
    """The same number of jobs, same argument types and id shape, enqueued one by one as
    `Jobs.enqueue` does."""
    await pool.flushdb()
    before = await redis_memory(pool)
    due = datetime.now(UTC) - timedelta(hours=1)
    started = time.perf_counter()
    for n in range(steps):
        await pool.enqueue_job("noop", n + 1, 0, _job_id=f"noop:{n + 1}:0:{int(due.timestamp())}",
                               _defer_until=due)  # fmt: skip
    seconds = time.perf_counter() - started
    after = await redis_memory(pool)
    queued = await pool.zcard("arq:queue")
    keys, summed = await key_bytes(pool)
    return {"seconds": seconds, "queued": queued, "used_memory_delta": after - before,
            "keys": keys, "memory_usage_sum": summed}  # fmt: skip


# --- draining --------------------------------------------------------------------------------


def drain(
    label: str,
    commands: list[list[str]],
    env: dict[str, str],
    home: Path,
    done: Any,
    total: int,
    timeout: float,
    *,
    until_exit: bool = False,
) -> dict[str, Any]:
    """Start the worker processes; wait until `done()` reaches `total` (or they exit); stop them.
    Reports seconds, the worker processes' peak memory and the progress samples."""
    logs = [open(home / f"{label}-worker-{i}.log", "w") for i in range(len(commands))]  # noqa: SIM115
    started = time.perf_counter()
    workers = [
        subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
        for command, out in zip(commands, logs, strict=True)
    ]
    peaks: dict[int, float] = {}
    cpu: dict[int, float] = {}
    samples = []
    last = -1.0
    count = 0
    finished = None
    try:
        while True:
            count = done()
            elapsed = time.perf_counter() - started
            for worker in workers:
                peak = status_kb(worker.pid, "VmHWM")
                if peak:
                    peaks[worker.pid] = peak
                used = cpu_seconds(worker.pid)
                if used is not None:
                    cpu[worker.pid] = used
            if count >= total and finished is None:
                finished = elapsed
                if not until_exit:
                    break
            if any(worker.poll() not in (None, 0) for worker in workers):
                log(f"  {label}: a worker failed; see its log in {home} (--keep keeps it)")
                break
            if until_exit and all(worker.poll() is not None for worker in workers):
                count = done()
                finished = finished or elapsed
                break
            if elapsed - last >= 5:
                last = elapsed
                rate = count / elapsed if elapsed else 0
                samples.append({"seconds": round(elapsed, 1), "done": count})
                log(f"  {label}: {count:,}/{total:,} after {elapsed:.0f}s ({rate:,.0f}/s)")
            if elapsed > timeout:
                log(f"  {label}: gave up after {timeout:.0f}s")
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for out in logs:
            out.close()
    seconds = finished if finished is not None else time.perf_counter() - started
    return {
        "done": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1) if seconds else None,
        "worker_peak_rss_mb": [round(kb / 1024, 1) for kb in peaks.values()],
        # CPU seconds each worker used up to the last sample, against `seconds` of wall time
        "worker_cpu_seconds": [round(used, 1) for used in cpu.values()],
        "completed": count >= total,
        "samples": samples,
    }


def start_sink(args: argparse.Namespace, home: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    """The SMTP sink subprocess, listening; (process, its count file, its port)."""
    port, count_file = free_port(), home / "sink.count"
    count_file.write_text("0")
    process = subprocess.Popen([sys.executable, __file__, "--sink", str(port),
                                "--count-file", str(count_file)])  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            break
        time.sleep(0.1)
    return process, count_file, port


def send_all(
    args: argparse.Namespace, home: Path, sink: tuple[subprocess.Popen[bytes], Path, int] | None
) -> dict[str, Any]:
    """`rebound worker` process(es) until every step's email has arrived."""
    env = dict(os.environ)
    if sink is not None:
        count_file = sink[1]
        env["SMTP_URL"] = f"smtp://127.0.0.1:{sink[2]}"

        def delivered() -> int:
            try:
                return int(count_file.read_text() or 0)
            except (OSError, ValueError):
                return 0
    else:
        env["MAIL_TRANSPORT"] = "outbox"
        outbox = home / "outbox"

        def delivered() -> int:
            if not outbox.exists():
                return 0
            return sum(
                1 for folder in outbox.iterdir() for entry in os.scandir(folder)
                if entry.name.endswith(".eml")
            )  # fmt: skip

    rebound = str(Path(sys.executable).parent / "rebound")
    if not Path(rebound).exists():
        rebound = shutil.which("rebound") or rebound
    log(f"sending: {args.workers} `rebound worker` process(es), {args.transport} transport")
    sink_cpu_before = cpu_seconds(sink[0].pid) if sink else None
    sent = drain("rebound", [[rebound, "worker"]] * args.workers, env, home, delivered,
                 args.steps, args.timeout)  # fmt: skip
    if sink is not None and sink_cpu_before is not None:
        sent["sink_cpu_seconds"] = round((cpu_seconds(sink[0].pid) or 0) - sink_cpu_before, 1)
    logs = sorted(home.glob("rebound-worker-*.log"))
    sent["retries_logged"] = count_lines(logs, "not sent (")
    sent["errors_logged"] = count_lines(logs, " ERROR ")
    return sent


async def check_database() -> dict[str, int]:
    from sqlalchemy import func, select

    from app.db import dispose_engine, sessionmaker
    from flows.models import Enrollment, Send, SendStatus

    async with sessionmaker()() as session:
        connection = await session.connection()

        async def count(query: Any) -> int:
            return int((await connection.execute(query)).scalar_one())

        sent = await count(
            select(func.count()).select_from(Send).where(Send.status == SendStatus.SENT)
        )
        claimed = await count(select(func.count()).select_from(Send))
        moved_on = await count(
            select(func.count()).select_from(Enrollment).where(Enrollment.next_step == 1)
        )
    await dispose_engine()
    return {"sends_sent": sent, "sends_claimed": claimed, "enrollments_on_step_2": moved_on}


def count_lines(paths: list[Path], needle: str) -> int:
    total = 0
    for path in paths:
        with open(path, errors="replace") as handle:
            total += sum(1 for line in handle if needle in line)
    return total


# --- main ------------------------------------------------------------------------------------


async def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    from arq import create_pool
    from arq.connections import RedisSettings

    from app import migrate
    from app.db import dispose_engine
    from app.settings import get_settings

    log("migrating")
    migrate.upgrade(get_settings().database)
    log(f"creating {args.steps:,} due abandoned-cart enrollments")
    populate_seconds = await populate(args.steps)
    await dispose_engine()
    pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
    try:
        log("enqueueing: flows.tasks.sweep")
        enqueued = await enqueue_rebound(pool)
    finally:
        await dispose_engine()
        await pool.aclose()
    return enqueued, populate_seconds


async def prepare_noop(steps: int) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
    try:
        return await enqueue_noop(pool, steps)
    finally:
        await pool.aclose()


async def flush() -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
    try:
        await pool.flushdb()
    finally:
        await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="postgresql://user@host:port")
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument("--transport", choices=("smtp", "outbox"), default="smtp")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per drain")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--enqueue-only",
        action="store_true",
        help="stop after queueing (Redis memory, enqueue time); writes backlog-enqueue.json",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data folder and database")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--noop-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink(args.sink, args.count_file)
        return
    if args.noop_worker:
        run_noop_worker(args.noop_worker)
        return

    home = Path(tempfile.mkdtemp(prefix="rebound-bench-backlog-"))
    url = configure(args, home)
    log(f"data folder {home}; database {url.split('@')[-1]}; Redis {os.environ['REDIS_URL']}")
    sink = None
    result: dict[str, Any] = {"steps": args.steps, "workers": args.workers,
                              "database": args.database, "transport": args.transport}  # fmt: skip
    try:
        enqueued, populate_seconds = asyncio.run(prepare(args))
        result["populate_seconds"] = round(populate_seconds, 1)
        result["enqueue"] = enqueued
        log(f"  {enqueued['outcome']} in {enqueued['seconds']:.1f}s; Redis +"
            f"{enqueued['used_memory_delta'] / 2**20:.1f} MB")  # fmt: skip

        if not args.enqueue_only:
            sink = start_sink(args, home) if args.transport == "smtp" else None
            result["send"] = send_all(args, home, sink)
            result["database_after"] = asyncio.run(check_database())
        asyncio.run(flush())

        if not args.skip_baseline:
            log(f"baseline: {args.steps:,} plain arq no-op jobs")
            result["noop_enqueue"] = asyncio.run(prepare_noop(args.steps))
            log(f"  enqueued in {result['noop_enqueue']['seconds']:.1f}s")
        if not args.skip_baseline and not args.enqueue_only:
            import redis

            client = redis.Redis.from_url(os.environ["REDIS_URL"])

            def noop_done() -> int:
                return args.steps - int(client.zcard("arq:queue"))  # type: ignore[arg-type]

            result["noop_send"] = drain(
                "no-op",
                [[sys.executable, __file__, "--noop-worker", os.environ["REDIS_URL"]]]
                * args.workers,
                dict(os.environ), home, noop_done, args.steps, args.timeout, until_exit=True,
            )  # fmt: skip
    finally:
        if sink is not None:
            sink[0].send_signal(signal.SIGTERM)
            sink[0].wait(timeout=10)
        asyncio.run(flush())
        if args.database == "postgres" and not args.keep:
            import psycopg

            with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            log(f"kept {home}")

    report(result)
    out = Path(__file__).with_name("backlog-enqueue.json" if args.enqueue_only else "backlog.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


def report(result: dict[str, Any]) -> None:
    steps = result["steps"]
    enqueue, send = result["enqueue"], result.get("send")
    noop_enqueue, noop_send = result.get("noop_enqueue"), result.get("noop_send")
    print()
    print(f"{steps:,} due abandoned-cart steps, {result['workers']} worker process(es), "
          f"{result['database']}, {result['transport']} transport")  # fmt: skip
    per_step = enqueue["used_memory_delta"] / max(enqueue["queued"], 1)
    per_key = enqueue["memory_usage_sum"] / max(enqueue["queued"], 1)
    print(f"\n{'':<34}{'rebound':>14}{'arq no-op':>14}{'ratio':>8}")

    def row(label: str, mine: float, base: float | None, unit: str, digits: int = 1) -> None:
        ratio = f"{mine / base:.2f}x" if base else ""
        theirs = f"{base:,.{digits}f}{unit}" if base is not None else "-"
        print(f"{label:<34}{f'{mine:,.{digits}f}{unit}':>14}{theirs:>14}{ratio:>8}")

    row("Redis bytes per pending step", per_step,
        noop_enqueue and noop_enqueue["used_memory_delta"] / max(noop_enqueue["queued"], 1),
        " B", 0)  # fmt: skip
    row("  (MEMORY USAGE sum per step)", per_key,
        noop_enqueue and noop_enqueue["memory_usage_sum"] / max(noop_enqueue["queued"], 1),
        " B", 0)  # fmt: skip
    row("Redis MB for all pending steps", enqueue["used_memory_delta"] / 2**20,
        noop_enqueue and noop_enqueue["used_memory_delta"] / 2**20, " MB")  # fmt: skip
    row("enqueue seconds", enqueue["seconds"], noop_enqueue and noop_enqueue["seconds"], " s")
    if send is not None:
        row("send seconds (start to last)", send["seconds"],
            noop_send and noop_send["seconds"], " s")  # fmt: skip
        row("per second", send["per_second"] or 0, noop_send and noop_send["per_second"], "/s")
        row("worker CPU s (all processes)", sum(send["worker_cpu_seconds"]),
            noop_send and sum(noop_send["worker_cpu_seconds"]), " s")  # fmt: skip
        row("worker peak RSS MB (max)", max(send["worker_peak_rss_mb"] or [0]),
            noop_send and max(noop_send["worker_peak_rss_mb"] or [0]), " MB")  # fmt: skip
        print(f"\nsent {send['done']:,}/{steps:,} "
              f"({'all' if send['completed'] else 'NOT all'}); database: "
              f"{result['database_after']}; retries logged {send['retries_logged']}, "
              f"errors logged {send['errors_logged']}")  # fmt: skip
        if "sink_cpu_seconds" in send:
            print(f"the SMTP sink used {send['sink_cpu_seconds']} s of CPU meanwhile")
    print(f"set-up: {result['populate_seconds']} s to create the enrollments")


if __name__ == "__main__":
    main()
