"""arq jobs of the flow engine: run a due step; sweep for due work Redis lost."""

import logging
from datetime import timedelta

from arq import Retry
from arq.connections import ArqRedis

from app.db import sessionmaker, utcnow
from app.inbox import repository as inbox
from app.inbox.tasks import ingest_job_id
from app.queue import Jobs
from app.settings import get_settings
from app.shops import repository as shops
from flows import engine, repository, winback

log = logging.getLogger("rebound.flows")


async def run_step(ctx: dict[str, object], enrollment_id: int, step: int) -> str:
    transport = ctx["transport"]
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    jobs = Jobs()
    try:
        async with sessionmaker()() as session:
            outcome = await engine.run_step(session, jobs, transport, enrollment_id, step)  # type: ignore[arg-type]
    except Exception as exc:
        tries = int(ctx.get("job_try", 1))  # type: ignore[call-overload]
        delays = get_settings().retry_delays  # SEND_RETRY_DELAYS
        delay = delays[min(tries - 1, len(delays) - 1)]
        log.warning(
            "step %s of enrollment %s not sent (%s); retry in %ss", step, enrollment_id, exc, delay
        )
        raise Retry(defer=delay) from exc
    await jobs.enqueue(redis)
    return outcome


async def sweep(ctx: dict[str, object]) -> str:
    """Re-enqueue every due step and every unprocessed delivery; arq drops ids it still holds."""
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    jobs = Jobs()
    now = utcnow()
    async with sessionmaker()() as session:
        for enrollment in await repository.due_enrollments(session, now):
            engine.schedule(jobs, enrollment)
        for entry_id in await inbox.unhandled_before(session, now - timedelta(seconds=30)):
            jobs.add("ingest", entry_id, job_id=ingest_job_id(entry_id))
    count = len(jobs.pending)
    await jobs.enqueue(redis)
    return f"{count} job(s) offered"


async def winback_scan(ctx: dict[str, object]) -> str:
    """Daily: every installed shop's lapsed customers start win-back."""
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    now = utcnow()
    async with sessionmaker()() as session:
        shop_ids = [
            shop.id for shop in await shops.list_all(session) if shop.id and not shop.uninstalled_at
        ]
    started = 0
    for shop_id in shop_ids:
        started += await winback.scan_shop(shop_id, now, redis)
    return f"{started} customer(s) started win-back in {len(shop_ids)} shop(s)"
