"""Real parts for every test: a database (SQLite, or PostgreSQL when DATABASE_URL is set), a Redis
server (embedded, or REDIS_URL), an SMTP server in this process, the HTTP app on a real socket and
the real arq worker."""

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

_HOME = Path(tempfile.mkdtemp(prefix="rebound-tests-"))
os.environ["REBOUND_HOME"] = str(_HOME)
os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ["APP_URL"] = "https://rebound.test"
os.environ["MAIL_FROM"] = "Rebound <shop@rebound.test>"
for unset in ("SMTP_URL", "SHOPIFY_API_SECRET", "PORT"):
    os.environ.pop(unset, None)

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from arq import create_pool  # noqa: E402
from arq.connections import ArqRedis  # noqa: E402
from sqlalchemy import create_engine, event, text, update  # noqa: E402
from sqlalchemy.orm.attributes import set_committed_value  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

import app.db  # noqa: E402
import app.models  # noqa: E402, F401
from app import migrate  # noqa: E402
from app.commerce import catalog  # noqa: E402
from app.db import database_url, dispose_engine, sessionmaker  # noqa: E402
from app.mail.transport import SmtpTransport, Transport  # noqa: E402
from app.main import create_app  # noqa: E402
from app.redis import embedded_redis, redis_settings  # noqa: E402
from app.settings import get_settings  # noqa: E402
from app.shops import service as shops_service  # noqa: E402
from app.shops.models import Shop  # noqa: E402
from app.shops.service import connect_shopify  # noqa: E402
from app.worker import make_worker  # noqa: E402
from flows import service as flows_service  # noqa: E402
from flows.tasks import StepBatches  # noqa: E402
from integrations.shopify.standin import ShopifyStandin, serve  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SHOP_DOMAIN = "rebound-test.myshopify.com"
SHOP_SECRET = "shpss_test_webhook_secret"
SHOPIFY_CLIENT_ID = "test-client-id"
SHOPIFY_CLIENT_SECRET = "test-client-secret-at-least-32-bytes-long"


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """Migrate once; every test starts with empty tables."""
    url = get_settings().database
    migrate.upgrade(url)
    yield url


@pytest.fixture(autouse=True)
def no_quiet_hours(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shops made during a test keep no quiet hours, so a test's emails do not wait for the
    morning when the suite runs at night. Tests of quiet hours set them on the shop."""

    def clear(mapper: Any, connection: Any, shop: Shop) -> None:
        # After the INSERT: setting None before it does nothing, since the ORM leaves a None out
        # of an INSERT and the column's default ("21:00-08:00") fills it in.
        table = Shop.__table__  # type: ignore[attr-defined]
        connection.execute(update(table).where(table.c.id == shop.id).values(quiet_hours=None))
        set_committed_value(shop, "quiet_hours", None)

    event.listen(Shop, "after_insert", clear)
    yield
    event.remove(Shop, "after_insert", clear)


@pytest.fixture(autouse=True)
def clean_tables(database: str) -> Iterator[None]:
    engine = create_engine(database_url(database, asynchronous=False))
    with engine.begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            connection.execute(text(f"DELETE FROM {table.name}"))
    engine.dispose()
    yield


@pytest.fixture(autouse=True)
async def fresh_engine() -> AsyncIterator[None]:
    # Each test has its own event loop; async connections must not outlive it.
    app.db._engine, app.db._sessions = None, None
    catalog.forget()  # shop ids repeat across tests; cached product data must not
    shops_service.forget_signers()  # nor the webhook receivers' shops and keys
    yield
    await dispose_engine()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[None]:
    with embedded_redis(get_settings()):
        yield


@pytest.fixture
async def redis(redis_server: None) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings(get_settings()))
    await pool.flushdb()
    yield pool
    await pool.flushdb()
    await pool.aclose()


@dataclass
class Mailbox:
    """What the in-process SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    box, _ = smtp_server
    box.messages.clear()
    box.recipients.clear()
    return box


@pytest.fixture
def smtp_url(smtp_server: tuple[Mailbox, int]) -> str:
    return f"smtp://127.0.0.1:{smtp_server[1]}"


@pytest.fixture
async def worker(redis: ArqRedis, smtp_url: str) -> AsyncIterator[None]:
    """The real arq worker, on the real Redis, delivering to the in-process SMTP server."""
    async with running_worker(redis, SmtpTransport(smtp_url)):
        yield


@contextlib.asynccontextmanager
async def running_worker(redis: ArqRedis, transport: Transport) -> AsyncIterator[None]:
    async def startup(ctx: dict[str, Any]) -> None:
        ctx["transport"] = transport
        StepBatches.of(ctx)

    arq_worker = make_worker(
        redis_pool=redis,
        handle_signals=False,
        on_startup=startup,
        on_shutdown=None,
        cron_jobs=[],
        poll_delay=0.05,
    )
    task = asyncio.create_task(arq_worker.async_run())
    try:
        yield
    finally:
        # Let running jobs finish: one cut off mid-transaction would hold locks into the next test.
        deadline = asyncio.get_running_loop().time() + 10
        while any(not job.done() for job in arq_worker.tasks.values()):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await arq_worker.close()


@pytest.fixture
async def server(redis_server: None) -> AsyncIterator[httpx.AsyncClient]:
    """Rebound's HTTP app on a real socket, and a client for it."""
    port = _free_port()
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    task = asyncio.create_task(uvicorn_server.serve())
    while not uvicorn_server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    uvicorn_server.should_exit = True
    await task


@pytest.fixture
async def shop() -> Shop:
    """A connected Shopify store whose first abandoned-cart email is due at once."""
    async with sessionmaker()() as session:
        created = await connect_shopify(
            session, domain=SHOP_DOMAIN, access_token="shpat_test", api_secret=SHOP_SECRET
        )
        await flows_service.set_step_delay(session, created, "abandoned_cart", 1, 0)
        await session.commit()
        return created


async def wait_for(
    condition: Callable[[], Awaitable[Any]], *, within: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll until `condition` returns something truthy; fail with a clear message otherwise."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await condition()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def standin() -> AsyncIterator[ShopifyStandin]:
    """The stand-in on a free port, with SHOPIFY_API_ORIGIN and the app's credentials pointed
    at it for the code under test (get_settings() is cached, so the attributes are swapped)."""
    standin = ShopifyStandin(client_id=SHOPIFY_CLIENT_ID, client_secret=SHOPIFY_CLIENT_SECRET)
    settings = get_settings()
    saved = (settings.shopify_api_origin, settings.shopify_api_key, settings.shopify_api_secret)
    async with serve(standin) as origin:
        settings.shopify_api_origin = origin
        settings.shopify_api_key = SHOPIFY_CLIENT_ID
        settings.shopify_api_secret = SecretStr(SHOPIFY_CLIENT_SECRET)
        try:
            yield standin
        finally:
            (
                settings.shopify_api_origin,
                settings.shopify_api_key,
                settings.shopify_api_secret,
            ) = saved


def without_utm(url: str) -> str:
    """A redirect's destination without the UTM parameters tracking adds."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.startswith("utm_")
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def link_targets(body: str) -> list[str]:
    """Where the links of an email go: tracked links (/c/…) read back to their destination."""
    import re

    from app.mail.tracking import read_click

    found = []
    for url in re.findall(r"https?://[^\s<>\"']+", body):
        click = read_click(url.rsplit("/c/", 1)[1]) if "/c/" in url else None
        found.append(without_utm(click[2]) if click else url)
    return found
