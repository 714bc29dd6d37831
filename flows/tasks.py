"""arq jobs of the flow engine: run a due step; sweep for due work Redis lost."""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from arq import Retry
from arq.connections import ArqRedis

from app.db import pinned_session, sessionmaker, utcnow
from app.inbox import repository as inbox
from app.inbox.tasks import ingest_job_id
from app.mail.transport import Transport
from app.queue import Jobs
from app.settings import get_settings
from app.shops import repository as shops
from flows import engine, repository, winback

log = logging.getLogger("rebound.flows")


async def run_step(ctx: dict[str, object], enrollment_id: int, step: int) -> str:
    try:
        return await StepBatches.of(ctx).run(enrollment_id, step)
    except Exception as exc:
        tries = int(ctx.get("job_try", 1))  # type: ignore[call-overload]
        delays = get_settings().retry_delays  # SEND_RETRY_DELAYS
        delay = delays[min(tries - 1, len(delays) - 1)]
        log.warning(
            "step %s of enrollment %s not sent (%s); retry in %ss", step, enrollment_id, exc, delay
        )
        raise Retry(defer=delay) from exc


# A batch holds at most the jobs running at once (MAX_JOBS in app/worker.py). Its first step
# waits up to GATHER_SECONDS for others while they keep arriving.
BATCH_LIMIT = 50
GATHER_SECONDS = 0.005


class StepBatches:
    """The worker runs due steps whose jobs are running at the same time through the engine
    together (engine.run_steps), which shares their database round trips: on the send
    benchmark a step made about twenty alone. One batch at a time; the steps that arrive
    meanwhile make the next. Each job still stands for its own step: it gets its own outcome,
    and its own retry when its step failed."""

    @classmethod
    def of(cls, ctx: dict[str, object]) -> "StepBatches":
        """The worker's own, made at its start-up (app/worker.py): arq gives each job a copy of
        the worker's context, so one made for a job would batch that job alone."""
        batches = ctx.get("step_batches")
        if not isinstance(batches, StepBatches) or batches.loop is not asyncio.get_running_loop():
            transport, redis = ctx["transport"], ctx["redis"]
            assert isinstance(redis, ArqRedis)
            batches = ctx["step_batches"] = cls(transport, redis)  # type: ignore[arg-type]
        return batches

    def __init__(self, transport: Transport, redis: ArqRedis) -> None:
        self.transport = transport
        self.redis = redis
        self.loop = asyncio.get_running_loop()  # its batches run on the loop of its jobs
        self.waiting: list[tuple[tuple[int, int], asyncio.Future[engine.Outcome]]] = []
        self.draining: asyncio.Task[None] | None = None

    async def run(self, enrollment_id: int, step: int) -> str:
        outcome: asyncio.Future[engine.Outcome] = asyncio.get_running_loop().create_future()
        self.waiting.append(((enrollment_id, step), outcome))
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self._drain())
        result = await asyncio.shield(outcome)  # a cancelled job leaves its batch alone
        if isinstance(result, Exception):
            raise result
        return result

    async def _drain(self) -> None:
        while self.waiting:
            await self._gather()
            batch, self.waiting = self.waiting[:BATCH_LIMIT], self.waiting[BATCH_LIMIT:]
            due = [item for item, _ in batch]
            jobs = Jobs()
            try:
                async with pinned_session() as session:
                    outcomes = await engine.run_steps(session, jobs, self.transport, due)
                await jobs.enqueue(self.redis)
            except Exception as exc:
                # The database or Redis: every step of the batch retries. A step already sent
                # then finds itself done; a next step not queued is the sweeper's to offer.
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    async def _gather(self) -> None:
        """Wait a moment while more steps keep arriving: arq starts a job at a time, each after
        a few round trips to Redis."""
        deadline = time.monotonic() + GATHER_SECONDS
        seen = 0
        while seen < len(self.waiting) < BATCH_LIMIT and time.monotonic() < deadline:
            seen = len(self.waiting)
            await asyncio.sleep(GATHER_SECONDS / 5)


# A claim this young is left alone: its worker is at work (a job's lock can be missing for a
# moment, after a FLUSHALL).
CLAIM_GRACE = timedelta(seconds=10)
# A claim this old is recovered even while arq says its job runs: no step takes that long.
STALE_CLAIM = timedelta(minutes=5)
# arq locks a running job (`arq:in-progress:<id>`) for the worker's longest job timeout, and
# win-back's is 4 hours: a worker killed mid-job leaves that job locked for hours, and the
# sweeper's offers of the same id dropped. A job running this long counts as abandoned.
STALE_LOCK = timedelta(seconds=60)
IN_PROGRESS = "arq:in-progress:"


@dataclass
class Locks:
    """arq's in-progress locks, aged against the sweep's own (set when the sweep started, for
    the same length as every lock of this worker). Called outside a worker (no own lock), every
    existing lock counts as live."""

    redis: ArqRedis
    own_ms: int | None

    @classmethod
    async def load(cls, redis: ArqRedis, own_job_id: object) -> "Locks":
        own = await redis.pttl(IN_PROGRESS + str(own_job_id)) if own_job_id else -2
        return cls(redis, own if own > 0 else None)

    async def age(self, job_id: str) -> timedelta | None:
        """How long the job has been running; None when no worker holds it."""
        left = await self.redis.pttl(IN_PROGRESS + job_id)
        if left == -2:
            return None
        if self.own_ms is None or left < 0:
            return timedelta(0)
        return timedelta(milliseconds=max(self.own_ms - left, 0))

    async def live(self, job_id: str) -> bool:
        age = await self.age(job_id)
        return age is not None and age < STALE_LOCK

    async def free_abandoned(self, job_ids: list[str]) -> int:
        """Drop the locks of jobs running longer than STALE_LOCK, so a worker runs them again.
        Safe even for a worker that is merely slow: every job is idempotent (the inbox status,
        the unique claim and its hand-off mark), a second run does nothing twice."""
        freed = 0
        for job_id in job_ids:
            age = await self.age(job_id)
            if age is not None and age >= STALE_LOCK:
                freed += await self.redis.delete(IN_PROGRESS + job_id)
        return freed


async def sweep(ctx: dict[str, object]) -> str:
    """Recover abandoned claims, then re-enqueue every due step and every unprocessed delivery
    (arq drops ids it still holds), and free the locks crashed workers left on them."""
    redis = ctx["redis"]
    assert isinstance(redis, ArqRedis)
    locks = await Locks.load(redis, ctx.get("job_id"))
    jobs = Jobs()
    recovered: dict[str, int] = {}
    now = utcnow()
    async with sessionmaker()() as session:
        # Read out first: recovering one claim may roll back, which expires the other rows.
        stale = [
            (send.id or 0, send.enrollment_id, send.claimed_at)
            for send in await repository.stale_claims(session, now - CLAIM_GRACE)
        ]
        for send_id, enrollment_id, claimed_at in stale:
            enrollment = await repository.get_enrollment(session, enrollment_id)
            job_id = (
                engine.step_job_id(enrollment)
                if enrollment is not None and enrollment.due_at is not None
                else None
            )
            if claimed_at > now - STALE_CLAIM and job_id and await locks.live(job_id):
                continue  # its worker is still at it
            outcome = await engine.recover_claim(session, jobs, send_id)
            if outcome:
                recovered[outcome] = recovered.get(outcome, 0) + 1
        await jobs.enqueue(redis)
        for enrollment in await repository.due_enrollments(session, now):
            engine.schedule(jobs, enrollment)
        for entry_id in await inbox.unhandled_before(session, now - timedelta(seconds=30)):
            jobs.add("ingest", entry_id, job_id=ingest_job_id(entry_id))
    offered = [job.job_id for job in jobs.pending]
    await jobs.enqueue(redis)
    freed = await locks.free_abandoned(offered)
    notes = [f"{count} claim(s) {outcome}" for outcome, count in sorted(recovered.items())]
    if freed:
        notes.append(f"{freed} abandoned job(s) freed")
    return ", ".join([f"{len(offered)} job(s) offered", *notes])


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
