"""The flow interpreter: events enroll and end enrollments; due steps claim, compose and send.
It reads flows as data (flows/definitions.py); nothing here knows a platform."""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.message import EmailMessage
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

import integrations
from app.analytics import abtests, attribution
from app.analytics.models import AbTest
from app.commerce import repository as commerce
from app.commerce.catalog import VariantDetails
from app.commerce.events import (
    CheckoutChanged,
    CheckoutClosed,
    CommerceEvent,
    OrderCancelled,
    OrderPlaced,
    OrderShipped,
)
from app.commerce.models import Checkout, Order, Shipment
from app.commerce.offers import DiscountCode, Offer, OfferError, code_for
from app.customers import repository as customers
from app.db import utcnow
from app.mail import compose
from app.mail import repository as mail_repository
from app.mail import transport as transports
from app.mail.transport import (
    Handoff,
    PermanentDeliveryError,
    Transport,
    UncertainDelivery,
    transport_for_shop,
)
from app.queue import Jobs
from app.shops import repository as shops
from app.shops.models import Shop
from flows import repository, timing
from flows.definitions import (
    ABANDONED_CART,
    DAY,
    POST_PURCHASE,
    TRIGGERS,
    WINBACK,
    settings_for,
)
from flows.models import Enrollment, EnrollmentStatus, Flow, Send, SendStatus

log = logging.getLogger("rebound.flows")

ALERT_STEP = -1  # the internal alert's claim, beside the first reminder's
ORDER_MAX_AGE = 30 * DAY  # an order older than this (a backfill, a replay) starts no flow


@dataclass
class Subject:
    """What an enrollment is about, loaded fresh for each step."""

    shop: Shop
    flow: Flow | None
    checkout: Checkout | None = None
    order: Order | None = None
    shipments: list[Shipment] = field(default_factory=list)
    # The flow's settings as they were at enrollment, like its steps.
    snapshot: dict[str, Any] | None = None
    # Opt-outs already asked about during this step: the exit and marketing checks share them.
    unsubscribed: dict[str, bool] = field(default_factory=dict)
    facts: repository.StepFacts | None = None  # read with the step's rows

    name: str = ABANDONED_CART  # the flow's name, even when the flow row is gone

    @property
    def settings(self) -> dict[str, Any]:
        return settings_for(self.name, self.snapshot or (self.flow.settings if self.flow else None))


# --- events ----------------------------------------------------------------------------------


async def apply(session: AsyncSession, jobs: Jobs, shop_id: int, event: CommerceEvent) -> None:
    """Record what the event says about the shop's commerce, then move the flows along."""
    if isinstance(event, CheckoutChanged):
        checkout = await commerce.upsert_checkout(session, shop_id, event)
        await _checkout_changed(session, jobs, checkout)
    elif isinstance(event, CheckoutClosed):
        await _checkout_closed(session, shop_id, event.token)
    elif isinstance(event, OrderPlaced):
        order = await commerce.insert_order(session, shop_id, event)
        await _order_placed(session, order)
        await attribution.attribute(session, order)
        await _enroll_order(session, jobs, order)
    elif isinstance(event, OrderShipped):
        await commerce.upsert_shipment(session, shop_id, event)
        await _order_progressed(session, jobs, shop_id, event.order_id)
    elif isinstance(event, OrderCancelled):
        await commerce.record_cancellation(session, shop_id, event)
        await _order_ended(session, shop_id, event.order_id, "order_cancelled")
    else:
        await commerce.record_refund(session, shop_id, event)
        refunded = await commerce.get_order(session, shop_id, event.order_id)
        if refunded is not None and await commerce.is_fully_refunded(session, refunded):
            await _order_ended(session, shop_id, event.order_id, "order_refunded")


async def _checkout_closed(session: AsyncSession, shop_id: int, token: str) -> None:
    checkout = await commerce.get_checkout_by_token(session, shop_id, token)
    if checkout is None or checkout.id is None:
        return
    checkout.closed_at = checkout.closed_at or utcnow()
    enrollment = await repository.enrollment_for_checkout(
        session, shop_id, ABANDONED_CART, checkout.id
    )
    if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
        exit_enrollment(enrollment, "checkout_closed")


async def _checkout_changed(session: AsyncSession, jobs: Jobs, checkout: Checkout) -> None:
    assert checkout.id is not None
    enrollment = await repository.enrollment_for_checkout(
        session, checkout.shop_id, ABANDONED_CART, checkout.id
    )
    if enrollment is not None:
        await _update_enrollment(session, jobs, enrollment, checkout)
        return
    flow = await enabled_flow(session, checkout.shop_id, ABANDONED_CART)
    if flow is None or not await _may_enroll_checkout(session, checkout, flow):
        return
    assert checkout.email is not None
    await enroll(
        session, jobs, flow, subject=f"checkout:{checkout.id}", email=checkout.email,
        checkout_id=checkout.id,
    )  # fmt: skip


async def _may_enroll_checkout(session: AsyncSession, checkout: Checkout, flow: Flow) -> bool:
    """A cart worth reminding about, from a customer not reminded too recently; a newer cart of
    the same customer takes over from an older one still running."""
    if checkout.email is None or checkout.completed_at or not checkout.line_items:
        return False
    settings = settings_for(flow.name, flow.settings)
    if await _checkout_exit(session, checkout, settings) is not None:
        return False
    if _amount(checkout.subtotal_price) < _amount(settings["min_cart_value"]):
        return False
    latest = await repository.latest_enrollment_for_email(
        session, checkout.shop_id, flow.name, checkout.email
    )
    if latest is None:
        return True
    if latest.status == EnrollmentStatus.ACTIVE:
        older = await commerce.get_checkout(session, checkout.shop_id, latest.checkout_id or 0)
        if older is not None and older.started_at > checkout.started_at:
            return False  # this one is the older cart, arriving late
        exit_enrollment(latest, "newer_checkout")
        return True
    # Counted from when the last series ended (its last change), not from when it began: a
    # series that ran for days has only just stopped reminding this customer.
    ended = max(latest.created_at, latest.updated_at)
    return ended < utcnow() - timedelta(days=settings["reenroll_after_days"])


async def _update_enrollment(
    session: AsyncSession, jobs: Jobs, enrollment: Enrollment, checkout: Checkout
) -> None:
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return
    reason = await _checkout_exit(session, checkout, enrollment_settings(enrollment))
    if reason:
        exit_enrollment(enrollment, reason)
        return
    if checkout.email and checkout.email != enrollment.email:
        enrollment.email = checkout.email
    if enrollment.next_step is not None and enrollment.due_at is not None:
        # The shopper is active again: the next reminder counts from when they stop, as every
        # step of the series counts from the cart's last activity.
        step = enrollment.steps[enrollment.next_step]
        due = checkout.platform_updated_at + timedelta(seconds=step["delay"])
        if due > enrollment.due_at:
            enrollment.due_at = due
            enrollment.updated_at = utcnow()
            schedule(jobs, enrollment)


async def _order_placed(session: AsyncSession, order: Order) -> None:
    """A purchase ends the flows that were trying to bring one about, and is their revenue."""
    checkout_ids = await commerce.checkout_ids_for_order(session, order)
    settled = await repository.enrollments_settled_by_order(
        session,
        order.shop_id,
        checkout_ids=checkout_ids,
        email=order.email,
        placed_at=order.placed_at,
    )
    for enrollment in settled:
        # The cart's own order always settles it; any other only when the flow says so.
        own_cart = enrollment.checkout_id is not None and enrollment.checkout_id in checkout_ids
        if not own_cart and not enrollment_settings(enrollment)["exit_on_order"]:
            continue
        if enrollment.status == EnrollmentStatus.ACTIVE:
            exit_enrollment(enrollment, "purchased")
        if await repository.has_sends(session, enrollment.id or 0):
            enrollment.recovered_order_id = order.id
            log.warning(
                "RECOVERED order %s, %s %s, after %s email(s) (enrollment %s)",
                order.name,
                order.total_price,
                order.currency,
                enrollment.flow,
                enrollment.id,
            )


async def _enroll_order(session: AsyncSession, jobs: Jobs, order: Order) -> None:
    if (
        order.email is None
        or order.cancelled_at
        or order.placed_at < utcnow() - timedelta(seconds=ORDER_MAX_AGE)
        # A refund delivered before its order: the series would wait for a parcel forever.
        or await commerce.is_fully_refunded(session, order)
    ):
        return
    flow = await enabled_flow(session, order.shop_id, POST_PURCHASE)
    if flow is not None:
        await enroll(
            session, jobs, flow, subject=f"order:{order.id}", email=order.email,
            order_id=order.id,
        )  # fmt: skip


async def _order_progressed(
    session: AsyncSession, jobs: Jobs, shop_id: int, order_platform_id: str
) -> None:
    """A parcel shipped or arrived: steps that waited for it get their time."""
    order = await commerce.get_order(session, shop_id, order_platform_id)
    if order is None or order.id is None:
        return
    for enrollment in await repository.enrollments_for_order(session, shop_id, order.id):
        if enrollment.status == EnrollmentStatus.ACTIVE and not await repository.has_send(
            session, enrollment.id or 0, enrollment.next_step or 0
        ):
            await plan(session, enrollment, await load_subject(session, enrollment))
            schedule(jobs, enrollment)


async def _order_ended(
    session: AsyncSession, shop_id: int, order_platform_id: str, reason: str
) -> None:
    order = await commerce.get_order(session, shop_id, order_platform_id)
    if order is None or order.id is None:
        return
    for enrollment in await repository.enrollments_for_order(session, shop_id, order.id):
        if enrollment.status == EnrollmentStatus.ACTIVE:
            exit_enrollment(enrollment, reason)


async def unsubscribe(session: AsyncSession, shop_id: int, email: str) -> None:
    """Record the opt-out and end, at once, every flow whose exit rules say so. The others (by
    default post-purchase) go on: service emails still go, marketing steps are passed over."""
    await mail_repository.add_unsubscribe(session, shop_id, email)
    for enrollment in await repository.active_enrollments_for_email(session, shop_id, email):
        if enrollment_settings(enrollment)["exit_on_unsubscribe"]:
            exit_enrollment(enrollment, "unsubscribed")


def enrollment_settings(enrollment: Enrollment) -> dict[str, Any]:
    """The flow's settings as the enrollment started with them (defaults for older rows)."""
    return settings_for(enrollment.flow, enrollment.context.get("settings"))


# --- enrollments -----------------------------------------------------------------------------


async def enroll(
    session: AsyncSession,
    jobs: Jobs,
    flow: Flow,
    *,
    subject: str,
    email: str,
    checkout_id: int | None = None,
    order_id: int | None = None,
    context: dict[str, Any] | None = None,
) -> Enrollment | None:
    """Start `flow` for a subject with the flow's steps as they are now; None if it was started
    before (a repeated delivery)."""
    enrollment = _new_enrollment(
        flow, subject=subject, email=email, checkout_id=checkout_id, order_id=order_id,
        context=context,
    )  # fmt: skip
    stored = await repository.insert_enrollment(session, enrollment)
    if stored is None:
        return None
    await plan(session, stored, await load_subject(session, stored))
    _enrolled(jobs, stored)
    return stored


async def enroll_many(
    session: AsyncSession, jobs: Jobs, flow: Flow, new: list[tuple[str, str, dict[str, Any]]]
) -> int:
    """`enroll` for many (subject, email, context) about neither a checkout nor an order
    (win-back's lapsed customers), in one statement instead of five round trips each; how many
    started (a subject started before is left out)."""
    if not new:
        return 0
    # One planned enrollment stands for the batch: without a checkout or an order, the plan
    # depends only on the steps, the shop, the flow and the creation time, which all share.
    # Building and planning one model per customer cost more CPU than the database's work.
    planned = _new_enrollment(flow, subject="", email="")
    await plan(session, planned, await load_subject(session, planned))
    shared = planned.model_dump(exclude={"id", "subject", "email", "context"})
    settings = planned.context["settings"]
    rows = [
        {**shared, "subject": subject, "email": email, "context": {**context, "settings": settings}}
        for subject, email, context in new
    ]
    inserted = await repository.insert_enrollments(session, rows)
    for subject, enrollment_id in inserted.items():
        # The same plan under each stored id: its job id is the enrollment's.
        planned.id, planned.subject = enrollment_id, subject
        _enrolled(jobs, planned)
    return len(inserted)


def _new_enrollment(
    flow: Flow,
    *,
    subject: str,
    email: str,
    checkout_id: int | None = None,
    order_id: int | None = None,
    context: dict[str, Any] | None = None,
) -> Enrollment:
    return Enrollment(
        shop_id=flow.shop_id,
        flow=flow.name,
        subject=subject,
        checkout_id=checkout_id,
        order_id=order_id,
        email=email,
        steps=flow.steps,
        flow_version=flow.version,
        context={**(context or {}), "settings": settings_for(flow.name, flow.settings)},
        next_step=0,
    )


def _enrolled(jobs: Jobs, enrollment: Enrollment) -> None:
    log.info(
        "enrolled %s in %s (enrollment %s)",
        enrollment.subject.split(":")[0],
        enrollment.flow,
        enrollment.id,
    )
    schedule(jobs, enrollment)


async def load_subject(
    session: AsyncSession,
    enrollment: Enrollment,
    loaded: repository.StepRows | None = None,
) -> Subject:
    """What the enrollment is about; `loaded`: its rows, read already with it
    (repository.step_rows)."""
    if loaded is None:
        found = await shops.get(session, enrollment.shop_id)
        assert found is not None
        shop, facts = found, None
        flow = await repository.get_flow(session, shop.id or 0, enrollment.flow)
        checkout = None
        if enrollment.checkout_id is not None:
            checkout = await commerce.get_checkout(
                session, enrollment.shop_id, enrollment.checkout_id
            )
    else:
        shop, flow, checkout, facts = loaded.shop, loaded.flow, loaded.checkout, loaded.facts
    subject = Subject(
        shop, flow, checkout, snapshot=enrollment.context.get("settings"), name=enrollment.flow
    )
    if facts is not None and commerce.normalize_email(enrollment.email) == enrollment.email:
        subject.facts = facts  # asked of the stored address: the same answers only then
    if enrollment.order_id is not None:
        subject.order = await commerce.get_order_by_id(
            session, enrollment.shop_id, enrollment.order_id
        )
        if subject.order is not None:
            subject.shipments = await commerce.shipments_for_order(session, subject.order)
    return subject


async def plan(session: AsyncSession, enrollment: Enrollment, subject: Subject) -> None:
    """Pass over switched-off steps, then give the next one its time, or wait for the event it
    counts from (a shipment, a delivery)."""
    steps = enrollment.steps
    index = enrollment.next_step or 0
    while index < len(steps) and not steps[index].get("enabled", True):
        index += 1
    enrollment.updated_at = utcnow()
    if index >= len(steps):
        enrollment.status = EnrollmentStatus.DONE
        enrollment.next_step = enrollment.due_at = enrollment.waiting_for = None
        return
    enrollment.next_step = index
    step = steps[index]
    anchor = _anchor(enrollment, subject, step)
    enrollment.waiting_for = None if anchor else f"{step.get('after')}"
    enrollment.due_at = anchor + timedelta(seconds=step["delay"]) if anchor else None


def _anchor(enrollment: Enrollment, subject: Subject, step: dict[str, Any]) -> datetime | None:
    after = step.get("after", "trigger")
    if after == "trigger":
        if subject.checkout is not None:
            return subject.checkout.platform_updated_at
        if subject.order is not None:
            return subject.order.placed_at
        return enrollment.created_at
    if after == "replenish":
        return _runs_out(subject)
    shipped = [shipment.shipped_at for shipment in subject.shipments]
    if after == "shipped" or not shipped:
        return min(shipped) if shipped else None
    delivered = [s.delivered_at for s in subject.shipments if s.delivered_at]
    if delivered:
        return max(delivered)
    # No delivery event: assume the parcel arrives after the usual transit time, longer abroad.
    days = subject.settings["transit_days"]
    if _international(subject):
        days += subject.settings["international_extra_days"]
    return max(shipped) + timedelta(days=days)


def _replenishable(subject: Subject) -> dict[str, int]:
    """Products of the order with a "lasts N days" setting: product id → days."""
    lasts = subject.settings.get("replenish_days") or {}
    order = subject.order
    items = order.line_items if order else []
    return {
        str(i["product_id"]): int(lasts[str(i["product_id"])])
        for i in items
        if str(i.get("product_id")) in lasts
    }


def _runs_out(subject: Subject) -> datetime | None:
    """When the first consumable of the order runs out, less the lead time; the order's time
    when it has none (the step then passes over, saying so)."""
    if subject.order is None:
        return None
    found = _replenishable(subject)
    if not found:
        return subject.order.placed_at
    lead = subject.settings["replenish_lead_days"]
    return subject.order.placed_at + timedelta(days=max(min(found.values()) - lead, 0))


def _first_enabled(steps: list[dict[str, Any]]) -> int:
    """The index of the series' first step that is switched on (its first email)."""
    return next((i for i, step in enumerate(steps) if step.get("enabled", True)), 0)


def _international(subject: Subject) -> bool:
    order, home = subject.order, subject.shop.country_code
    return bool(order and order.shipping_country and home and order.shipping_country != home)


def exit_enrollment(enrollment: Enrollment, reason: str) -> None:
    """End a series; the reason is kept for the merchant to see."""
    enrollment.status = EnrollmentStatus.EXITED
    enrollment.exit_reason = reason
    enrollment.next_step = None
    enrollment.due_at = None
    enrollment.waiting_for = None
    enrollment.updated_at = utcnow()
    log.info("enrollment %s ended: %s", enrollment.id, reason)


def step_job_id(enrollment: Enrollment) -> str:
    # The due time is part of the id: a re-anchored step gets a new job, and the old one,
    # finding the step not yet due, does nothing.
    assert enrollment.due_at is not None
    return f"run_step:{enrollment.id}:{enrollment.next_step}:{int(enrollment.due_at.timestamp())}"


def schedule(jobs: Jobs, enrollment: Enrollment) -> None:
    if enrollment.status != EnrollmentStatus.ACTIVE or enrollment.due_at is None:
        return
    jobs.add(
        "run_step",
        enrollment.id,
        enrollment.next_step,
        job_id=step_job_id(enrollment),
        defer_until=enrollment.due_at,
    )


# --- running steps ---------------------------------------------------------------------------

Outcome = str | Exception  # what became of a step; an exception means "retry it"
# Messages of a batch in flight at once: as many as the worker ran jobs before batches, so a
# mail server sees no more connections from it than then (a transport keeps one per message
# in flight).
DELIVERIES_AT_ONCE = 10


@dataclass
class _Ready:
    """A step that passed every check, with what its email is made of, waiting for its claim."""

    enrollment: Enrollment
    subject: Subject
    spec: dict[str, Any]
    chosen: tuple[AbTest, str] | None
    content: "Content"
    send: Send | None = None
    message: EmailMessage | None = None


async def run_step(
    session: AsyncSession, jobs: Jobs, transport: Transport, enrollment_id: int, step: int
) -> str:
    """Run one due step at most once. Commits: the claim is durable before the message leaves."""
    (outcome,) = await run_steps(session, jobs, transport, [(enrollment_id, step)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def run_steps(
    session: AsyncSession, jobs: Jobs, transport: Transport, due: list[tuple[int, int]]
) -> list[Outcome]:
    """Run due steps (enrollment id, step), each at most once, sharing their round trips: one
    read of their rows, one transaction for their claims, hand-off marks of messages leaving
    together committed together, one transaction for their outcomes. As for one step, every
    claim is durable before any message leaves and each mark before its own message's DATA.
    A step that fails alone gets its exception as its outcome (its claim released, so a retry
    sends it); a database error fails the batch (its claims recovered by the sweeper)."""
    first: dict[int, int] = {}  # an enrollment's first step in the batch; any other waits
    for index, (enrollment_id, _) in enumerate(due):
        first.setdefault(enrollment_id, index)
    now = [index for index, (enrollment_id, _) in enumerate(due) if first[enrollment_id] == index]
    later = sorted(set(range(len(due))) - set(now))
    outcomes = await _run_distinct(session, jobs, transport, [due[index] for index in now])
    by_index = dict(zip(now, outcomes, strict=True))
    if later:
        outcomes = await run_steps(session, jobs, transport, [due[index] for index in later])
        by_index.update(zip(later, outcomes, strict=True))
    return [by_index[index] for index in range(len(due))]


async def _run_distinct(
    session: AsyncSession, jobs: Jobs, transport: Transport, due: list[tuple[int, int]]
) -> list[Outcome]:
    outcomes: dict[int, Outcome] = {}
    rows = await repository.step_rows(session, [enrollment_id for enrollment_id, _ in due])
    checked: dict[int, Subject] = {}
    for index, (enrollment_id, step) in enumerate(due):
        verdict = await _check(session, transport, rows.get(enrollment_id), step)
        if isinstance(verdict, Subject):
            checked[index] = verdict
        else:
            outcomes[index] = verdict
    if "claim released" in outcomes.values():
        # The alert's hand-off may have rolled back, which expires every row: read them again.
        rows = await repository.step_rows(session, [due[index][0] for index in checked])
        for index in list(checked):
            again = rows.get(due[index][0])
            if again is None:  # erased meanwhile
                outcomes[index] = "not active"
                del checked[index]
            else:
                checked[index] = await load_subject(session, again.enrollment, again)
    ready: dict[int, _Ready] = {}
    for index, subject in checked.items():
        try:
            prepared = await _prepare(session, jobs, subject, rows[due[index][0]].enrollment)
        except SQLAlchemyError:
            raise
        except Exception as exc:  # the store's API, say: nothing was written, try again later
            prepared = exc
        if isinstance(prepared, _Ready):
            ready[index] = prepared
        else:
            outcomes[index] = prepared
    outcomes.update(await _send_all(session, jobs, transport, ready))
    return [outcomes[index] for index in range(len(due))]


async def _check(
    session: AsyncSession, transport: Transport, rows: repository.StepRows | None, step: int
) -> str | Subject:
    """The step's subject when it is still to run; else why not. Commits an exit."""
    if rows is None or rows.enrollment.status != EnrollmentStatus.ACTIVE:
        return "not active"
    enrollment = rows.enrollment
    if enrollment.next_step != step or enrollment.due_at is None or enrollment.due_at > utcnow():
        return "not due"
    subject = await load_subject(session, enrollment, rows)
    reason = await _exit_reason(session, enrollment, subject)
    if reason:
        exit_enrollment(enrollment, reason)
        await session.commit()
        return f"exited: {reason}"
    if enrollment.flow == ABANDONED_CART and step == _first_enabled(enrollment.steps):
        # Customer service hears of a big cart when the first reminder is due, whether or not
        # that reminder then goes (a condition, a holdout or the night may keep it back).
        try:
            await _alert(session, transport, enrollment, subject)
        except ClaimReleased:
            # The sweeper took the alert's claim back (this run looked abandoned): this run
            # stops here; the step stays due for the next one.
            return "claim released"
    return subject


async def _prepare(
    session: AsyncSession, jobs: Jobs, subject: Subject, enrollment: Enrollment
) -> Outcome | _Ready:
    """The step's conditions, A/B variant, sending window and content: what it sends, or why it
    sends nothing now (committed)."""
    step = enrollment.next_step or 0
    spec = enrollment.steps[step]
    if spec.get("action"):
        outcome = await _run_action(session, enrollment, spec["action"])
        return await _finish(session, jobs, enrollment, subject, outcome)
    skip = await _skip_reason(session, enrollment, subject, spec)
    if skip:
        await repository.record_skip(session, enrollment, step, skip)
        return await _finish(session, jobs, enrollment, subject, f"skipped: {skip}")
    # An A/B test on this step: the customer's variant, decided once; the holdout gets nothing,
    # so what the email adds over no email at all is measured.
    chosen = await _variant(session, enrollment, subject, abtests.key_of_step(spec, step))
    if chosen is not None and chosen[1] == abtests.HOLDOUT:
        note = f"A/B test {chosen[0].id}: holdout"
        await repository.record_skip(session, enrollment, step, note, abtests.HOLDOUT)
        return await _finish(session, jobs, enrollment, subject, "skipped: A/B holdout")
    if chosen is not None:
        spec = abtests.variant_step(spec, *chosen)
        await session.commit()  # the assignment stands whatever becomes of the batch
    if spec.get("marketing", True):
        wait = await _sending_window(session, enrollment, subject.shop)
        if wait is not None:
            enrollment.waiting_for, enrollment.due_at = wait
            await session.commit()
            schedule(jobs, enrollment)
            return f"deferred: {wait[0]}"
    content = await _content(session, enrollment, subject, spec)
    if isinstance(content, str):  # nothing worth sending: an exit or a skip
        if content == "sold_out":
            exit_enrollment(enrollment, content)
            await session.commit()
            return f"exited: {content}"
        await repository.record_skip(session, enrollment, step, content)
        return await _finish(session, jobs, enrollment, subject, f"skipped: {content}")
    return _Ready(enrollment, subject, spec, chosen, content)


async def _send_all(
    session: AsyncSession, jobs: Jobs, transport: Transport, ready: dict[int, _Ready]
) -> dict[int, Outcome]:
    """Claim the ready steps' emails (one commit), compose them, hand them off side by side and
    record what became of each (one commit)."""
    outcomes: dict[int, Outcome] = {}
    wanted = [
        (r.enrollment, r.enrollment.next_step or 0, bool(r.spec.get("marketing", True)))
        for r in ready.values()
    ]
    claims = await repository.claim_sends(session, wanted)
    for index, r in list(ready.items()):
        r.send = claims.get((r.enrollment.id or 0, r.enrollment.next_step or 0))
        if r.send is None:
            outcomes[index] = "claimed before"
            del ready[index]
        elif r.chosen is not None:
            await abtests.record_send(session, r.chosen[0], r.chosen[1], r.send)
    await session.commit()
    for index, r in list(ready.items()):
        assert r.send is not None
        try:
            discount = await _offer(session, r.subject, r.enrollment, r.send, r.spec)
            r.message = _compose(r.enrollment, r.subject, r.send, r.spec, r.content, discount)
        except SQLAlchemyError:
            raise
        except Exception as exc:  # the store or composing failed: release the claim for a retry
            await session.delete(r.send)
            outcomes[index] = exc
            del ready[index]
    await session.commit()  # the offers made and the claims released, before anything leaves
    marks, lanes = _Marks(session), asyncio.Semaphore(DELIVERIES_AT_ONCE)

    async def deliver(r: _Ready) -> None:
        async with lanes:
            await _hand_off(transport, r.subject.shop, r.message, marks.handoff(r.send, r.message))

    delivered = await asyncio.gather(*map(deliver, ready.values()), return_exceptions=True)
    for (index, r), result in zip(ready.items(), delivered, strict=True):
        outcomes[index] = await _record(session, jobs, r, result)
    await session.commit()
    return outcomes


async def _record(
    session: AsyncSession, jobs: Jobs, ready: _Ready, result: BaseException | None
) -> Outcome:
    """What became of a hand-off, on its send and its enrollment (committed by the caller)."""
    enrollment, send = ready.enrollment, ready.send
    assert send is not None
    step = send.step
    if isinstance(result, ClaimReleased):
        # The sweeper took the claim back (it looked abandoned) before anything left: whoever
        # claims the step next sends it.
        log.warning("claim on step %s of enrollment %s was released", step, enrollment.id)
        return "claim released"
    if isinstance(result, UncertainDelivery):
        send.status = SendStatus.UNKNOWN
        send.error = str(result)
        log.warning("step %s of enrollment %s: delivery unknown", step, enrollment.id)
        return await _advance(session, jobs, enrollment, ready.subject, "unknown")
    if isinstance(result, PermanentDeliveryError):
        send.status = SendStatus.FAILED
        send.error = str(result)
        if result.recipient_refused:  # the address bounced: no flow of this shop tries it again
            await mail_repository.add_suppression(
                session, enrollment.shop_id, enrollment.email, "smtp_5xx", str(result)
            )
        exit_enrollment(enrollment, "undeliverable")
        return f"undeliverable: {result}"
    if isinstance(result, SQLAlchemyError):
        raise result
    if isinstance(result, Exception):
        # Nothing left: the mail server failed before the hand-off, or answered it with a
        # refusal. Release the claim so a retry sends it.
        await session.delete(send)
        return result
    if result is not None:
        raise result  # a cancellation, say: not the step's to swallow
    send.status = SendStatus.SENT
    send.sent_at = utcnow()
    log.info("sent %s step %s (enrollment %s)", enrollment.flow, step + 1, enrollment.id)
    return await _advance(session, jobs, enrollment, ready.subject, "sent")


async def _finish(
    session: AsyncSession, jobs: Jobs, enrollment: Enrollment, subject: Subject, outcome: str
) -> str:
    await _advance(session, jobs, enrollment, subject, outcome)
    await session.commit()
    return outcome


async def _advance(
    session: AsyncSession, jobs: Jobs, enrollment: Enrollment, subject: Subject, outcome: str
) -> str:
    """On to the next step (the caller commits; its jobs are queued once the batch is done)."""
    enrollment.next_step = (enrollment.next_step or 0) + 1
    await plan(session, enrollment, subject)
    schedule(jobs, enrollment)
    return outcome


class ClaimReleased(Exception):
    """The claim was released by the sweeper before its hand-off: this worker must not send."""


async def _hand_off(transport: Transport, shop: Shop, message: Any, handoff: Handoff) -> None:
    """Deliver through the shop's transport; `handoff` marks the claim as the hand-off begins."""
    await transports.deliver(
        transport_for_shop(shop, transport), message, shop_domain=shop.domain, handoff=handoff
    )


class _Marks:
    """Hand-off marks of messages leaving side by side, committed together: whoever asks while
    a commit is under way waits for the next, which takes every mark asked for meanwhile. Each
    message's mark is still durable before its own DATA."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.asked: list[tuple[Send, str | None, asyncio.Future[bool]]] = []
        self.committing = asyncio.Lock()

    def handoff(self, send: Send | None, message: EmailMessage | None) -> Handoff:
        assert send is not None and message is not None
        # Read raw: parsing each new Message-ID took a twentieth of a message's making.
        raw_id = transports.raw_header(message, "Message-ID")
        send_id, message_id = send.id, None if raw_id is None else str(raw_id)

        async def mark() -> None:
            marked = asyncio.get_running_loop().create_future()
            self.asked.append((send, message_id, marked))
            async with self.committing:
                if self.asked:
                    await self._commit()
            if not await marked:
                raise ClaimReleased(f"send {send_id}")

        return mark

    async def _commit(self) -> None:
        asked, self.asked = self.asked, []
        try:
            marked = await repository.mark_handoffs(self.session, [(s, m) for s, m, _ in asked])
        except Exception as exc:  # each message asking learns it from its own mark
            for _, _, future in asked:
                future.set_exception(exc)
            return
        for send, _, future in asked:
            future.set_result(send.id in marked)


async def recover_claim(session: AsyncSession, jobs: Jobs, send_id: int) -> str | None:
    """The sweeper's decision on a claim whose worker is gone (or too slow). Without the
    hand-off mark the message provably never reached a mail server: the claim is deleted and the
    step planned again, so it is sent once. With it, the server may have the message: the send
    becomes `unknown`, is never resent, and the series moves on. None when the claim changed
    meanwhile (its worker marked, finished or released it)."""
    send = await session.get(Send, send_id, populate_existing=True)
    if send is None or send.status != SendStatus.SENDING:
        return None
    step, enrollment_id = send.step, send.enrollment_id  # a rollback below expires the row
    enrollment = await repository.get_enrollment(session, enrollment_id)
    at_step = (
        enrollment is not None
        and enrollment.status == EnrollmentStatus.ACTIVE
        and enrollment.next_step == send.step
    )
    if send.handing_off_at is None:
        if not await repository.release_claim(session, send_id):
            await session.rollback()
            return None
        if enrollment is not None and at_step and enrollment.due_at is not None:
            # Due now, under a new job id (the due second is in it): arq may still hold the
            # crashed worker's job.
            enrollment.due_at = max(utcnow(), enrollment.due_at + timedelta(seconds=1))
            enrollment.updated_at = utcnow()
        await session.commit()
        if enrollment is not None and at_step:
            schedule(jobs, enrollment)
        log.warning("released claim on step %s of enrollment %s", step, enrollment_id)
        return "released"
    reason = "the hand-off began and its end was never recorded"
    if not await repository.mark_unknown(session, send_id, reason):
        await session.rollback()
        return None
    log.warning("step %s of enrollment %s: delivery unknown", step, enrollment_id)
    if enrollment is not None and at_step:
        await _finish(session, jobs, enrollment, await load_subject(session, enrollment), "")
    else:
        await session.commit()
    return "unknown"


async def _exit_reason(
    session: AsyncSession, enrollment: Enrollment, subject: Subject
) -> str | None:
    """Why this enrollment must send nothing more, checked again right before each step."""
    if subject.shop.uninstalled_at:
        return "uninstalled"
    if subject.flow is None or not subject.flow.enabled:
        return "flow_disabled"
    facts = subject.facts
    suppressed, unsubscribed = (
        (facts.suppressed, facts.unsubscribed)
        if facts is not None
        else await mail_repository.opted_out(session, enrollment.shop_id, enrollment.email)
    )
    subject.unsubscribed.setdefault(enrollment.email, unsubscribed)
    if suppressed:
        return "suppressed"  # bounced or complained: not even service emails
    trigger = TRIGGERS[enrollment.flow]
    if trigger == "checkout":
        if subject.checkout is None:
            return "gone"
        return await _checkout_exit(
            session, subject.checkout, subject.settings, subject.unsubscribed, facts
        )
    if trigger == "order":
        order = subject.order
        if order is None:
            return "gone"
        if order.cancelled_at:
            return "order_cancelled"
        if await commerce.is_fully_refunded(session, order):
            return "order_refunded"
        return None
    shop_id, settings = enrollment.shop_id, subject.settings
    if settings["exit_on_order"] and await commerce.has_order_since(
        session, shop_id, enrollment.email, enrollment.created_at
    ):
        return "purchased"
    if settings["exit_on_unsubscribe"] and await _unsubscribed(
        session, shop_id, enrollment.email, subject.unsubscribed
    ):
        return "unsubscribed"
    return None


async def _checkout_exit(
    session: AsyncSession,
    checkout: Checkout,
    settings: dict[str, Any],
    unsubscribed: dict[str, bool] | None = None,
    facts: repository.StepFacts | None = None,
) -> str | None:
    """Why a cart needs no (more) reminders. `exit_on_order` off: only an order from this very
    cart ends them, not one the customer placed some other way. `facts`: read with the step."""
    by_customer = bool(settings["exit_on_order"])
    if facts is not None:
        settled = facts.ordered_from_cart or (by_customer and facts.ordered_since_cart)
    else:
        settled = await commerce.checkout_settled(session, checkout, by_customer=by_customer)
    if checkout.completed_at or settled:
        return "purchased"
    if checkout.closed_at:
        return "checkout_closed"
    if not checkout.line_items:
        return "cart_emptied"
    if checkout.email is None:
        return "no_email"
    # Also keeps a late or replayed webhook for an old cart from reminding anyone of it.
    if checkout.platform_updated_at < utcnow() - timedelta(days=settings["cart_kept_days"]):
        return "cart_expired"
    if checkout.email and await _unsubscribed(
        session, checkout.shop_id, checkout.email, {} if unsubscribed is None else unsubscribed
    ):
        return "unsubscribed"
    return None


async def _unsubscribed(
    session: AsyncSession, shop_id: int, email: str, asked: dict[str, bool]
) -> bool:
    """Whether the customer opted out, asked once per step and address."""
    if email not in asked:
        asked[email] = await mail_repository.is_unsubscribed(session, shop_id, email)
    return asked[email]


async def _variant(
    session: AsyncSession, enrollment: Enrollment, subject: Subject, step_key: str
) -> tuple[AbTest, str] | None:
    if subject.facts is not None and not subject.facts.testing:
        return None  # no test runs on any step of the flow: nothing to ask
    return await abtests.variant_for(
        session, enrollment.shop_id, enrollment.flow, step_key, enrollment.email
    )


async def _skip_reason(
    session: AsyncSession, enrollment: Enrollment, subject: Subject, spec: dict[str, Any]
) -> str | None:
    """Why this step is passed over while the flow goes on: its conditions, or a marketing step
    to a customer who opted out of marketing (post-purchase service emails still go)."""
    conditions = spec.get("conditions") or {}
    total = subject.order.total_price if subject.order else None
    if subject.checkout is not None:
        total = subject.checkout.subtotal_price
    if "min_total" in conditions and _amount(total) < _amount(conditions["min_total"]):
        return f"total below {conditions['min_total']}"
    if "international" in conditions and conditions["international"] != _international(subject):
        return "international" if _international(subject) else "domestic"
    if "segment" in conditions:
        segment = await _segment(session, enrollment, subject)
        if conditions["segment"] != segment:
            return f"segment is {segment}"
    if "min_orders" in conditions or "nth_order" in conditions:
        count = await _order_count(session, enrollment, subject)
        if count < conditions.get("min_orders", 0):
            return f"{count} order(s), fewer than {conditions['min_orders']}"
        if count != conditions.get("nth_order", count):
            return f"order {count} of the customer, not order {conditions['nth_order']}"
    wanted = conditions.get("preference") or {}
    if wanted:
        answers = await repository.preferences(session, enrollment.shop_id, enrollment.email)
        for key, value in wanted.items():
            if answers.get(key) != value:
                return f"preference {key} is not {value}"
    if spec.get("marketing", True) and await _unsubscribed(
        session, enrollment.shop_id, enrollment.email, subject.unsubscribed
    ):
        return "unsubscribed"
    return None


async def _order_count(session: AsyncSession, enrollment: Enrollment, subject: Subject) -> int:
    """The customer's orders that count, up to this series' own order: the reward for a 5th
    order stays the 5th order's, however many came since."""
    orders = await commerce.orders_for_email(session, enrollment.shop_id, enrollment.email)
    until = subject.order.placed_at if subject.order else None
    return sum(
        1
        for order in orders
        if order.cancelled_at is None and (until is None or order.placed_at <= until)
    )


async def _segment(session: AsyncSession, enrollment: Enrollment, subject: Subject) -> str:
    """Win-back's segment as the scan found it; for other flows, the customer's standing now,
    ranked by money spent with win-back's top share."""
    if "segment" in enrollment.context:
        return str(enrollment.context["segment"])
    winback_flow = await repository.get_flow(session, enrollment.shop_id, WINBACK)
    top_share = settings_for(WINBACK, winback_flow.settings if winback_flow else None)["top_share"]
    summary = await customers.customer_summary(
        session, enrollment.shop_id, enrollment.email, top_share=float(top_share)
    )
    return summary.segment if summary else "one_time"


async def _sending_window(
    session: AsyncSession, enrollment: Enrollment, shop: Shop
) -> tuple[str, datetime] | None:
    """Smart sending, then quiet hours: why a marketing step must wait, and until when."""
    now = utcnow()
    if shop.frequency_cap:  # a setting that is off costs no query
        last = await repository.last_marketing_sent(
            session, enrollment.shop_id, enrollment.email, other_than_enrollment=enrollment.id or 0
        )
        capped = timing.after_cap(last, shop.frequency_cap, now)
        if capped is not None:
            return "smart_sending", capped
    if shop.quiet_hours:
        country = await commerce.last_shipping_country(
            session, enrollment.shop_id, enrollment.email
        )
        customer_zone = timing.country_zone(country, now) or shop.timezone
        quiet = timing.quiet_until(now, shop.quiet_hours, customer_zone)
        if quiet is not None:
            return "quiet_hours", quiet
    return None


async def _run_action(session: AsyncSession, enrollment: Enrollment, action: str) -> str:
    """`suppress_marketing`: a win-back goodbye with no click and no order since means the
    customer gets no more marketing from this shop."""
    assert action == "suppress_marketing" and enrollment.id is not None
    goodbyes = [
        index
        for index, step in enumerate(enrollment.steps)
        if step.get("template") == "winback_goodbye"
    ]
    sent = await repository.sent_steps(session, enrollment.id, goodbyes)
    if not sent:
        # Switched off, held out or skipped: nobody was asked, so nobody ignored the question.
        return "kept: no goodbye was sent"
    if await repository.click_count(session, sent):
        return "kept: the customer answered the goodbye"
    await mail_repository.add_unsubscribe(
        session, enrollment.shop_id, enrollment.email, reason="winback_ignored"
    )
    return "marketing stopped: the goodbye went unanswered"


# --- content ---------------------------------------------------------------------------------


@dataclass
class Content:
    details: dict[str, VariantDetails] = field(default_factory=dict)
    recommendations: list[compose.Recommended] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # what one template alone needs


async def _content(
    session: AsyncSession, enrollment: Enrollment, subject: Subject, spec: dict[str, Any]
) -> Content | str:
    """Current product data for the email; or a word for why there is nothing to send."""
    if subject.checkout is not None:
        details = await integrations.variant_details(
            subject.shop, _refs(subject.checkout.line_items)
        )
        return "sold_out" if _sold_out(subject.checkout, details) else Content(details)
    if subject.order is None:
        return Content()
    details = await integrations.variant_details(subject.shop, _refs(subject.order.line_items))
    template = spec.get("template")
    if template == "cross_sell":
        recommended = await _recommendations(session, subject)
        return Content(details, recommended) if recommended else "nothing to recommend yet"
    if template == "replenishment":
        found = _replenishable(subject)
        if not found:
            return "nothing in the order to replenish"
        runs_out = subject.order.placed_at + timedelta(days=min(found.values()))
        return Content(details, extra={"replenish": sorted(found), "runs_out": runs_out})
    if template == "surprise_reward":
        count = await _order_count(session, enrollment, subject)
        return Content(details, extra={"order_count": count})
    return Content(details)


async def _recommendations(session: AsyncSession, subject: Subject) -> list[compose.Recommended]:
    order = subject.order
    assert order is not None
    products = [str(item["product_id"]) for item in order.line_items if item.get("product_id")]
    found = await commerce.bought_together(
        session, order.shop_id, products, order.email, subject.settings["cross_sell_count"] * 2
    )
    refs: dict[str, str | None] = {r.variant_id or r.product_id: r.product_id for r in found}
    details = await integrations.variant_details(subject.shop, refs)
    picks = []
    for candidate in found:
        now = details.get(candidate.variant_id or candidate.product_id)
        if now is not None and (now.gone or not now.available):
            continue
        picks.append(compose.Recommended(candidate.title, now))
    return picks[: subject.settings["cross_sell_count"]]


def _compose(
    enrollment: Enrollment,
    subject: Subject,
    send: Send,
    spec: dict[str, Any],
    content: Content,
    discount: DiscountCode | None,
) -> Any:
    if subject.checkout is not None:
        kept = subject.checkout.platform_updated_at + timedelta(
            days=subject.settings["cart_kept_days"]
        )
        return compose.abandoned_cart(
            subject.shop, subject.checkout, send, spec, content.details, discount, kept
        )
    if subject.order is not None:
        return compose.order_email(
            subject.shop, subject.order, send, spec, content.details, subject.shipments,
            content.recommendations, discount, subject.settings, content.extra,
        )  # fmt: skip
    return compose.winback_email(subject.shop, enrollment, send, spec, discount)


def _refs(line_items: list[dict[str, Any]]) -> dict[str, str | None]:
    return {
        str(item["variant_id"]): str(item["product_id"]) if item.get("product_id") else None
        for item in line_items
        if item.get("variant_id")
    }


def _sold_out(checkout: Checkout, details: dict[str, VariantDetails]) -> bool:
    """Nothing left to buy: the store says every item in the cart is unavailable."""
    ids = list(_refs(checkout.line_items))
    return (
        bool(ids)
        and len(ids) == len(checkout.line_items)
        and all(variant_id in details and not details[variant_id].available for variant_id in ids)
    )


# --- offers ----------------------------------------------------------------------------------


async def _offer(
    session: AsyncSession,
    subject: Subject,
    enrollment: Enrollment,
    send: Send,
    spec: dict[str, Any],
) -> DiscountCode | None:
    """The step's offer (of the customer's A/B variant) as a code made for this recipient, or
    None with the reason on the send."""
    assert enrollment.id is not None
    raw = spec.get("offer") or (spec.get("offers") or {}).get(enrollment.context.get("segment"))
    try:
        offer = Offer.from_step({"offer": raw})
    except OfferError as exc:
        send.offer_skipped = str(exc)
        return None
    if offer is None:
        return None
    if enrollment.flow == ABANDONED_CART:
        withheld = await _offer_guard(session, enrollment, subject.settings)
        if withheld:
            send.offer_skipped = withheld
            log.info("offer withheld from enrollment %s: %s", enrollment.id, withheld)
            return None
    discount = DiscountCode(code_for(enrollment.id, send.step), offer, offer.ends_at(utcnow()))
    reason = await integrations.create_discount(subject.shop, discount, enrollment.email)
    if reason:
        send.offer_skipped = reason
        log.warning("offer left out of enrollment %s step %s: %s", enrollment.id, send.step, reason)
        return None
    send.discount_code = discount.code
    return discount


async def _offer_guard(
    session: AsyncSession, enrollment: Enrollment, settings: dict[str, Any]
) -> str | None:
    """Customers who learn to abandon carts for a discount get the reminder without one."""
    shop_id, email = enrollment.shop_id, enrollment.email
    since = utcnow() - timedelta(days=settings["offer_guard_days"])
    recent = await repository.last_offer_sent(session, shop_id, email, since)
    if recent is not None:
        return (
            f"offer guard: an offer went to this customer on {recent:%Y-%m-%d}, "
            f"within {settings['offer_guard_days']} days"
        )
    codes = await repository.codes_sent_to(session, shop_id, email, enrollment.flow)
    bought_with = [
        order
        for order in await commerce.orders_for_email(session, shop_id, email)
        if codes.intersection(order.discount_codes)
    ]
    if len(bought_with) > settings["offer_guard_max_bought_with_code"]:
        return f"offer guard: bought with a reminder's code {len(bought_with)} times"
    return None


# --- the internal alert ----------------------------------------------------------------------


async def _alert(
    session: AsyncSession,
    transport: Transport,
    enrollment: Enrollment,
    subject: Subject,
) -> None:
    """A big cart left behind: customer service hears of it when the first reminder is due.
    Claimed like a step, so it goes once; a failure never holds the customer's email."""
    settings, checkout = subject.settings, subject.checkout
    address, threshold = settings["alert_email"], settings["alert_min_total"]
    if not address or threshold is None or checkout is None:
        return
    if _amount(checkout.total_price) < _amount(threshold):
        return
    claim = await repository.claim_send(session, enrollment, ALERT_STEP, marketing=False)
    if claim is None:
        return
    claim.email = address
    await session.commit()
    try:
        details = await integrations.variant_details(subject.shop, _refs(checkout.line_items))
        message = compose.internal_alert(subject.shop, checkout, address, details)
        await _hand_off(transport, subject.shop, message, _Marks(session).handoff(claim, message))
    except ClaimReleased:
        raise
    except UncertainDelivery as exc:
        claim.status = SendStatus.UNKNOWN
        claim.error = str(exc)
        await session.commit()
        return
    except Exception as exc:
        log.warning("cart alert for enrollment %s not sent: %s", enrollment.id, exc)
        await session.delete(claim)
        await session.commit()
        return
    claim.status = SendStatus.SENT
    claim.sent_at = utcnow()
    await session.commit()


async def enabled_flow(session: AsyncSession, shop_id: int, name: str) -> Flow | None:
    shop = await shops.get(session, shop_id)
    if shop is None or shop.uninstalled_at is not None:
        return None
    flow = await repository.get_flow(session, shop_id, name)
    return flow if flow is not None and flow.enabled and flow.steps else None


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)
