"""Flows as data, and the rows that make every scheduled step real before Redis sees it."""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, true
from sqlmodel import Field, SQLModel

from app.db import utcnow


class Flow(SQLModel, table=True):
    """A shop's flow as data: on or off, its steps and settings (see flows/definitions.py).
    Every edit bumps `version`; enrollments keep the steps of the version they started with."""

    __tablename__ = "flows"
    __table_args__ = (UniqueConstraint("shop_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    name: str = Field(max_length=64)
    enabled: bool = True
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    updated_at: datetime = Field(default_factory=utcnow)


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    EXITED = "exited"
    DONE = "done"


class Enrollment(SQLModel, table=True):
    """One subject going through one flow: a checkout (abandoned cart), an order (post-purchase)
    or a lapsed customer (win-back). `subject` names it uniquely within the flow;
    `next_step`/`due_at` say what runs next, and when (no `due_at`: waiting for an event)."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("shop_id", "flow", "subject", name="uq_enrollments_shop_flow_subject"),
        # From before subjects; it still holds (a checkout is one subject) and costs nothing.
        UniqueConstraint("shop_id", "flow", "checkout_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    flow: str = Field(max_length=64)
    subject: str = Field(max_length=400)  # checkout:<id>, order:<id>, lapse:<email>:<date>
    checkout_id: int | None = Field(default=None, foreign_key="checkouts.id", index=True)
    order_id: int | None = Field(
        default=None,
        index=True,
        sa_column_kwargs={},
        foreign_key="orders.id",
    )
    email: str = Field(max_length=320, index=True)
    # The flow's steps as they were at enrollment: later edits apply to new enrollments only.
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    flow_version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # What the flow knew at enrollment that its steps depend on (a win-back segment).
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # Why the next step is later than its delay says (quiet hours, smart sending, a parcel).
    waiting_for: str | None = Field(default=None, max_length=64)
    status: EnrollmentStatus = Field(default=EnrollmentStatus.ACTIVE, max_length=16, index=True)
    exit_reason: str | None = Field(default=None, max_length=64)
    next_step: int | None = None
    due_at: datetime | None = Field(default=None, index=True)
    recovered_order_id: int | None = Field(default=None, foreign_key="orders.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SendStatus(StrEnum):
    SENDING = "sending"  # claimed; `handing_off_at` set once the mail server has it in hand
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # the step's conditions did not hold; `error` says which
    # The hand-off began and its end was never recorded (a crash, a dropped connection during
    # DATA): the customer may or may not have it. Never sent again; shown to the merchant.
    UNKNOWN = "unknown"


class Send(SQLModel, table=True):
    """The claim on one step's email: inserted before the message leaves, unique per step."""

    __tablename__ = "sends"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step"),
        # Smart sending, the offer guard and attribution ask for one customer's emails: without
        # it each asked for every email of the shop, once per step and once per order.
        Index("ix_sends_shop_email_sent", "shop_id", "email", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    enrollment_id: int = Field(foreign_key="enrollments.id", index=True)
    step: int
    email: str = Field(max_length=320)
    status: SendStatus = Field(default=SendStatus.SENDING, max_length=16)
    # Marketing emails count for smart sending; transactional ones (a shipping notice) do not.
    marketing: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    message_id: str | None = Field(default=None, max_length=255)
    # The offer this email carried, or why the step's offer was left out.
    discount_code: str | None = Field(default=None, max_length=64)
    offer_skipped: str | None = Field(default=None, sa_column=Column(Text))
    # The A/B test variant this email was (or, for "holdout", was not) sent as.
    variant: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_at: datetime = Field(default_factory=utcnow)
    # When the message began to leave (SMTP: every recipient accepted, right before DATA; HTTP:
    # right before the request). A claim without it never reached the mail server.
    handing_off_at: datetime | None = None
    sent_at: datetime | None = None


# A claim reaches the mail server within seconds. Still `sending` after this, the worker died in
# between; it is never retried (no email twice), so the merchant must check their provider.
STUCK_AFTER = timedelta(minutes=15)
STUCK_NOTE = "may not have been sent — check your mail provider's log"


def may_not_have_been_sent(send: Send, now: datetime) -> bool:
    """An `unknown` send, or a claim older than the sweeper would ever leave one (it is not
    running): the merchant should look in the mail provider's log."""
    if send.status == SendStatus.UNKNOWN:
        return True
    return send.status == SendStatus.SENDING and now - send.claimed_at > STUCK_AFTER


class Click(SQLModel, table=True):
    """A recipient followed a link in a sent email."""

    __tablename__ = "clicks"

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    send_id: int = Field(foreign_key="sends.id", index=True)
    url: str | None = Field(default=None, sa_column=Column(Text))  # where a tracked link went
    clicked_at: datetime = Field(default_factory=utcnow)


class Open(SQLModel, table=True):
    """The open pixel was fetched. Kept for the merchant's figures, never used to decide:
    Apple Mail Privacy Protection fetches every image."""

    __tablename__ = "opens"

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    send_id: int = Field(foreign_key="sends.id", index=True)
    opened_at: datetime = Field(default_factory=utcnow)


class NpsAnswer(SQLModel, table=True):
    """A score from an NPS survey email: the first click counts, later ones change it."""

    __tablename__ = "nps_answers"
    __table_args__ = (UniqueConstraint("send_id"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    send_id: int = Field(foreign_key="sends.id")
    score: int
    answered_at: datetime = Field(default_factory=utcnow)


class CustomerPreference(SQLModel, table=True):
    """A customer's answer to a preference question, usable in step conditions."""

    __tablename__ = "customer_preferences"
    __table_args__ = (UniqueConstraint("shop_id", "email", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    shop_id: int = Field(foreign_key="shops.id", index=True)
    email: str = Field(max_length=320)
    key: str = Field(max_length=64)
    value: str = Field(max_length=100)
    answered_at: datetime = Field(default_factory=utcnow)
