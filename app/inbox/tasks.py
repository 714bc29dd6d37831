"""Processing stored deliveries into domain events, flow changes and scheduled steps."""

import json
import logging
from enum import Enum

from arq.connections import ArqRedis
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel.ext.asyncio.session import AsyncSession

import integrations
from app.commerce.events import (
    CommerceEvent,
    CustomerDataRequested,
    CustomerRedacted,
    InvalidPayload,
    ShopUninstalled,
)
from app.db import sessionmaker, utcnow
from app.inbox import repository, retention
from app.inbox.models import InboxEntry, InboxStatus
from app.privacy import service as privacy
from app.queue import Jobs
from app.shops import repository as shops
from app.shops import service as shops_service
from flows import engine

log = logging.getLogger("rebound.inbox")


def ingest_job_id(entry_id: int) -> str:
    return f"ingest:{entry_id}"


async def ingest(ctx: dict[str, object], entry_id: int) -> str:
    """arq job: process one inbox entry."""
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    return await process_entry(entry_id, redis)


async def purge_inbox(ctx: dict[str, object]) -> str:
    """Daily: delete the inbox entries past their retention (app/inbox/retention.py)."""
    deleted = await retention.purge(utcnow())
    return (
        f"{deleted[InboxStatus.HANDLED]} processed and {deleted[InboxStatus.FAILED]} failed "
        "inbox entries deleted"
    )


async def process_entry(entry_id: int, redis: ArqRedis) -> str:
    """Process one entry; a payload that cannot be processed stays in the inbox as failed."""
    jobs = Jobs()
    async with sessionmaker()() as session:
        entry = await repository.get(session, entry_id)
        if entry is None or entry.status == InboxStatus.HANDLED:
            return "nothing to do"
        try:
            erased = await _apply(session, jobs, entry)
        except (OperationalError, InterfaceError):
            raise  # the database, not the payload: the entry stays unprocessed for the sweeper
        except Exception as exc:
            await session.rollback()
            return await _fail(session, entry_id, exc)
        if erased is not Erased.SHOP:  # a deleted shop took its inbox with it
            entry.status = InboxStatus.HANDLED
            entry.error = None
            entry.handled_at = utcnow()
        await session.commit()
        if erased:
            await privacy.purge_erased_bytes(session)
    await jobs.enqueue(redis)
    return "handled"


class Erased(Enum):
    NOTHING = 0
    CUSTOMER = 1
    SHOP = 2

    def __bool__(self) -> bool:
        return self is not Erased.NOTHING


async def _apply(session: AsyncSession, jobs: Jobs, entry: InboxEntry) -> Erased:
    try:
        payload = json.loads(entry.payload)
    except ValueError as exc:
        raise InvalidPayload(f"payload is not JSON: {exc}") from exc
    shop = await shops.get(session, entry.shop_id)
    assert shop is not None
    erased = Erased.NOTHING
    for event in integrations.events(entry.platform, entry.topic, payload):
        if isinstance(event, CommerceEvent):
            await engine.apply(session, jobs, entry.shop_id, event)
        elif isinstance(event, ShopUninstalled):
            await shops_service.uninstall(session, shop)
        elif isinstance(event, CustomerDataRequested):
            await privacy.record_data_request(session, shop, event.customer, event.request_id)
        elif isinstance(event, CustomerRedacted):
            await privacy.redact_customer(session, shop, event.customer)
            erased = Erased.CUSTOMER
        else:
            await privacy.redact_shop(session, shop)
            return Erased.SHOP
    return erased


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
