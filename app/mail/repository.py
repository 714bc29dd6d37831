"""Every query on who may be emailed."""

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.repository import normalize_email
from app.db import insert_for
from app.mail.models import Unsubscribe


async def is_unsubscribed(session: AsyncSession, shop_id: int, email: str) -> bool:
    query = select(Unsubscribe.id).where(
        Unsubscribe.shop_id == shop_id, Unsubscribe.email == normalize_email(email)
    )
    return (await session.exec(query)).first() is not None


async def add_unsubscribe(session: AsyncSession, shop_id: int, email: str) -> None:
    statement = (
        insert_for(session, Unsubscribe)
        .values(shop_id=shop_id, email=normalize_email(email))
        .on_conflict_do_nothing(index_elements=["shop_id", "email"])
    )
    await session.exec(statement)
