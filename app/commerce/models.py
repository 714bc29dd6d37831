"""The shop's commerce records, platform-neutral: what flows read to decide and to compose."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import utcnow


class Checkout(SQLModel, table=True):
    __tablename__ = "checkouts"
    __table_args__ = (UniqueConstraint("shop_id", "token"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    token: str = Field(max_length=255)
    cart_token: str | None = Field(default=None, max_length=255, index=True)
    email: str | None = Field(default=None, max_length=320, index=True)
    first_name: str | None = Field(default=None, max_length=255)
    locale: str | None = Field(default=None, max_length=32)
    currency: str = Field(max_length=3)
    # Decimal strings, exactly as the platform sent them: no float ever touches money.
    subtotal_price: str
    total_price: str
    line_items: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    restore_url: str | None = None
    started_at: datetime
    platform_updated_at: datetime
    completed_at: datetime | None = None
    # Cancelled or deleted in the store: there is nothing left to restore.
    closed_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("shop_id", "platform_id"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    # Platform ids go above 2**53: kept as text so no JSON float or JS number ever rounds them.
    platform_id: str = Field(max_length=64)
    name: str = Field(max_length=64)
    checkout_token: str | None = Field(default=None, max_length=255, index=True)
    cart_token: str | None = Field(default=None, max_length=255, index=True)
    email: str | None = Field(default=None, max_length=320, index=True)
    currency: str = Field(max_length=3)
    total_price: str
    placed_at: datetime
    created_at: datetime = Field(default_factory=utcnow)
