"""Database engines and sessions: async drivers at run time, sync ones for Alembic."""

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import get_settings


def utcnow() -> datetime:
    """Now, aware, in UTC: UTCDateTime columns store UTC and hand back aware values."""
    return datetime.now(UTC)


def database_url(url: str, *, asynchronous: bool) -> URL:
    """Pick the driver for a `sqlite:///…` or `postgresql://…` URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"DATABASE_URL must be sqlite:///… or postgresql://…, not {backend}://")


def _tune_sqlite(engine: Engine) -> None:
    # WAL lets the API read while the worker writes; the busy timeout waits out short write locks.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(get_settings().sqlite_busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Erased personal data must not linger in free pages (privacy law redaction).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()


# Connections kept open per process. SQLAlchemy's default keeps 5 and closes the rest when they
# come back: a worker running 10 jobs at once opened and closed connections all the time (bench/
# send.py saw a hundred aiosqlite threads come and go; on PostgreSQL each is a new login).
POOL_SIZE = 20


def _json_loads(text: str | bytes) -> Any:
    """JSON columns as json.loads reads them, by orjson: a step reads four rows' JSON, and
    json.loads was a fortieth of a worker's time (bench/send.py). What orjson refuses and
    json.loads takes (NaN, integers past 64 bits) still reads."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str | None = None) -> AsyncEngine:
    target = database_url(url or get_settings().database, asynchronous=True)
    engine = create_async_engine(
        target,
        pool_pre_ping=target.get_backend_name() != "sqlite",
        pool_size=POOL_SIZE,
        max_overflow=10,
        json_deserializer=_json_loads,
    )
    if target.get_backend_name() == "sqlite":
        _tune_sqlite(engine.sync_engine)
    return engine


_engine: AsyncEngine | None = None
_sessions: async_sessionmaker[AsyncSession] | None = None


def get_engine() -> AsyncEngine:
    global _engine
    if _engine is None:
        _engine = make_engine()
    return _engine


def sessionmaker() -> async_sessionmaker[AsyncSession]:
    global _sessions
    if _sessions is None:
        _sessions = async_sessionmaker(get_engine(), class_=AsyncSession, expire_on_commit=False)
    return _sessions


@contextlib.asynccontextmanager
async def pinned_session() -> AsyncIterator[AsyncSession]:
    """A session that keeps one connection through all its transactions. A step commits three
    times (the claim before the message leaves, the hand-off mark, the outcome); a plain
    session hands its connection back after each commit and checks one out for the next, and
    every check-out pings the server first (pool_pre_ping) and every check-in resets."""
    async with (
        get_engine().connect() as connection,
        AsyncSession(bind=connection, expire_on_commit=False) as session,
    ):
        yield session


async def dispose_engine() -> None:
    global _engine, _sessions
    if _engine is not None:
        await _engine.dispose()
    _engine, _sessions = None, None


async def get_session() -> AsyncIterator[AsyncSession]:
    session = sessionmaker()()
    try:
        yield session
    finally:
        try:
            await session.close()
        except (OperationalError, InterfaceError):
            # The connection died with the database: the request's own error answers (503);
            # a second one from the rollback would cut the response off.
            with contextlib.suppress(Exception):
                await session.invalidate()


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def insert_for(session: AsyncSession, model: Any) -> Any:
    """An INSERT with ON CONFLICT support for whichever of SQLite or PostgreSQL the session uses."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)
