"""The daily win-back scan: customers who lapsed against their own buying rhythm start the
win-back flow, with their segment (top, regular, one-time) deciding offer and copy."""

import logging
from collections.abc import Callable
from contextlib import aclosing
from datetime import datetime, timedelta

from arq.connections import ArqRedis
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce import repository as commerce
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
        )
        seen = started = 0
        jobs = Jobs()
        soonest = now - timedelta(days=settings["min_lapse_days"])
        async with aclosing(stream) as lapsed:
            async for customer in lapsed:
                seen += 1
                if customer.last_order_at <= soonest:
                    started += await _start(writer, jobs, flow, customer, settings, now)
                if seen % BATCH == 0:
                    await _commit(writer, jobs, redis)
                    jobs = Jobs()
                    if progress:
                        progress(seen, started)
        await _commit(writer, jobs, redis)
        if progress:
            progress(seen, started)
    log.info("win-back scan of shop %s: %s lapsed, %s enrolled", shop_id, seen, started)
    return started


async def _start(
    session: AsyncSession,
    jobs: Jobs,
    flow: Flow,
    customer: LapsedCustomer,
    settings: dict[str, object],
    now: datetime,
) -> int:
    """1 when the customer starts win-back now: not opted out, not in one within the cooldown."""
    email = customer.email
    if await mail_repository.is_unsubscribed(session, flow.shop_id, email):
        return 0
    latest = await repository.latest_enrollment_for_email(session, flow.shop_id, WINBACK, email)
    cooldown = timedelta(days=int(str(settings["cooldown_days"])))
    if latest is not None and latest.created_at > now - cooldown:
        return 0
    greeting = await commerce.customer_greeting(session, flow.shop_id, email)
    enrolled = await engine.enroll(
        session,
        jobs,
        flow,
        subject=f"lapse:{email}:{now:%Y-%m-%d}",
        email=email,
        context={
            "segment": customer.segment,
            "last_order_at": customer.last_order_at.isoformat(),
            **dict(zip(("locale", "first_name"), greeting, strict=True)),
        },
    )
    return int(enrolled is not None)


async def _commit(session: AsyncSession, jobs: Jobs, redis: ArqRedis | None) -> None:
    """Durable first, then queued; without Redis the sweeper picks the steps up when due."""
    await session.commit()
    if redis is not None:
        await jobs.enqueue(redis)
