"""Flows as data, and the rows that make every scheduled step real before Redis sees it."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import utcnow


class Flow(SQLModel, table=True):
    """A shop's settings for one flow: on or off, and its steps (each a delay in seconds)."""

    __tablename__ = "flows"
    __table_args__ = (UniqueConstraint("shop_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    name: str = Field(max_length=64)
    enabled: bool = True
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    updated_at: datetime = Field(default_factory=utcnow)


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    EXITED = "exited"
    DONE = "done"


class Enrollment(SQLModel, table=True):
    """One checkout going through one flow. `next_step`/`due_at` say what runs next, and when."""

    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("shop_id", "flow", "checkout_id"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    flow: str = Field(max_length=64)
    checkout_id: int = Field(foreign_key="checkouts.id", index=True)
    email: str = Field(max_length=320, index=True)
    # The flow's steps as they were at enrollment: later edits apply to new enrollments only.
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    status: EnrollmentStatus = Field(default=EnrollmentStatus.ACTIVE, max_length=16, index=True)
    exit_reason: str | None = Field(default=None, max_length=64)
    next_step: int | None = None
    due_at: datetime | None = Field(default=None, index=True)
    recovered_order_id: int | None = Field(default=None, foreign_key="orders.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SendStatus(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Send(SQLModel, table=True):
    """The claim on one step's email: inserted before the message leaves, unique per step."""

    __tablename__ = "sends"
    __table_args__ = (UniqueConstraint("enrollment_id", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    enrollment_id: int = Field(foreign_key="enrollments.id", index=True)
    step: int
    email: str = Field(max_length=320)
    status: SendStatus = Field(default=SendStatus.SENDING, max_length=16)
    message_id: str | None = Field(default=None, max_length=255)
    # The offer this email carried, or why the step's offer was left out.
    discount_code: str | None = Field(default=None, max_length=64)
    offer_skipped: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


class Click(SQLModel, table=True):
    """A recipient followed a link in a sent email."""

    __tablename__ = "clicks"

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    send_id: int = Field(foreign_key="sends.id", index=True)
    clicked_at: datetime = Field(default_factory=utcnow)
