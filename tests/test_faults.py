"""Faults the platforms and the infrastructure cause, on the real parts: webhooks delivered more
than once and out of order, the database unreachable while webhooks arrive, the mail server down
when a step is due, and the JSON API fuzzed from its own OpenAPI schema."""

import asyncio
import contextlib
import json
import random
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import time_machine
from aiosmtpd.controller import Controller
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import deserialize_job
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from app.api.auth import SESSION_COOKIE, issue_token, session_cookie
from app.commerce.models import Checkout, Order, Refund, Shipment
from app.db import dispose_engine, sessionmaker, utcnow
from app.inbox.models import InboxEntry, InboxStatus
from app.links.urls import unsubscribe_token
from app.mail.models import Unsubscribe
from app.mail.transport import SmtpTransport
from app.main import create_app
from app.queue import Job, Jobs, enqueue_many
from app.settings import get_settings
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import service as flows_service
from flows.definitions import HOUR
from flows.engine import step_job_id
from flows.models import Enrollment, EnrollmentStatus, Send, SendStatus
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import (
    SHOP_DOMAIN,
    SHOP_SECRET,
    Mailbox,
    _free_port,
    running_worker,
    wait_for,
)
from tests.shopify import add_documented_variants, fixture, headers_for
from tests.test_abandoned_checkout import count, deliver, enrollment, fresh_checkout, settle
from tests.test_flow_timeline import work

# A Monday morning, in whole seconds; the clock stands here until a test moves it.
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
IN_ORDER = "in-order.myshopify.com"
SHUFFLED = "shuffled.myshopify.com"
REVERSED = "reversed.myshopify.com"


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


# --- a store's week of webhooks --------------------------------------------------------------


def ago(**delta: float) -> str:
    return (START - timedelta(**delta)).isoformat()


def checkout(email: str, token: str, *, created: str, updated: str) -> dict[str, Any]:
    payload = fixture("checkouts_create")
    payload.update(
        token=token, cart_token=f"cart-{token}", email=email, created_at=created, updated_at=updated
    )
    payload["customer"]["email"] = email
    payload["abandoned_checkout_url"] = f"https://shop.example/checkouts/{token}/recover"
    return payload


def order(email: str, number: int, *, placed: str, token: str | None = None) -> dict[str, Any]:
    payload = fixture("orders_create")
    payload.update(
        id=number, name=f"#{number}", order_number=number, email=email, contact_email=email,
        checkout_token=token, cart_token=f"cart-{token}" if token else None, created_at=placed,
        processed_at=placed, updated_at=placed,
    )  # fmt: skip
    payload["customer"]["email"] = email
    return payload


def fulfillment(number: int, *, shipped: str, delivered: str | None = None) -> dict[str, Any]:
    payload = fixture("fulfillments_create")
    payload.update(
        id=number * 10, order_id=number, status="success", created_at=shipped,
        updated_at=delivered or shipped, shipment_status="delivered" if delivered else None,
    )  # fmt: skip
    return payload


def refund(number: int, amount: str, *, at: str, refund_id: int = 1) -> dict[str, Any]:
    payload = fixture("refunds_create")
    payload.update(id=number * 100 + refund_id, order_id=number, created_at=at, processed_at=at)
    payload["transactions"] = [
        {**payload["transactions"][0], "order_id": number, "amount": amount, "processed_at": at}
    ]
    return payload


def cancellation(email: str, number: int, *, placed: str, at: str) -> dict[str, Any]:
    return order(email, number, placed=placed) | {"cancelled_at": at, "cancel_reason": "customer"}


def a_stores_week() -> list[tuple[str, dict[str, Any]]]:
    """Five customers' last hour, every topic Rebound reads, in the order Shopify sends them.
    Nothing is due yet when they arrive: the first reminder is an hour after the cart's last
    change, and the shipping notice is set to go an hour after the parcel leaves."""
    return [
        # Ada leaves a cart, comes back to it once, and never buys.
        ("checkouts/create", checkout("ada@example.com", "ada1", created=ago(minutes=50),
                                      updated=ago(minutes=50))),
        ("checkouts/update", checkout("ada@example.com", "ada1", created=ago(minutes=50),
                                      updated=ago(minutes=45))),
        # Bo leaves a cart, buys it, and the parcel ships and arrives (a courier in town).
        ("checkouts/create", checkout("bo@example.com", "bo1", created=ago(minutes=58),
                                      updated=ago(minutes=58))),
        ("checkouts/update", checkout("bo@example.com", "bo1", created=ago(minutes=58),
                                      updated=ago(minutes=55))),
        ("orders/create", order("bo@example.com", 1001, placed=ago(minutes=52), token="bo1")),
        ("fulfillments/create", fulfillment(1001, shipped=ago(minutes=40))),
        ("fulfillments/update", fulfillment(1001, shipped=ago(minutes=40),
                                            delivered=ago(minutes=5))),
        # Cy buys and is refunded in full before anything ships.
        ("orders/create", order("cy@example.com", 1002, placed=ago(minutes=30))),
        ("refunds/create", refund(1002, "146.28", at=ago(minutes=20))),
        # Di buys, it ships, and part of the money goes back: the series goes on.
        ("orders/create", order("di@example.com", 1003, placed=ago(minutes=45))),
        ("fulfillments/create", fulfillment(1003, shipped=ago(minutes=30))),
        ("refunds/create", refund(1003, "20.00", at=ago(minutes=10))),
        # Ed leaves a cart, buys it, then cancels the order.
        ("checkouts/create", checkout("ed@example.com", "ed1", created=ago(minutes=40),
                                      updated=ago(minutes=40))),
        ("orders/create", order("ed@example.com", 1004, placed=ago(minutes=35), token="ed1")),
        ("orders/cancelled", cancellation("ed@example.com", 1004, placed=ago(minutes=35),
                                          at=ago(minutes=15))),
    ]  # fmt: skip


async def open_store(standin: ShopifyStandin, domain: str) -> Shop:
    standin.add_shop(domain, name="Nordic Wool")
    add_documented_variants(standin, domain)
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session, domain=domain, access_token=standin.token_for(domain),
            api_secret=SHOP_SECRET, name="Nordic Wool",
        )  # fmt: skip
        shop.currency, shop.country_code = "USD", "US"
        await flows_service.set_step_delay(session, shop, "post_purchase", 3, HOUR)
        await session.commit()
        return shop


async def post(client: httpx.AsyncClient, topic: str, body: bytes, headers: dict[str, str]) -> None:
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def processed(shop: Shop) -> bool:
    async with sessionmaker()() as session:
        query = select(InboxEntry).where(
            InboxEntry.shop_id == shop.id, InboxEntry.status != InboxStatus.HANDLED
        )
        left = (await session.exec(query)).all()
    assert not [entry.error for entry in left if entry.status == InboxStatus.FAILED]
    return not left


# --- what a store ends up with, without its ids ------------------------------------------------


async def outcome(shop: Shop, mailbox: Mailbox) -> dict[str, Any]:
    """Per customer: their enrollments (with sends), checkouts, orders, shipments, refunds and
    emails, with every database id replaced by what it stands for. An enrollment that ended
    before it sent anything is left out: whether it was begun and ended at once (the checkout came
    first) or never begun (its order came first), nobody heard of it."""
    async with sessionmaker()() as session:

        async def rows(model: Any, *order_by: Any) -> list[Any]:
            query = select(model).where(model.shop_id == shop.id).order_by(*order_by)
            return list((await session.exec(query)).all())

        checkouts = await rows(Checkout, col(Checkout.token))
        orders = await rows(Order, col(Order.platform_id))
        tokens = {c.id: c.token for c in checkouts}
        numbers = {o.id: o.platform_id for o in orders}
        found: dict[str, Any] = {}

        def of(email: str | None) -> dict[str, Any]:
            return found.setdefault(str(email), {})

        for enrollment in await rows(Enrollment, col(Enrollment.flow), col(Enrollment.subject)):
            query = select(Send).where(Send.enrollment_id == enrollment.id).order_by(col(Send.step))
            sends = [
                (s.step, s.status, s.marketing, s.error, s.offer_skipped, bool(s.discount_code),
                 s.variant, s.sent_at)
                for s in (await session.exec(query)).all()
            ]  # fmt: skip
            if enrollment.status == EnrollmentStatus.EXITED and not sends:
                continue
            about = tokens.get(enrollment.checkout_id) or numbers.get(enrollment.order_id)
            of(enrollment.email).setdefault("enrollments", []).append(
                (enrollment.flow, about, enrollment.status, enrollment.exit_reason,
                 enrollment.next_step, enrollment.due_at, enrollment.waiting_for, sends,
                 numbers.get(enrollment.recovered_order_id))
            )  # fmt: skip
        for c in checkouts:
            of(c.email).setdefault("checkouts", []).append(
                (c.token, c.total_price, c.platform_updated_at, c.completed_at, c.closed_at)
            )
        for o in orders:
            of(o.email).setdefault("orders", []).append(
                (o.platform_id, o.total_price, o.placed_at, o.cancelled_at, o.first_name)
            )
        emails = {o.platform_id: o.email for o in orders}
        for s in await rows(Shipment, col(Shipment.platform_id)):
            of(emails.get(s.order_platform_id)).setdefault("shipments", []).append(
                (s.order_platform_id, s.platform_id, s.shipped_at, s.delivered_at, s.tracking)
            )
        for r in await rows(Refund, col(Refund.platform_id)):
            of(emails.get(r.order_platform_id)).setdefault("refunds", []).append(
                (r.order_platform_id, r.platform_id, r.amount, r.refunded_at)
            )
    for message in mailbox.messages:
        if shop.domain.split(".")[0] not in str(message["List-Id"]):
            continue
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        text = re.sub(r"https://rebound\.test/\S+", "<link>", str(body.get_content()))
        text = re.sub(r"\b[A-Z]+-[A-Z0-9]{8,}\b", "<code>", text.replace(shop.domain, "<shop>"))
        of(str(message["To"])).setdefault("emails", []).append((str(message["Subject"]), text))
    return found


async def run_the_month(clock: time_machine.Traveller, redis: ArqRedis) -> None:
    """A month passes an hour at a time for the first days, then a day at a time: the sweeper
    and the worker run every due step."""
    moment = START
    while moment < START + timedelta(days=30):
        moment += timedelta(hours=1) if moment < START + timedelta(days=4) else timedelta(days=1)
        clock.move_to(moment)
        await work(redis)


def three_times(week: list[tuple[str, dict[str, Any]]], domain: str) -> list[Any]:
    """Each delivery three times: twice as one delivery and its retry (the same ids), once more
    as another delivery of the same payload (a second subscription: ids of its own)."""
    deliveries = []
    for topic, payload in week:
        body = json.dumps(payload).encode()
        headers = headers_for(topic, body, secret=SHOP_SECRET, domain=domain)
        other = headers | {
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
        }
        deliveries += [(topic, body, headers), (topic, body, headers), (topic, body, other)]
    return deliveries


async def test_every_webhook_three_times_in_any_order_is_the_same_as_once_in_order(
    clock: time_machine.Traveller,
    standin: ShopifyStandin,
    server: httpx.AsyncClient,
    worker: None,
    redis: ArqRedis,
    mailbox: Mailbox,
) -> None:
    once = await open_store(standin, IN_ORDER)
    shuffled, reversed_ = await open_store(standin, SHUFFLED), await open_store(standin, REVERSED)
    week = a_stores_week()

    # Once, in order, each processed before the next arrives.
    for topic, payload in week:
        body = json.dumps(payload).encode()
        headers = headers_for(topic, body, secret=SHOP_SECRET, domain=IN_ORDER)
        await post(server, topic, body, headers)
        await wait_for(lambda: processed(once))
    # Three times, shuffled, all at once: the worker takes them up to ten at a time.
    deliveries = three_times(week, SHUFFLED)
    random.Random(8).shuffle(deliveries)
    for topic, body, headers in deliveries:
        await post(server, topic, body, headers)
    await wait_for(lambda: processed(shuffled))
    # Three times, last first, each processed before the next: every event before its cause.
    for topic, body, headers in reversed(three_times(week, REVERSED)):
        await post(server, topic, body, headers)
        await wait_for(lambda: processed(reversed_))

    await run_the_month(clock, redis)

    expected = await outcome(once, mailbox)
    for shop in (shuffled, reversed_):
        got = await outcome(shop, mailbox)
        assert sorted(got) == sorted(expected), shop.domain
        for customer in expected:
            assert got[customer] == expected[customer], (shop.domain, customer)
    # The run did something worth comparing: every kind of record and email is there.
    assert len(expected["ada@example.com"]["emails"]) == 3  # the three cart reminders
    assert len(expected["bo@example.com"]["emails"]) >= 3  # shipped, care guide, review…
    assert "emails" not in expected["cy@example.com"]
    assert expected["ed@example.com"]["orders"][0][3] is not None  # cancelled
    assert expected["di@example.com"]["refunds"] and expected["bo@example.com"]["shipments"]


async def test_a_step_due_more_than_a_day_ago_is_still_queued(redis: ArqRedis) -> None:
    # arq keeps a job a day past the time it is deferred to: deferred to two days ago, its
    # expiry was negative and Redis refused it, failing the ingest or the whole sweep.
    jobs = Jobs()
    jobs.add("run_step", 1, 0, job_id="run_step:1:0:0", defer_until=utcnow() - timedelta(days=2))
    await jobs.enqueue(redis)

    assert await redis.zcard(default_queue_name) == 1
    assert 0 < await redis.pttl(job_key_prefix + "run_step:1:0:0") <= 86_400_000


async def test_jobs_enqueued_together_are_each_queued_once_as_arq_would(redis: ArqRedis) -> None:
    # The inbox writer offers a batch's ingest jobs in one script: an id arq already holds,
    # queued or finished, is left alone, and the rest are the jobs arq itself would write.
    await redis.enqueue_job("ingest", 1, _job_id="ingest:1")
    await redis.set(result_key_prefix + "ingest:2", b"done")

    queued = await enqueue_many(redis, [Job("ingest", (n,), f"ingest:{n}") for n in (1, 2, 3)])

    assert queued == 1
    assert await redis.zrange(default_queue_name, 0, -1) == [b"ingest:1", b"ingest:3"]
    job = deserialize_job(await redis.get(job_key_prefix + "ingest:3"))
    assert (job.function, job.args, job.kwargs) == ("ingest", (3,), {})
    assert 0 < await redis.pttl(job_key_prefix + "ingest:3") <= 86_400_000

    # A job deferred to later gets that time as its score, and arq's day after it to expire.
    later = datetime.now(UTC) + timedelta(hours=2)
    assert await enqueue_many(redis, [Job("run_step", (7, 0), "run_step:7:0", later)]) == 1
    assert await redis.zscore(default_queue_name, "run_step:7:0") == int(later.timestamp() * 1000)
    assert 86_400_000 < await redis.pttl(job_key_prefix + "run_step:7:0") <= 93_600_000
    job = deserialize_job(await redis.get(job_key_prefix + "run_step:7:0"))
    assert (job.function, job.args) == ("run_step", (7, 0))


# --- the database unreachable ------------------------------------------------------------------


class TcpProxy:
    """A TCP proxy in the test process between the app and PostgreSQL; `cut` drops every
    connection and refuses new ones, as a network partition would, for this app only."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def database_reachable_through_a_switch() -> AsyncIterator[Any]:
    """Yields `outage()`: an async context manager during which this app's database refuses
    writes. SQLite: another connection holds an exclusive lock past the busy timeout (shortened
    to half a second). PostgreSQL: the app talks through a proxy in this process, which is cut."""
    settings = get_settings()
    url = make_url(settings.database)
    await dispose_engine()  # new connections, which read the settings below
    if url.get_backend_name() == "sqlite":
        saved = settings.sqlite_busy_timeout_ms
        settings.sqlite_busy_timeout_ms = 500

        @contextlib.asynccontextmanager
        async def locked() -> AsyncIterator[None]:
            holder = sqlite3.connect(str(url.database), isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")
                holder.close()

        try:
            yield locked
        finally:
            settings.sqlite_busy_timeout_ms = saved
            await dispose_engine()
        return
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    saved_url = settings.database_url
    settings.database_url = url.set(host="127.0.0.1", port=port).render_as_string(
        hide_password=False
    )

    @contextlib.asynccontextmanager
    async def partitioned() -> AsyncIterator[None]:
        proxy.cut()
        try:
            yield
        finally:
            proxy.up = True

    try:
        yield partitioned
    finally:
        await dispose_engine()
        settings.database_url = saved_url
        await proxy.stop()


async def test_a_webhook_while_the_database_is_unreachable_gets_503_and_its_retry_is_kept_once(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    payload = fresh_checkout()
    body = json.dumps(payload).encode()
    headers = headers_for("checkouts/create", body, secret=SHOP_SECRET, domain=SHOP_DOMAIN)

    async with database_reachable_through_a_switch() as outage:
        assert (await server.get("/healthz")).status_code == 200  # through the switch
        async with outage():
            refused = [
                await server.post("/webhooks/shopify", content=body, headers=headers)
                for _ in range(3)  # Shopify retries; the outage lasts
            ]
            health = await server.get("/healthz")
        for response in refused:
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
        if health.status_code == 503:  # PostgreSQL down; SQLite still reads under the lock
            assert health.json()["database"].startswith("error")

        # The outage is over: the platform's next retry of the same delivery is kept, once.
        assert await count(InboxEntry) == 0
        again = await server.post("/webhooks/shopify", content=body, headers=headers)
        assert (again.status_code, again.json()) == (200, {"status": "accepted"})
        once_more = await server.post("/webhooks/shopify", content=body, headers=headers)
        assert once_more.json() == {"status": "duplicate"}

        await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
        await settle(mailbox)
        assert await count(InboxEntry) == 1 and await count(Checkout) == 1
        assert await count(Enrollment) == 1 and await count(Send) == 1
        assert mailbox.recipients == [["jane.doe@example.com"]]


async def test_the_admin_while_redis_is_unreachable_gets_503_not_a_server_error(
    shop: Shop,
) -> None:
    """Signed-out sessions are Redis's to say: without it the admin is unavailable for a
    moment (503, try again), never a 500 and never signed in unchecked."""
    app = create_app()
    app.state.redis = ArqRedis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rebound.test") as client:
        client.cookies.set(SESSION_COOKIE, session_cookie(shop))
        page = await client.get("/admin")
        api = await client.get("/api/shop")
    for response in (page, api):
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
    await app.state.redis.aclose()


# --- the mail server down ----------------------------------------------------------------------


async def test_a_step_due_while_the_mail_server_is_down_is_retried_with_backoff_then_sent_once(
    server: httpx.AsyncClient, redis: ArqRedis, shop: Shop
) -> None:
    settings = get_settings()
    saved, settings.send_retry_delays = settings.send_retry_delays, "1,2"
    port = _free_port()  # nothing listens here yet: connection refused
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    try:
        async with running_worker(redis, SmtpTransport(f"smtp://127.0.0.1:{port}")):
            delivered_at = asyncio.get_running_loop().time()
            await deliver(server, "checkouts/create", fresh_checkout())  # its step is due at once
            found = await wait_for(enrollment)
            job_id = step_job_id(found)

            async def tries() -> int:
                return int(await redis.get(retry_key_prefix + job_id) or 0)

            # The first try and the retries 1 s and then 2 s later all find no server.
            await wait_for(lambda: tries_at_least(tries, 3), within=15)
            assert asyncio.get_running_loop().time() - delivered_at >= 1 + 2
            assert mailbox.messages == []
            # Nothing sent; each failed try released its claim (else the retry below would find
            # the step "claimed before" and send nothing).
            assert await count(Send, Send.status == SendStatus.SENT) == 0

            controller.start()  # the server is back; the next retry, 2 s on, delivers
            await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages), within=15)
            await settle(mailbox, 2.5)  # past another retry's time: nothing more goes
    finally:
        settings.send_retry_delays = saved
        if controller.loop.is_running():
            controller.stop()

    assert mailbox.recipients == [["jane.doe@example.com"]]
    async with sessionmaker()() as session:
        (send,) = (await session.exec(select(Send))).all()
    assert send.status == SendStatus.SENT and send.step == 0
    after = await enrollment()
    assert after is not None and after.next_step == 1 and after.status == EnrollmentStatus.ACTIVE


async def tries_at_least(tries: Any, wanted: int) -> bool:
    return bool(await tries() >= wanted)


# --- the JSON API fuzzed from its own schema ---------------------------------------------------


def fuzz(base_url: str, document: dict[str, Any], token: str) -> list[str]:
    """Every /api operation of the schema, with examples schemathesis draws from it: no 5xx, and
    each response as the schema says (status and body). Returns the operations it ran."""
    schema = schemathesis.openapi.from_dict(document)
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith("/api/"):
            continue

        @hypothesis.settings(
            max_examples=12,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"},
                checks=[not_a_server_error, response_schema_conformance],
                timeout=10,
            )

        check()
        ran.append(f"{operation.method.upper()} {operation.path}")
    return ran


async def test_the_json_api_answers_whatever_its_schema_allows_without_a_server_error(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await open_store(standin, IN_ORDER)
    document = (await server.get("/openapi.json")).json()

    # requests is blocking, and the server runs on this event loop: the fuzzer gets a thread.
    ran = await asyncio.to_thread(fuzz, str(server.base_url), document, issue_token(shop))

    assert "GET /api/shop" in ran and len(ran) >= 10, ran


# --- security cases issue 8 lists that no other test covered -----------------------------------


@pytest.mark.parametrize("path", ["/webhooks/shopify", "/webhooks/woocommerce"])
async def test_a_webhook_body_over_1_mib_gets_413_declared_or_streamed(
    server: httpx.AsyncClient, shop: Shop, path: str
) -> None:
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    headers = headers_for("checkouts/create", body, secret=SHOP_SECRET, domain=SHOP_DOMAIN)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    declared = await server.post(path, content=body, headers=headers)
    streamed = await server.post(path, content=chunks(), headers=headers)  # no Content-Length

    assert declared.status_code == streamed.status_code == 413
    assert "content-length" not in streamed.request.headers
    assert await count(InboxEntry) == 0


async def test_a_tampered_unsubscribe_link_is_404_and_unsubscribes_nobody(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    assert shop.id is not None
    genuine = unsubscribe_token(shop.id, "jane.doe@example.com", lang="en")
    data, _, mac = genuine.partition(".")
    other = unsubscribe_token(shop.id, "bo@example.com", lang="en").partition(".")[0]
    for token in (f"{data}.{mac[:-2]}AA", f"{other}.{mac}", "not-a-token"):
        page = await server.get(f"/u/{token}")
        done = await server.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert page.status_code == done.status_code == 404, token
    assert await count(Unsubscribe) == 0
    assert (await server.get(f"/u/{genuine}")).status_code == 200  # the genuine one works
