"""Processing stored deliveries into domain events, flow changes and scheduled steps."""

import json
import logging

from arq.connections import ArqRedis
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel.ext.asyncio.session import AsyncSession

import integrations
from app.commerce.events import InvalidPayload
from app.db import sessionmaker, utcnow
from app.inbox import repository
from app.inbox.models import InboxEntry, InboxStatus
from app.queue import Jobs
from flows import engine

log = logging.getLogger("rebound.inbox")


def ingest_job_id(entry_id: int) -> str:
    return f"ingest:{entry_id}"


async def ingest(ctx: dict[str, object], entry_id: int) -> str:
    """arq job: process one inbox entry."""
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    return await process_entry(entry_id, redis)


async def process_entry(entry_id: int, redis: ArqRedis) -> str:
    """Process one entry; a payload that cannot be processed stays in the inbox as failed."""
    jobs = Jobs()
    async with sessionmaker()() as session:
        entry = await repository.get(session, entry_id)
        if entry is None or entry.status == InboxStatus.HANDLED:
            return "nothing to do"
        try:
            await _apply(session, jobs, entry)
        except (OperationalError, InterfaceError):
            raise  # the database, not the payload: the entry stays unprocessed for the sweeper
        except Exception as exc:
            await session.rollback()
            return await _fail(session, entry_id, exc)
        entry.status = InboxStatus.HANDLED
        entry.error = None
        entry.handled_at = utcnow()
        await session.commit()
    await jobs.enqueue(redis)
    return "handled"


async def _apply(session: AsyncSession, jobs: Jobs, entry: InboxEntry) -> None:
    try:
        payload = json.loads(entry.payload)
    except ValueError as exc:
        raise InvalidPayload(f"payload is not JSON: {exc}") from exc
    for event in integrations.events(entry.platform, entry.topic, payload):
        await engine.apply(session, jobs, entry.shop_id, event)


async def _fail(session: AsyncSession, entry_id: int, exc: Exception) -> str:
    reason = str(exc) if isinstance(exc, InvalidPayload) else f"{type(exc).__name__}: {exc}"
    entry = await repository.get(session, entry_id)
    assert entry is not None
    entry.status = InboxStatus.FAILED
    entry.error = reason
    await session.commit()
    if isinstance(exc, InvalidPayload):
        log.warning("inbox entry %s (%s) failed: %s", entry_id, entry.topic, reason)
    else:
        log.exception("inbox entry %s (%s) failed", entry_id, entry.topic, exc_info=exc)
    return f"failed: {reason}"
