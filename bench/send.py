"""Sending: how many abandoned-cart emails one `rebound worker` process composes and delivers per
second to a local SMTP sink, next to a baseline in the same run that renders one Jinja2 template
and sends it with aiosmtplib to the same sink.

    .venv/bin/python bench/send.py [--emails 2000] [--database postgresql://…/NEW_DB]
                                   [--redis redis://127.0.0.1:6379/DB] [--profile] [--cprofile]

The sink is aiosmtpd in a process of its own (bench/_smtp_sink.py), counting messages and when
they arrive. The baseline renders templates/email/abandoned_cart.html (Rebound's own template,
plain Jinja2: no css-inline, tracking, database or store) and sends each message with aiosmtplib
over a connection it keeps, as Rebound's SmtpTransport keeps its connections, with as many
connections at once as the worker has messages in flight (flows.engine.DELIVERIES_AT_ONCE, 10;
until 2026-12-07, when steps began to run in batches, its 10 arq jobs). Until 2026-12-04 the
baseline opened a connection per message (aiosmtplib.send), which Rebound stopped doing on
2026-12-02. For Rebound, a throw-away REBOUND_HOME (or the
fresh PostgreSQL database named with --database, created and dropped) gets a Shopify shop
(`rebound shops add`, quiet hours and frequency cap off, no offer), and N checkouts last touched
three hours ago go through flows.engine.apply: N abandoned-cart enrollments whose first reminder
is due. Their run_step jobs are queued, then one `rebound worker` starts with SMTP_URL pointing
at the sink and SHOPIFY_API_ORIGIN at the Shopify stand-in (integrations/shopify/standin.py,
served by this script, which answers the product look-up). Both rates are the messages the sink
received from its first to its last arrival; the time from the worker's start is shown too.
Results: a table on stdout, progress on stderr, bench/send-<database>.json.

Targets (issue): Rebound at least 50 % of the baseline's rate, and at least 300 emails/s."""

import argparse
import asyncio
import contextlib
import copy
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import (  # noqa: E402
    BENCH,
    PYTHON,
    REBOUND,
    ROOT,
    Child,
    backend,
    count_rows,
    data_folder,
    empty_redis_db,
    free_port,
    fresh_postgres,
    load_average,
    progress,
    py_spy,
    rebound_env,
    schedstat,
    top_frames,
    write_results,
)

DOMAIN = "bench-store.myshopify.com"
TARGET_SHARE = 0.50
TARGET_RATE = 300.0
DUE_QUERY = (
    "SELECT count(*) FROM enrollments"
    " WHERE lower(CAST(status AS TEXT)) = 'active' AND due_at IS NOT NULL"
)
SENT_QUERY = "SELECT count(*) FROM sends WHERE lower(CAST(status AS TEXT)) = 'sent'"
IN_FLIGHT = 10  # the worker's messages in flight at once: flows.engine.DELIVERIES_AT_ONCE
VARIANTS = (  # the variants of tests/fixtures/shopify/checkouts_create.json
    (44123456789012, "Charcoal / M", "89.00", "Merino Crew Sweater", "merino-crew-sweater"),
    (44123456789013, "Oatmeal", "24.50", "Wool Beanie", "wool-beanie"),
)
ITEMS = [
    {
        "title": f"Item {n}",
        "variant_title": "M",
        "quantity": 1,
        "price": "$10.00",
        "line_total": "$10.00",
        "image_url": f"https://cdn.example/{n}.jpg",
        "image_alt": "x",
        "sold_out": False,
        "gone": False,
    }
    for n in range(2)
]
CONTEXT = {  # what bench/inline.py renders the reminder with
    "shop_name": "Bench Store",
    "first_name": "Ada",
    "step": 0,
    "items": ITEMS,
    "item_count": 2,
    "subtotal": "$20.00",
    "total": "$20.00",
    "restore_url": "https://rebound.example/r/x",
    "offer": None,
    "kept_until": "23 December 2026",
    "unsubscribe_url": "https://r.example/u/x",
    "intro": None,
    "lang": "en",
    "subject": "Your cart",
    "brand": {
        "name": "Bench Store",
        "logo_url": None,
        "accent": "#2f6f4e",
        "accent_text": "#ffffff",
        "phone": "+46 8 123",
        "email": "hi@bench.example",
        "chat_url": None,
        "social": [],
        "address_lines": ["Storgatan 1", "Stockholm"],
    },
}


class Sink:
    """bench/_smtp_sink.py, driven over its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls) -> "Sink":
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            str(PYTHON),
            str(BENCH / "_smtp_sink.py"),
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.startswith(b"ready"):
            raise SystemExit(f"the SMTP sink did not start: {line!r}")
        return cls(process, port)

    async def ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return (await self.process.stdout.readline()).decode().strip()

    async def status(self) -> dict[str, Any]:
        return dict(json.loads(await self.ask("status")))

    def cpu_seconds(self) -> float:
        return schedstat(self.process.pid)[0]

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.write(b"quit\n")
            await self.process.stdin.drain()
            await asyncio.wait_for(self.process.wait(), 15)


async def wait_for(
    sink: Sink, count: int, label: str, patience: float, alive: Any = None
) -> dict[str, Any]:
    """Until the sink holds `count` messages (or time runs out, or the sender died)."""
    deadline = time.monotonic() + patience
    report_at = time.monotonic() + 2
    while True:
        status = await sink.status()
        if status["messages"] >= count:
            return status
        if time.monotonic() > deadline or (alive is not None and not alive()):
            progress(f"{label}: stopped waiting at {status['messages']}/{count} emails")
            return status
        if time.monotonic() >= report_at:
            progress(f"  {label}: {status['messages']}/{count} emails")
            report_at += 2
        await asyncio.sleep(0.05)


def rates(status: dict[str, Any], started: float, count: int) -> dict[str, Any]:
    received = status["messages"]
    first, last = status["first"] or started, status["last"] or started
    span = last - first
    return {
        "emails": received,
        "complete": received >= count,
        "first_to_last_s": round(span, 3),
        "emails_per_second": round((received - 1) / span, 1) if span > 0 else 0.0,
        "start_to_last_s": round(last - started, 3),
        "emails_per_second_from_start": round(received / (last - started), 1),
        "megabytes": round(status["bytes"] / 1e6, 1),
    }


# --- the baseline ------------------------------------------------------------------------------


async def baseline(sink: Sink, count: int, concurrency: int, patience: float) -> dict[str, Any]:
    import aiosmtplib

    from app.mail import i18n
    from app.mail.render import environment

    template = environment.get_template("email/abandoned_cart.html")
    numbers = iter(range(count))

    async def lane() -> None:
        # One connection a lane, kept for all its messages, as Rebound's SmtpTransport keeps
        # its connections: neither pays for connecting per message.
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=30)
        await smtp.connect()
        for n in numbers:  # shared: each number is taken by one lane
            with i18n.writing_in("en"):
                html = template.render({**CONTEXT, "first_name": f"Shopper {n}"})
            message = EmailMessage()
            message["From"] = "Bench Store <rebound@localhost>"
            message["To"] = f"shopper{n}@example.com"
            message["Subject"] = "Your cart is waiting"
            message.set_content(html, subtype="html")
            await smtp.send_message(message)
        await smtp.quit()

    await sink.ask("reset")
    progress(f"baseline: {count} emails, {concurrency} at once")
    sink_cpu, load_before = sink.cpu_seconds(), load_average()
    ran, waited = schedstat(os.getpid())
    started = time.time()
    senders = asyncio.gather(*(lane() for _ in range(concurrency)))
    status = await wait_for(sink, count, "baseline", patience)
    await senders
    ran_after, waited_after = schedstat(os.getpid())
    result = rates(status, started, count)
    result["sender_cpu_share"] = round((ran_after - ran) / (time.time() - started), 2)
    result["sender_runqueue_wait_share"] = round(
        (waited_after - waited) / (time.time() - started), 2
    )
    result["sink_cpu_share"] = round((sink.cpu_seconds() - sink_cpu) / (time.time() - started), 2)
    result["load_average_before_after"] = [load_before, load_average()]
    result["concurrency"] = concurrency
    progress(f"baseline: {result['emails_per_second']} emails/s")
    return result


# --- Rebound ---------------------------------------------------------------------------------


def checkout(n: int, touched: datetime) -> dict[str, Any]:
    payload = copy.deepcopy(FIXTURE)
    payload["id"] = 35_160_690_000_000 + n
    payload["token"] = secrets.token_hex(16)
    payload["cart_token"] = secrets.token_hex(16)
    payload["email"] = payload["customer"]["email"] = f"shopper{n}@example.com"
    payload["customer"]["id"] = 7_208_349_000_000 + n
    payload["created_at"] = payload["updated_at"] = touched.isoformat()
    return payload


FIXTURE = json.loads((ROOT / "tests/fixtures/shopify/checkouts_create.json").read_text())


async def command(*args: str, env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        str(REBOUND),
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"`rebound {' '.join(args[:3])} …` failed:\n{said.decode()}")


async def enroll(count: int) -> int:
    """`count` due abandoned-cart enrollments through the engine, their jobs queued."""
    from arq import create_pool

    from app.db import dispose_engine, sessionmaker
    from app.queue import Jobs
    from app.redis import redis_settings
    from app.settings import get_settings
    from app.shops import repository as shops
    from flows import engine
    from integrations.shopify import webhooks as shopify

    touched = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    jobs = Jobs()
    async with sessionmaker()() as session:
        shop = await shops.get_by_domain(session, "shopify", DOMAIN)
        assert shop is not None and shop.id is not None
        for n in range(count):
            for event in shopify.events("checkouts/update", checkout(n, touched)):
                await engine.apply(session, jobs, shop.id, event)  # type: ignore[arg-type]
            if (n + 1) % 500 == 0 or n + 1 == count:
                await session.commit()
                progress(f"  enrolled {n + 1}/{count} checkouts")
    queued = len(jobs.pending)
    redis = await create_pool(redis_settings(get_settings()))
    try:
        await jobs.enqueue(redis)
    finally:
        await redis.aclose()
    await dispose_engine()
    return queued


async def rebound_run(
    sink: Sink, options: argparse.Namespace, env: dict[str, str], home: Path
) -> dict[str, Any]:
    from app.redis import embedded_redis
    from app.settings import get_settings
    from integrations.shopify.standin import ShopifyStandin, serve

    standin = ShopifyStandin()
    standin.add_shop(DOMAIN, name="Bench Store", currency="USD")
    token = standin.token_for(DOMAIN)
    for variant_id, title, price, product, handle in VARIANTS:
        standin.add_variant(
            DOMAIN,
            variant_id=variant_id,
            title=title,
            price=price,
            product_title=product,
            handle=handle,
            image_url=f"https://cdn.example/{handle}.jpg",
            image_alt=product,
        )
    # Up before `shops add`, which reads the store from Shopify before it keeps anything.
    standin_served = contextlib.AsyncExitStack()
    origin = await standin_served.enter_async_context(serve(standin))
    progress("rebound migrate; rebound shops add shopify …; shops set; flows set")
    await command("migrate", env=env)
    await command(
        "shops", "add", "shopify", "--domain", DOMAIN, "--access-token", token,
        "--api-secret", secrets.token_hex(24), env={**env, "SHOPIFY_API_ORIGIN": origin},
    )  # fmt: skip
    await command(
        "shops",
        "set",
        "--shop",
        DOMAIN,
        "--quiet-hours",
        "off",
        "--frequency-cap",
        "off",
        env=env,
    )
    await command(
        "flows",
        "set",
        "--shop",
        DOMAIN,
        "abandoned_cart",
        "--step",
        "3",
        "--offer",
        "none",
        env=env,
    )
    async with standin_served:
        # The embedded Redis, when used, is started here and shared by the worker.
        with embedded_redis(get_settings()):
            progress(f"creating {options.emails} due abandoned-cart enrollments")
            queued = await enroll(options.emails)
            due = count_rows(
                options.database,
                home,
                DUE_QUERY,
            )
            if queued != options.emails or due != options.emails:
                raise SystemExit(
                    f"expected {options.emails} due enrollments, got {due} ({queued} jobs)"
                )
            await sink.ask("reset")
            worker_env = {
                **env,
                "SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
                "SHOPIFY_API_ORIGIN": origin,
            }
            progress(f"rebound worker: {options.emails} run_step jobs queued")
            sink_cpu, load_before = sink.cpu_seconds(), load_average()
            started = time.time()
            cprofile_path = ROOT / "bench/results" / f"send-{options.label}-worker.prof"
            argv = [str(REBOUND), "worker"]
            if options.cprofile:  # deterministic, in-process: greenlets break py-spy's stacks
                cprofile_path.parent.mkdir(parents=True, exist_ok=True)
                argv = [str(PYTHON), "-m", "cProfile", "-o", str(cprofile_path), *argv]
            worker = Child("rebound worker", argv, worker_env, home / "worker.log")
            profiler = None
            try:
                if options.profile:
                    profile_path = ROOT / "bench/results" / f"send-{options.label}-worker.collapsed"
                    profiler = py_spy(worker.pid, 3600, profile_path)
                status = await wait_for(
                    sink, options.emails, "rebound", options.timeout, alive=worker.alive
                )
                wall = time.time() - started
                ran, waited = worker.schedstat() if worker.alive() else (0.0, 0.0)
                sink_share = (sink.cpu_seconds() - sink_cpu) / wall
                load_after = load_average()
                if not worker.alive():
                    progress(f"the worker stopped:\n{worker.tail()}")
                # The last sends are marked sent just after their message left: let them be.
                settle = time.monotonic() + 30
                while (  # noqa: ASYNC110  (a database row, not an event of this process)
                    worker.alive()
                    and time.monotonic() < settle
                    and count_rows(options.database, home, SENT_QUERY) < status["messages"]
                ):
                    await asyncio.sleep(0.2)
            finally:
                worker.stop()
            if profiler is not None:
                profiler.wait(timeout=120)
    result = rates(status, started, options.emails)
    # From the worker's start (its imports included) to the last email.
    result["worker_cpu_share"] = round(ran / wall, 2)
    result["worker_runqueue_wait_share"] = round(waited / wall, 2)
    result["sink_cpu_share"] = round(sink_share, 2)
    result["load_average_before_after"] = [load_before, load_after]
    result["sends_recorded_sent"] = count_rows(options.database, home, SENT_QUERY)
    if profiler is not None:
        result["profile"] = str(profile_path.relative_to(ROOT))
        result["profile_top"] = top_frames(
            profile_path,
            (
                "app/",
                "flows/",
                "integrations/",
                "arq/",
                "aiosmtplib/",
                "ssl.py",
                "css_inline",
                "jinja2/",
                "aiosqlite/",
                "psycopg/",
                "dkim",
            ),
        )
    progress(f"rebound: {result['emails_per_second']} emails/s")
    return result


async def run(options: argparse.Namespace, env: dict[str, str], home: Path) -> dict[str, Any]:
    sink = await Sink.start()
    try:
        base = await baseline(sink, options.emails, options.concurrency, options.timeout)
        ours = await rebound_run(sink, options, env, home)
    finally:
        await sink.stop()
    return {"baseline": base, "rebound": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--database", help="postgresql://…/NEW_DB (created and dropped)")
    parser.add_argument("--redis", help="redis://host:6379/DB, an empty database (emptied after)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=IN_FLIGHT,
        help="the baseline's sends at once (the worker has 10 messages in flight at once)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait per side")
    parser.add_argument("--profile", action="store_true", help="py-spy on the worker")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="run the worker under cProfile (bench/results/send-<database>-worker.prof)",
    )
    options = parser.parse_args()
    options.label = backend(options.database)
    progress(
        f"send benchmark: {options.emails} emails, {options.label}, "
        f"Redis {options.redis or 'embedded'}"
    )
    with (
        data_folder("rb-send-") as home,
        fresh_postgres(options.database),
        empty_redis_db(options.redis),
    ):
        env = rebound_env(home, options.database, options.redis)
        # This process enrolls through the engine: the same settings as the worker's.
        for key in ("REBOUND_HOME", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        results: dict[str, Any] = {
            "benchmark": "send",
            "database": options.label,
            "redis": "url" if options.redis else "embedded",
            "emails": options.emails,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        results.update(asyncio.run(run(options, env, home)))
    base, ours = results["baseline"], results["rebound"]
    share = (
        ours["emails_per_second"] / base["emails_per_second"] if base["emails_per_second"] else 0
    )
    results["rebound_share_of_baseline"] = round(share, 3)
    results["targets"] = {
        "share_of_baseline": TARGET_SHARE,
        "emails_per_second": TARGET_RATE,
        "share_met": share >= TARGET_SHARE,
        "rate_met": ours["emails_per_second"] >= TARGET_RATE,
    }
    out = write_results(__file__, f"send-{options.label}", results)
    report(results, out)


def report(results: dict[str, Any], out: Path) -> None:
    base, ours, targets = results["baseline"], results["rebound"], results["targets"]
    print(
        f"send: {results['emails']} abandoned-cart emails to an aiosmtpd sink; "
        f"database {results['database']}, Redis {results['redis']}"
    )
    print(f"{'':<34}{'emails/s':>10}{'from start':>12}{'received':>10}")
    for label, row in (
        (f"baseline (Jinja2 + aiosmtplib, {base['concurrency']}x)", base),
        ("Rebound (one `rebound worker`)", ours),
    ):
        print(
            f"{label:<34}{row['emails_per_second']:>10.1f}"
            f"{row['emails_per_second_from_start']:>12.1f}{row['emails']:>10}"
        )
    met = {True: "met", False: "NOT met"}
    print(
        f"Rebound / baseline: {results['rebound_share_of_baseline']:.1%} "
        f"(target >= {targets['share_of_baseline']:.0%}: {met[targets['share_met']]})"
    )
    print(
        f"Rebound: {ours['emails_per_second']:.1f} emails/s "
        f"(target >= {targets['emails_per_second']:.0f}: {met[targets['rate_met']]})"
    )
    print(f"sends recorded as sent: {ours['sends_recorded_sent']}")
    print(
        f"on a CPU / waiting for one: baseline sender {base['sender_cpu_share']:.0%} / "
        f"{base['sender_runqueue_wait_share']:.0%}, worker {ours['worker_cpu_share']:.0%} / "
        f"{ours['worker_runqueue_wait_share']:.0%}; sink on a CPU: baseline "
        f"{base['sink_cpu_share']:.0%}, Rebound {ours['sink_cpu_share']:.0%}"
    )
    if ours.get("profile_top"):
        print(f"where the worker's samples are (py-spy, callees included; {ours['profile']}):")
    for name, share in ours.get("profile_top", []):
        print(f"  {share:6.1%}  {name}")
    loads = [row["load_average_before_after"] for row in (base, ours)]
    print(f"machine load average before/after each run: {loads} on {results['cores']} cores")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
