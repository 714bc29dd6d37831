"""The daily win-back scan: customers who lapsed against their own buying rhythm start the
win-back flow, with their segment (top, regular, one-time) deciding offer and copy."""

import logging
from collections.abc import Callable
from contextlib import aclosing
from datetime import datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce import repository as commerce
from app.commerce.repository import normalize_email
from app.customers import repository as customers
from app.customers.models import LapsedCustomer
from app.db import sessionmaker
from app.mail import repository as mail_repository
from app.queue import Jobs
from flows import engine, repository
from flows.definitions import WINBACK, settings_for
from flows.models import Flow

log = logging.getLogger("rebound.flows")

BATCH = 500  # enrollments committed (and their jobs enqueued) together


async def scan_shop(
    shop_id: int,
    now: datetime,
    redis: ArqRedis | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Enroll the shop's lapsed customers; how many started. Reads the lapse stream in one
    session and writes in another, committing every BATCH, so memory stays flat."""
    async with sessionmaker()() as reader, sessionmaker()() as writer:
        flow = await engine.enabled_flow(writer, shop_id, WINBACK)
        if flow is None:
            return 0
        settings = settings_for(WINBACK, flow.settings)
        stream = customers.lapsed_customers(
            reader,
            shop_id,
            now=now,
            k=float(settings["lapse_factor"]),
            one_time_after=timedelta(days=settings["one_time_after_days"]),
            top_share=float(settings["top_share"]),
            min_lapse=timedelta(days=settings["min_lapse_days"]),
        )
        seen = started = 0
        jobs = Jobs()
        batch: list[LapsedCustomer] = []
        async with aclosing(stream) as lapsed:
            async for customer in lapsed:
                seen += 1
                batch.append(customer)
                if seen % BATCH == 0:
                    started += await _start(writer, jobs, flow, batch, settings, now)
                    batch = []
                    await _commit(writer, jobs, redis)
                    jobs = Jobs()
                    if progress:
                        progress(seen, started)
        started += await _start(writer, jobs, flow, batch, settings, now)
        await _commit(writer, jobs, redis)
        if progress:
            progress(seen, started)
    log.info("win-back scan of shop %s: %s lapsed, %s enrolled", shop_id, seen, started)
    return started


async def _start(
    session: AsyncSession,
    jobs: Jobs,
    flow: Flow,
    batch: list[LapsedCustomer],
    settings: dict[str, object],
    now: datetime,
) -> int:
    """How many of the batch start win-back now: those not opted out and not in it within the
    cooldown. Each question is asked once for the whole batch (a handful of round trips per
    BATCH instead of ten per customer), and the enrollments go in one INSERT."""
    emails = [customer.email for customer in batch]
    if not emails:
        return 0
    unsubscribed = await mail_repository.unsubscribed_among(session, flow.shop_id, emails)
    latest = await repository.latest_enrollments_for_emails(session, flow.shop_id, WINBACK, emails)
    cooldown = timedelta(days=int(str(settings["cooldown_days"])))
    chosen = [
        customer
        for customer in batch
        if normalize_email(customer.email) not in unsubscribed
        and not (customer.email in latest and latest[customer.email] > now - cooldown)
    ]
    if not chosen:
        return 0
    greetings = await commerce.customer_greetings(
        session, flow.shop_id, [customer.email for customer in chosen]
    )
    new = [
        (
            f"lapse:{customer.email}:{now:%Y-%m-%d}",
            customer.email,
            _context(customer, greetings.get(customer.email, (None, None))),
        )
        for customer in chosen
    ]
    return await engine.enroll_many(session, jobs, flow, new)


def _context(customer: LapsedCustomer, greeting: tuple[str | None, str | None]) -> dict[str, Any]:
    """What the win-back steps read about the customer: segment, last order, greeting."""
    return {
        "segment": customer.segment,
        "last_order_at": customer.last_order_at.isoformat(),
        **dict(zip(("locale", "first_name"), greeting, strict=True)),
    }


async def _commit(session: AsyncSession, jobs: Jobs, redis: ArqRedis | None) -> None:
    """Durable first, then queued; without Redis the sweeper picks the steps up when due."""
    await session.commit()
    if redis is not None:
        await jobs.enqueue(redis)
