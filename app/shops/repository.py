"""Every query on shops."""

from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.shops.models import Shop


async def get(session: AsyncSession, shop_id: int) -> Shop | None:
    return await session.get(Shop, shop_id)


async def get_by_domain(session: AsyncSession, platform: str, domain: str) -> Shop | None:
    query = select(Shop).where(Shop.platform == platform, Shop.domain == domain.lower())
    return (await session.exec(query)).first()


async def list_all(session: AsyncSession) -> Sequence[Shop]:
    return (await session.exec(select(Shop).order_by(col(Shop.id)))).all()


async def find_by_domain(session: AsyncSession, domain: str) -> Shop | None:
    """The store with this domain on any platform (a host names one store)."""
    query = select(Shop).where(Shop.domain == domain.strip().lower()).order_by(col(Shop.id))
    return (await session.exec(query)).first()
