"""Jobs derive from committed rows: collected in a transaction, enqueued after it commits."""

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

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


# arq's enqueue_job for many jobs in one round trip: the same keys, the same check (no job and
# no result under the id, else it is left alone), in one script so the check and the write are
# atomic, as arq's WATCH/MULTI makes them. KEYS: the queue, then each job's key and result key.
# ARGV: the expiry in ms, then each job's id, score and serialized job.
_ENQUEUE_MANY = """
local queued = 0
for n = 1, (#KEYS - 1) / 2 do
  local job_key, result_key = KEYS[2 * n], KEYS[2 * n + 1]
  local id, score, job = ARGV[3 * n - 1], ARGV[3 * n], ARGV[3 * n + 1]
  if redis.call('exists', job_key, result_key) == 0 then
    redis.call('psetex', job_key, ARGV[1], job)
    redis.call('zadd', KEYS[1], score, id)
    queued = queued + 1
  end
end
return queued
"""


async def enqueue_many(redis: ArqRedis, function: str, jobs: Sequence[tuple[str, Any]]) -> int:
    """Enqueue `function(arg)` for each (job id, arg) now, as arq's enqueue_job would one by
    one (an id arq holds already is left alone), in one round trip; how many were new. The
    inbox writer enqueues a whole batch this way: three round trips a job were most of the
    cost of a delivery."""
    if not jobs:
        return 0
    now = timestamp_ms()
    keys: list[str] = [redis.default_queue_name]
    argv: list[Any] = [redis.expires_extra_ms]
    for job_id, arg in jobs:
        keys += [job_key_prefix + job_id, result_key_prefix + job_id]
        job = serialize_job(function, (arg,), {}, None, now, serializer=redis.job_serializer)
        argv += [job_id, now, job]
    queued = await cast(Awaitable[int], redis.eval(_ENQUEUE_MANY, len(keys), *keys, *argv))
    return int(queued)
