"""What the flows did lately: emails sent, skipped, failed, offers withheld; series waiting."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.api.auth import ShopDep
from app.api.errors import RESPONSES
from app.db import SessionDep, utcnow
from flows import repository as flows_repository
from flows.models import STUCK_NOTE, Enrollment, Send, may_not_have_been_sent

router = APIRouter(prefix="/api", tags=["activity"], responses=RESPONSES)


class SendActivity(BaseModel):
    at: datetime
    flow: str
    step: str  # the step's key; "alert" for customer service's alert
    email: str
    status: str  # sending, sent, failed, skipped
    note: str | None  # why it was skipped or failed, the code it carried, an offer withheld
    # Still `sending` 15 minutes after it was claimed: the worker stopped before or while handing
    # it to the mail server, and it is never retried. Only the provider's log can tell.
    stuck: bool = False


class WaitingActivity(BaseModel):
    due: datetime | None  # None: waiting for an event (a parcel)
    flow: str
    step: str
    email: str
    waiting_for: str | None


class EndedActivity(BaseModel):
    at: datetime
    flow: str
    email: str
    reason: str  # purchased, unsubscribed, sold_out, undeliverable, checkout_closed, …


class Activity(BaseModel):
    sends: list[SendActivity]
    waiting: list[WaitingActivity]
    ended: list[EndedActivity]  # series stopped before their end, and why


def _note(send: Send, stuck: bool) -> str | None:
    notes = [STUCK_NOTE] if stuck else []
    notes += [send.error] if send.error else []
    if send.offer_skipped:
        notes.append(f"offer withheld: {send.offer_skipped}")
    elif send.discount_code:
        notes.append(f"offer {send.discount_code}")
    return "; ".join(notes) or None


def _step_key(enrollment: Enrollment, step: int | None) -> str:
    if step is None:
        return "-"
    if step < 0:
        return "alert"
    steps = enrollment.steps
    return str(steps[step].get("key") or step + 1) if step < len(steps) else str(step + 1)


def _send_activity(send: Send, enrollment: Enrollment, stuck: bool) -> SendActivity:
    return SendActivity(
        at=send.claimed_at,
        flow=enrollment.flow,
        step=_step_key(enrollment, send.step),
        email=send.email,
        status=send.status.value,
        note=_note(send, stuck),
        stuck=stuck,
    )


@router.get("/activity")
async def activity(
    shop: ShopDep, session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> Activity:
    """The latest `limit` emails, newest first; up to `limit` series waiting for a parcel, the
    morning or smart sending; and up to `limit` series stopped early, with the reason."""
    assert shop.id is not None
    sends = await flows_repository.recent_activity(session, shop.id, limit)
    waiting = await flows_repository.waiting_enrollments(session, shop.id, limit)
    ended = await flows_repository.ended_enrollments(session, shop.id, limit)
    now = utcnow()
    return Activity(
        sends=[
            _send_activity(send, enrollment, may_not_have_been_sent(send, now))
            for send, enrollment in sends
        ],
        waiting=[
            WaitingActivity(
                due=enrollment.due_at,
                flow=enrollment.flow,
                step=_step_key(enrollment, enrollment.next_step),
                email=enrollment.email,
                waiting_for=enrollment.waiting_for,
            )
            for enrollment in waiting
        ],
        ended=[
            EndedActivity(
                at=enrollment.updated_at,
                flow=enrollment.flow,
                email=enrollment.email,
                reason=enrollment.exit_reason or "",
            )
            for enrollment in ended
        ],
    )
