"""The figures the admin shows, as plain values computed in SQL, and the A/B test tables."""

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.db import utcnow


@dataclass(frozen=True)
class FlowFigures:
    flow: str
    emails: int  # sent in the period
    clicks: int  # recipients' clicks on any link of those emails
    orders: int  # attributed orders
    revenue: Decimal  # attributed revenue less refunds, in the shop's currency
    conversion: float  # orders / emails (0 when no email)
    # The part of `revenue` from the carts the reminders were about; the rest came by a click.
    recovered: Decimal = Decimal(0)


@dataclass(frozen=True)
class DayFigures:
    day: date
    revenue: dict[str, Decimal]  # flow → attributed revenue that day


@dataclass(frozen=True)
class Overview:
    days: int  # 7, 30 or 90
    currency: str
    flows: list[FlowFigures]
    series: list[DayFigures] = field(default_factory=list)  # one per day, oldest first

    @property
    def revenue(self) -> Decimal:
        return sum((f.revenue for f in self.flows), Decimal(0))


@dataclass(frozen=True)
class VariantFigures:
    key: str  # the variant's key, or "holdout"
    weight: float
    recipients: int
    clicks: int
    orders: int
    revenue: Decimal
    revenue_per_recipient: Decimal
    probability_best: float  # 0..1, Beta-Binomial on conversions


class Attribution(SQLModel, table=True):
    """The Rebound email an order is credited to, decided once when the order arrives (see
    app/analytics/service.py). No money is stored: revenue is the order's total less its refunds,
    read at query time, so a later refund or cancellation shows at once."""

    __tablename__ = "attributions"
    __table_args__ = (
        UniqueConstraint("shop_id", "order_id"),
        Index("ix_attributions_shop_attributed_at", "shop_id", "attributed_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Cascades: the privacy module deletes a shop's sends and orders without knowing this table.
    shop_id: int = Field(foreign_key="shops.id", ondelete="CASCADE")
    order_id: int = Field(foreign_key="orders.id", ondelete="CASCADE")
    send_id: int = Field(foreign_key="sends.id", ondelete="CASCADE", index=True)
    flow: str = Field(max_length=64)
    step: int  # the send's step: its index in the enrollment's steps
    variant: str | None = Field(default=None, max_length=64)
    via: str = Field(max_length=16)  # "cart" (the order's own checkout) or "click"
    attributed_at: datetime  # the order's placed_at: revenue falls on the day it was earned


class AbTest(SQLModel, table=True):
    """A test on one step of one flow: variants with weights and a holdout share that gets
    nothing, so lift is measured against no email at all."""

    __tablename__ = "ab_tests"
    __table_args__ = (
        UniqueConstraint("shop_id", "flow", "step_key", "started_at"),
        # One running test per step, even when two admins start one at the same moment.
        Index(
            "uq_ab_tests_running_step",
            "shop_id",
            "flow",
            "step_key",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True, ondelete="CASCADE")
    flow: str = Field(max_length=64)
    step_key: str = Field(max_length=64)
    # [{"key": "a", "weight": 1, "template": "...", "subject": {...}}, ...]
    variants: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    holdout: float = 0.0  # share of recipients who get no email (0 to 0.5)
    min_recipients: int = 500  # per variant, before a winner may be chosen
    winner: str | None = Field(default=None, max_length=64)
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None


class Assignment(SQLModel, table=True):
    """Which variant a customer got in a test: decided once, by a hash, kept."""

    __tablename__ = "ab_assignments"
    __table_args__ = (UniqueConstraint("test_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True, ondelete="CASCADE")
    test_id: int = Field(foreign_key="ab_tests.id", index=True, ondelete="CASCADE")
    email: str = Field(max_length=320)
    variant: str = Field(max_length=64)
    # The first email of the test this customer got; a released claim (a failed delivery)
    # deletes its send, so the link is cleared rather than blocking that.
    send_id: int | None = Field(default=None, foreign_key="sends.id", ondelete="SET NULL")
    assigned_at: datetime = Field(default_factory=utcnow)
