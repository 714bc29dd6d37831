"""Every query on who may be emailed."""

from typing import Literal

from sqlalchemy import exists
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.repository import normalize_email
from app.db import insert_for
from app.mail.models import Suppression, Unsubscribe

SuppressionReason = Literal["bounce", "complaint", "smtp_5xx"]


async def is_unsubscribed(session: AsyncSession, shop_id: int, email: str) -> bool:
    query = select(Unsubscribe.id).where(
        Unsubscribe.shop_id == shop_id, Unsubscribe.email == normalize_email(email)
    )
    return (await session.exec(query)).first() is not None


async def unsubscribed_among(session: AsyncSession, shop_id: int, emails: list[str]) -> set[str]:
    """Which of `emails` (normalized) have unsubscribed: `is_unsubscribed` for a batch at once."""
    wanted = {e for e in map(normalize_email, emails) if e}
    query = select(Unsubscribe.email).where(
        Unsubscribe.shop_id == shop_id, col(Unsubscribe.email).in_(wanted)
    )
    return set((await session.exec(query)).all())


async def add_unsubscribe(
    session: AsyncSession, shop_id: int, email: str, *, reason: str = "unsubscribed"
) -> None:
    statement = (
        insert_for(session, Unsubscribe)
        .values(shop_id=shop_id, email=normalize_email(email), reason=reason)
        .on_conflict_do_nothing(index_elements=["shop_id", "email"])
    )
    await session.exec(statement)


async def opted_out(session: AsyncSession, shop_id: int, email: str) -> tuple[bool, bool]:
    """(suppressed, unsubscribed) for the address, in one round trip: every step asks both."""
    address = normalize_email(email)
    suppressed = exists().where(
        col(Suppression.shop_id) == shop_id, col(Suppression.email) == address
    )
    unsubscribed = exists().where(
        col(Unsubscribe.shop_id) == shop_id, col(Unsubscribe.email) == address
    )
    row = (await session.exec(select(suppressed, unsubscribed))).one()
    return bool(row[0]), bool(row[1])


async def add_suppression(
    session: AsyncSession,
    shop_id: int,
    email: str,
    reason: SuppressionReason,
    detail: str | None = None,
) -> None:
    """Put the address on the shop's suppression list; an address already there keeps its
    first reason."""
    address = normalize_email(email)
    if address is None:
        return
    statement = (
        insert_for(session, Suppression)
        .values(
            shop_id=shop_id,
            email=address,
            reason=reason,
            detail=" ".join(detail.split())[:500] if detail else None,
        )
        .on_conflict_do_nothing(index_elements=["shop_id", "email"])
    )
    await session.exec(statement)
