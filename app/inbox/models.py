from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import utcnow


class InboxStatus(StrEnum):
    RECEIVED = "received"
    HANDLED = "handled"
    FAILED = "failed"


class InboxEntry(SQLModel, table=True):
    """One verified webhook delivery, stored raw before it is acknowledged."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("shop_id", "delivery_id"),
        # A shop's entries by age: the retention purge reads only the old ones, and the admin's
        # "last event" is the index's last entry. It took the place of an index on shop_id
        # alone (migration 0021), so a delivery's INSERT keeps the same number of indexes.
        Index("ix_inbox_shop_received", "shop_id", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id")
    platform: str = Field(max_length=32)
    topic: str = Field(max_length=128)
    delivery_id: str = Field(max_length=255)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: InboxStatus = Field(default=InboxStatus.RECEIVED, max_length=16, index=True)
    error: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow)
    handled_at: datetime | None = None
