"""Every query on the webhook inbox."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import insert_for
from app.inbox.models import InboxEntry, InboxStatus


async def insert_new(
    session: AsyncSession,
    *,
    shop_id: int,
    platform: str,
    topic: str,
    delivery_id: str,
    payload: str,
) -> int | None:
    """Store a delivery; the new entry's id, or None when this delivery was stored before."""
    statement = (
        insert_for(session, InboxEntry)
        .values(
            shop_id=shop_id,
            platform=platform,
            topic=topic,
            delivery_id=delivery_id,
            payload=payload,
            status=InboxStatus.RECEIVED,
        )
        .on_conflict_do_nothing(index_elements=["shop_id", "delivery_id"])
        .returning(InboxEntry.id)
    )
    return (await session.exec(statement)).scalar_one_or_none()


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
