from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import utcnow


class Unsubscribe(SQLModel, table=True):
    """An address that asked this shop for no more email."""

    __tablename__ = "unsubscribes"
    __table_args__ = (UniqueConstraint("shop_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    email: str = Field(max_length=320)
    created_at: datetime = Field(default_factory=utcnow)
