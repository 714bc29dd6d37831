"""The flow interpreter: events enroll and end enrollments; due steps claim, compose and send."""

import logging
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

import integrations
from app.commerce import repository as commerce
from app.commerce.catalog import VariantDetails
from app.commerce.events import CheckoutChanged, CheckoutClosed, CommerceEvent
from app.commerce.models import Checkout, Order
from app.commerce.offers import DiscountCode, Offer, OfferError, code_for
from app.db import utcnow
from app.mail import compose
from app.mail import repository as mail_repository
from app.mail.transport import PermanentDeliveryError, Transport
from app.queue import Jobs
from app.shops import repository as shops
from app.shops.models import Shop
from flows import repository
from flows.definitions import ABANDONED_CART, CART_MAX_AGE
from flows.models import Enrollment, EnrollmentStatus, Send, SendStatus

log = logging.getLogger("rebound.flows")


class StepDeferred(Exception):
    """The step could not be sent now for a passing reason; the job should run again later."""


async def apply(session: AsyncSession, jobs: Jobs, shop_id: int, event: CommerceEvent) -> None:
    """Record what the event says about the shop's commerce, then move the flows along."""
    if isinstance(event, CheckoutChanged):
        checkout = await commerce.upsert_checkout(session, shop_id, event)
        await _checkout_changed(session, jobs, checkout)
    elif isinstance(event, CheckoutClosed):
        await _checkout_closed(session, shop_id, event.token)
    else:
        order = await commerce.insert_order(session, shop_id, event)
        await _order_placed(session, order)


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
    elif await _should_enroll(session, checkout):
        await _enroll(session, jobs, checkout)


async def _should_enroll(session: AsyncSession, checkout: Checkout) -> bool:
    if checkout.email is None or checkout.completed_at or not checkout.line_items:
        return False
    shop = await shops.get(session, checkout.shop_id)
    if shop is None or shop.uninstalled_at is not None:
        return False
    flow = await repository.get_flow(session, checkout.shop_id, ABANDONED_CART)
    if flow is None or not flow.enabled or not flow.steps:
        return False
    return await _exit_reason(session, checkout) is None


async def _enroll(session: AsyncSession, jobs: Jobs, checkout: Checkout) -> None:
    assert checkout.id is not None and checkout.email is not None
    flow = await repository.get_flow(session, checkout.shop_id, ABANDONED_CART)
    assert flow is not None
    enrollment = Enrollment(
        shop_id=checkout.shop_id,
        flow=ABANDONED_CART,
        checkout_id=checkout.id,
        email=checkout.email,
        steps=flow.steps,
        next_step=0,
        due_at=_due(checkout.platform_updated_at, flow.steps[0]["delay"]),
    )
    if await repository.insert_enrollment(session, enrollment):
        stored = await repository.enrollment_for_checkout(
            session, checkout.shop_id, ABANDONED_CART, checkout.id
        )
        assert stored is not None
        log.info("enrolled checkout %s in %s", checkout.id, ABANDONED_CART)
        schedule(jobs, stored)


async def _update_enrollment(
    session: AsyncSession, jobs: Jobs, enrollment: Enrollment, checkout: Checkout
) -> None:
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return
    reason = await _exit_reason(session, checkout)
    if reason:
        exit_enrollment(enrollment, reason)
        return
    if checkout.email and checkout.email != enrollment.email:
        enrollment.email = checkout.email
    if enrollment.next_step == 0 and not await repository.has_sends(session, enrollment.id or 0):
        # The shopper is still active: the first reminder waits for them to stop again.
        due = _due(checkout.platform_updated_at, enrollment.steps[0]["delay"])
        if enrollment.due_at is None or due > enrollment.due_at:
            enrollment.due_at = due
            enrollment.updated_at = utcnow()
            schedule(jobs, enrollment)


async def _order_placed(session: AsyncSession, order: Order) -> None:
    settled = await repository.enrollments_settled_by_order(
        session,
        order.shop_id,
        checkout_ids=await commerce.checkout_ids_for_order(session, order),
        email=order.email,
        placed_at=order.placed_at,
    )
    for enrollment in settled:
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


async def _exit_reason(session: AsyncSession, checkout: Checkout) -> str | None:
    """Why this checkout must get no (more) reminders, checked again right before each send."""
    if checkout.completed_at or await commerce.order_for_checkout(session, checkout):
        return "purchased"
    if checkout.closed_at:
        return "checkout_closed"
    if not checkout.line_items:
        return "cart_emptied"
    if checkout.email is None:
        return "no_email"
    if checkout.platform_updated_at < utcnow() - timedelta(seconds=CART_MAX_AGE):
        return "cart_expired"
    if checkout.email and await mail_repository.is_unsubscribed(
        session, checkout.shop_id, checkout.email
    ):
        return "unsubscribed"
    flow = await repository.get_flow(session, checkout.shop_id, ABANDONED_CART)
    if flow is None or not flow.enabled:
        return "flow_disabled"
    return None


def exit_enrollment(enrollment: Enrollment, reason: str) -> None:
    """End a series; the reason is kept for the merchant to see."""
    enrollment.status = EnrollmentStatus.EXITED
    enrollment.exit_reason = reason
    enrollment.next_step = None
    enrollment.due_at = None
    enrollment.updated_at = utcnow()
    log.info("enrollment %s ended: %s", enrollment.id, reason)


def _due(anchor: datetime, delay_seconds: int) -> datetime:
    return anchor + timedelta(seconds=delay_seconds)


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


async def unsubscribe(session: AsyncSession, shop_id: int, email: str) -> None:
    """Record the opt-out and end every running flow for that address at once."""
    await mail_repository.add_unsubscribe(session, shop_id, email)
    for enrollment in await repository.active_enrollments_for_email(session, shop_id, email):
        exit_enrollment(enrollment, "unsubscribed")


async def run_step(
    session: AsyncSession, jobs: Jobs, transport: Transport, enrollment_id: int, step: int
) -> str:
    """Send one due step at most once. Commits: the claim is durable before the message leaves."""
    enrollment = await repository.get_enrollment(session, enrollment_id)
    if enrollment is None or enrollment.status != EnrollmentStatus.ACTIVE:
        return "not active"
    if enrollment.next_step != step or enrollment.due_at is None or enrollment.due_at > utcnow():
        return "not due"
    checkout = await commerce.get_checkout(session, enrollment.shop_id, enrollment.checkout_id)
    shop = await shops.get(session, enrollment.shop_id)
    assert checkout is not None and shop is not None
    reason = "uninstalled" if shop.uninstalled_at else await _exit_reason(session, checkout)
    if reason:
        exit_enrollment(enrollment, reason)
        await session.commit()
        return f"exited: {reason}"

    details = await integrations.variant_details(shop, _variant_ids(checkout))
    if _sold_out(checkout, details):
        exit_enrollment(enrollment, "sold_out")
        await session.commit()
        return "exited: sold_out"

    send = await repository.claim_send(session, enrollment, step)
    if send is None:
        return "claimed before"
    await session.commit()

    try:
        discount = await _offer(shop, enrollment, send, checkout.email)
        message = compose.abandoned_cart(
            shop, checkout, send, enrollment.steps[step], details, discount
        )
        await transport.deliver(message, shop_domain=shop.domain)
    except PermanentDeliveryError as exc:
        send.status = SendStatus.FAILED
        send.error = str(exc)
        exit_enrollment(enrollment, "undeliverable")
        await session.commit()
        return f"undeliverable: {exc}"
    except Exception:
        # Nothing left (the store, composing or the mail server failed before hand-off):
        # release the claim so a retry can send it.
        await session.delete(send)
        await session.commit()
        raise

    send.status = SendStatus.SENT
    send.message_id = message["Message-ID"]
    send.sent_at = utcnow()
    _advance(enrollment, checkout)
    await session.commit()
    schedule(jobs, enrollment)
    log.info("sent %s step %s (enrollment %s)", enrollment.flow, step + 1, enrollment.id)
    return "sent"


async def _offer(
    shop: Shop, enrollment: Enrollment, send: Send, email: str | None
) -> DiscountCode | None:
    """The step's offer as a code made for this recipient, or None with the reason on the send."""
    assert enrollment.id is not None
    try:
        offer = Offer.from_step(enrollment.steps[send.step])
    except OfferError as exc:
        send.offer_skipped = str(exc)
        return None
    if offer is None:
        return None
    discount = DiscountCode(code_for(enrollment.id, send.step), offer, offer.ends_at(utcnow()))
    reason = await integrations.create_discount(shop, discount, email)
    if reason:
        send.offer_skipped = reason
        log.warning("offer left out of enrollment %s step %s: %s", enrollment.id, send.step, reason)
        return None
    send.discount_code = discount.code
    return discount


def _variant_ids(checkout: Checkout) -> list[str]:
    return [str(item["variant_id"]) for item in checkout.line_items if item.get("variant_id")]


def _sold_out(checkout: Checkout, details: dict[str, VariantDetails]) -> bool:
    """Nothing left to buy: the store says every item in the cart is unavailable."""
    ids = _variant_ids(checkout)
    return (
        bool(ids)
        and len(ids) == len(checkout.line_items)
        and all(variant_id in details and not details[variant_id].available for variant_id in ids)
    )


def _advance(enrollment: Enrollment, checkout: Checkout) -> None:
    following = (enrollment.next_step or 0) + 1
    enrollment.updated_at = utcnow()
    if following >= len(enrollment.steps):
        enrollment.status = EnrollmentStatus.DONE
        enrollment.next_step = None
        enrollment.due_at = None
        return
    enrollment.next_step = following
    enrollment.due_at = max(
        _due(checkout.platform_updated_at, enrollment.steps[following]["delay"]), utcnow()
    )
