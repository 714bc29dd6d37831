"""The shop's commerce records, platform-neutral: what flows read to decide and to compose."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
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
    last_name: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=255)
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
    __table_args__ = (
        UniqueConstraint("shop_id", "platform_id"),
        # A customer's orders in time order: win-back's lapse scan and RFM read them this way,
        # from the index alone on PostgreSQL (the other columns they read are included).
        Index(
            "ix_orders_shop_email_placed_covering",
            "shop_id",
            "email",
            "placed_at",
            postgresql_include=["total_price", "cancelled_at", "platform_id"],
        ),
    )

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
    line_items: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    shipping_country: str | None = Field(default=None, max_length=2)
    locale: str | None = Field(default=None, max_length=32)
    discount_codes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    first_name: str | None = Field(default=None, max_length=255)
    cancelled_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Shipment(SQLModel, table=True):
    """A fulfilment of an order, with its tracking. Keyed by the platform's order id rather than
    the order row: a fulfilment webhook may arrive before the order's."""

    __tablename__ = "shipments"
    __table_args__ = (UniqueConstraint("shop_id", "order_platform_id", "platform_id"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    order_platform_id: str = Field(max_length=64)
    platform_id: str = Field(max_length=64)
    tracking: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    shipped_at: datetime
    delivered_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    platform_updated_at: datetime | None = None  # the platform's own, ordering late deliveries


class Refund(SQLModel, table=True):
    """Money returned on an order; like shipments, keyed by the platform's order id."""

    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("shop_id", "order_platform_id", "platform_id"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    order_platform_id: str = Field(max_length=64)
    platform_id: str = Field(max_length=64)
    amount: str  # decimal string
    refunded_at: datetime


class OrderItem(SQLModel, table=True):
    """One product line of an order, as rows: "bought together" is a join on these."""

    __tablename__ = "order_items"
    __table_args__ = (Index("ix_order_items_shop_product", "shop_id", "product_id"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id")
    order_id: int = Field(foreign_key="orders.id", index=True)
    email: str | None = Field(default=None, max_length=320)
    product_id: str = Field(max_length=64)
    variant_id: str | None = Field(default=None, max_length=64)
    title: str = Field(max_length=512)
