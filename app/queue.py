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
        # A few hundred a script: a sweep may offer 100k due steps at once.
        for start in range(0, len(self.pending), ENQUEUE_BATCH):
            await enqueue_many(redis, self.pending[start : start + ENQUEUE_BATCH])
        self.pending.clear()


ENQUEUE_BATCH = 500

# arq's enqueue_job for many jobs in one round trip: the same keys, the same check (no job and
# no result under the id, else it is left alone: a deterministic id makes a second enqueue of
# the same job a no-op), in one script so the check and the write are atomic, as arq's
# WATCH/MULTI makes them. KEYS: the queue, then each job's key and result key. ARGV: each job's
# id, score, expiry in ms and serialized job.
_ENQUEUE_MANY = """
local queued = 0
for n = 1, (#KEYS - 1) / 2 do
  local job_key, result_key = KEYS[2 * n], KEYS[2 * n + 1]
  local id, score, expires, job = ARGV[4 * n - 3], ARGV[4 * n - 2], ARGV[4 * n - 1], ARGV[4 * n]
  if redis.call('exists', job_key, result_key) == 0 then
    redis.call('psetex', job_key, expires, job)
    redis.call('zadd', KEYS[1], score, id)
    queued = queued + 1
  end
end
return queued
"""


async def enqueue_many(redis: ArqRedis, jobs: Sequence[Job]) -> int:
    """Enqueue the jobs as arq's enqueue_job would one by one (an id arq holds already is left
    alone), in one round trip; how many were new. Three round trips a job were most of the cost
    of a webhook delivery, and of a sweep."""
    if not jobs:
        return 0
    now = timestamp_ms()
    keys: list[str] = [redis.default_queue_name]
    argv: list[Any] = []
    for job in jobs:
        # A job due in the past runs now. arq keeps a job for a day after the time it is
        # deferred to, so a due time over a day ago (a late webhook, the sweeper after an
        # outage) would make its expiry negative, and Redis would refuse it.
        due = job.defer_until
        score = int(due.timestamp() * 1000) if due is not None and due > utcnow() else now
        serialized = serialize_job(
            job.function, job.args, {}, None, now, serializer=redis.job_serializer
        )
        keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id]
        argv += [job.job_id, score, score - now + redis.expires_extra_ms, serialized]
    queued = await cast(Awaitable[int], redis.eval(_ENQUEUE_MANY, len(keys), *keys, *argv))
    return int(queued)
