"""Every query on the webhook inbox."""

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.inbox.models import InboxEntry, InboxStatus


async def insert_many(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]]
) -> dict[tuple[int, str], int]:
    """Store deliveries in one statement; the new entries' ids by (shop_id, delivery_id). One
    stored before, or twice in `rows`, is stored once: the rows left out have no id."""
    if not rows:
        return {}
    if connection.dialect.name == "postgresql":
        columns = tuple([row[name] for row in rows] for name in _UNNESTED)
        result = await connection.exec_driver_sql(_insert_unnested(), (utcnow(), *columns))
    else:
        news = [{**row, "status": InboxStatus.RECEIVED} for row in rows]
        result = await connection.execute(_insert_new(), news)
    return {(row.shop_id, row.delivery_id): row.id for row in result}


# The columns a delivery brings, in the order _insert_unnested's arrays take them.
_UNNESTED = ("shop_id", "platform", "topic", "delivery_id", "payload")


@functools.cache
def _insert_unnested() -> str:
    """PostgreSQL's INSERT of a batch: one array per column, so the statement's text is the
    same for every batch. A multi-row VALUES has new text for each size of batch, too long for
    psycopg's cache of converted queries: converting it and SQLAlchemy's expansion of it were a
    quarter of the receiver's CPU (bench/ingest.py --profile). The arrays go in binary (%b):
    psycopg writes a text array by escaping each payload in Python, about 6 ms for 32 of them,
    a hundred times the binary's time."""
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    status_type = table.c.status.type.name  # the enum holds the members' names
    arrays = ", ".join(
        f"%b::{table.c[name].type.compile(postgresql.dialect())}[]" for name in _UNNESTED
    )
    names = ", ".join(_UNNESTED)
    return (
        f"INSERT INTO {table.name} ({names}, status, received_at)"
        f" SELECT {names}, '{InboxStatus.RECEIVED.name}'::{status_type}, %s"
        f" FROM unnest({arrays}) AS batch({names})"
        " ON CONFLICT (shop_id, delivery_id) DO NOTHING"
        " RETURNING id, shop_id, delivery_id"
    )


@functools.cache
def _insert_new() -> Any:
    """SQLite's: Core, executed with a list of rows: SQLAlchemy sends them as one multi-row
    INSERT from a statement it compiles once. The ORM's bulk insert built and compiled one per
    batch, and cost four times as much CPU for 32 rows (about 0.3 ms a row)."""
    table = InboxEntry.__table__  # type: ignore[attr-defined]
    return (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["shop_id", "delivery_id"])
        .returning(table.c.id, table.c.shop_id, table.c.delivery_id)
    )


async def get(session: AsyncSession, entry_id: int) -> InboxEntry | None:
    return await session.get(InboxEntry, entry_id, populate_existing=True)


async def with_status(
    session: AsyncSession, status: InboxStatus, *, shop_id: int | None = None
) -> Sequence[InboxEntry]:
    query = select(InboxEntry).where(InboxEntry.status == status)
    if shop_id is not None:
        query = query.where(InboxEntry.shop_id == shop_id)
    return (await session.exec(query.order_by(col(InboxEntry.id)))).all()


async def unhandled_before(session: AsyncSession, moment: datetime) -> Sequence[int]:
    query = select(InboxEntry.id).where(
        InboxEntry.status == InboxStatus.RECEIVED, col(InboxEntry.received_at) < moment
    )
    return [entry_id for entry_id in (await session.exec(query)).all() if entry_id is not None]


async def last_received_at(session: AsyncSession, shop_id: int) -> datetime | None:
    """When the shop's platform last delivered a webhook (the admin's connection status)."""
    query = select(func.max(InboxEntry.received_at)).where(InboxEntry.shop_id == shop_id)
    return (await session.exec(query)).first()


async def count_with_status(session: AsyncSession, shop_id: int, status: InboxStatus) -> int:
    query = select(func.count(col(InboxEntry.id))).where(
        InboxEntry.shop_id == shop_id, InboxEntry.status == status
    )
    return int((await session.exec(query)).one())


def _older(shop_id: int, status: InboxStatus, before: datetime) -> ColumnElement[bool]:
    """The shop's entries with `status` received before `before` (ix_inbox_shop_received)."""
    return (
        (col(InboxEntry.shop_id) == shop_id)
        & (col(InboxEntry.received_at) < before)
        & (col(InboxEntry.status) == status)
    )


async def count_older(
    session: AsyncSession, shop_id: int, status: InboxStatus, before: datetime
) -> int:
    query = select(func.count(col(InboxEntry.id))).where(_older(shop_id, status, before))
    return int((await session.exec(query)).one())


async def delete_older(
    session: AsyncSession, shop_id: int, status: InboxStatus, before: datetime, limit: int
) -> int:
    """Delete up to `limit` of them; how many went. A bounded DELETE keeps each transaction,
    and the locks it holds, short however many old entries there are. `id IN (SELECT … LIMIT)`
    works on both SQLite and PostgreSQL, neither of which has DELETE … LIMIT by default."""
    batch = select(InboxEntry.id).where(_older(shop_id, status, before)).limit(limit)
    result = await session.exec(delete(InboxEntry).where(col(InboxEntry.id).in_(batch)))
    return int(result.rowcount)
