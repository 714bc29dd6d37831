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
    # "unsubscribed" (they asked) or "winback_ignored" (no reply to the goodbye email).
    reason: str = Field(default="unsubscribed", max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


class Suppression(SQLModel, table=True):
    """An address this shop must not email: it bounced for good, complained, or a server
    refused it with a 5xx. Kept apart from unsubscribes: nobody asked, the mail cannot go."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("shop_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    email: str = Field(max_length=320)
    # "bounce", "complaint" or "smtp_5xx"
    reason: str = Field(max_length=16)
    detail: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow)
