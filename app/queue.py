"""Jobs derive from committed rows: collected in a transaction, enqueued after it commits."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis

from app.db import utcnow


@dataclass(frozen=True)
class Job:
    function: str
    args: tuple[Any, ...]
    job_id: str
    defer_until: datetime | None = None


@dataclass
class Jobs:
    """Jobs to enqueue once the surrounding transaction has committed; dropped on rollback."""

    pending: list[Job] = field(default_factory=list)

    def add(
        self, function: str, *args: Any, job_id: str, defer_until: datetime | None = None
    ) -> None:
        self.pending.append(Job(function, args, job_id, defer_until))

    async def enqueue(self, redis: ArqRedis) -> None:
        for job in self.pending:
            # A job due in the past runs now. arq keeps a job for a day after the time it is
            # deferred to, so a due time over a day ago (a late webhook, the sweeper after an
            # outage) would make its expiry negative, and Redis refuses the whole enqueue.
            defer_until = job.defer_until
            if defer_until is not None and defer_until <= utcnow():
                defer_until = None
            # A deterministic id makes a second enqueue of the same job a no-op in arq.
            await redis.enqueue_job(
                job.function,
                *job.args,
                _job_id=job.job_id,
                _defer_until=defer_until,
            )
        self.pending.clear()
