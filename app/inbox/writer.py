"""Group commit for the webhook receivers: deliveries that arrive together are stored in one
transaction. On SQLite every write transaction queues for the one writer lock and every commit
syncs the log to disk; 32 deliveries at once then cost one commit instead of 32 in a queue (the
long tail of the ingest benchmark). Each request still answers only once its own row is durable,
so a platform never hears 200 for a delivery that could be lost."""

import asyncio
import logging
from dataclasses import dataclass

from arq.connections import ArqRedis

from app.db import get_engine
from app.inbox import repository
from app.inbox.tasks import ingest_job_id
from app.queue import Job, enqueue_many

log = logging.getLogger("rebound.inbox")

MAX_BATCH = 200  # rows per transaction; more wait for the next one
# Under load deliveries come in waves: the platform sends the next ones once the last batch is
# answered. A delivery that arrives first waits this long at most for the rest of its wave (as
# many as the last batch held) instead of taking a transaction of its own: in the ingest
# benchmark a third of the transactions held one row, and on SQLite a one-row transaction costs
# three times the CPU per row of a 16-row one. PostgreSQL's commit_delay does the same.
LINGER_SECONDS = 0.002
# How long a stop waits for the deliveries already queued to be written. Their requests are
# answered 200 if they are, 503 if not (the platform sends them again): never left waiting.
DRAIN_SECONDS = 5.0


class WriterStopped(ConnectionError):
    """The server is stopping and the delivery was not stored: answered 503, so the platform
    sends it again."""


@dataclass(frozen=True)
class Delivery:
    shop_id: int
    platform: str
    topic: str
    delivery_id: str
    payload: str


Waiting = tuple[Delivery, "asyncio.Future[int | None]"]
# What the writer's queue holds: deliveries, then None, put by `stop`, after the last of them.
Queued = Waiting | None
Written = tuple["asyncio.Future[int | None]", int | None]


class InboxWriter:
    """One writer task per process, started by the first delivery (on the server's loop). It
    also enqueues `ingest` for the new entries of a batch, in one round trip to Redis."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        self._queue: asyncio.Queue[Queued] | None = None
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._enqueueing: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def store(self, delivery: Delivery) -> int | None:
        """The new inbox entry's id once it is committed (and offered to the worker); None for
        a delivery stored before. WriterStopped once the server is stopping."""
        if self._stopped:
            raise WriterStopped("the server is stopping")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue, self._arrived = asyncio.Queue(), asyncio.Event()
            self._task = asyncio.create_task(self._run(self._queue), name="inbox-writer")
        assert self._queue is not None
        future: asyncio.Future[int | None] = loop.create_future()
        self._queue.put_nowait((delivery, future))
        self._arrived.set()
        return await future

    async def stop(self) -> None:
        """Take no more deliveries; write those already queued, for DRAIN_SECONDS at most, and
        refuse whatever is left then (503)."""
        self._stopped = True
        task, queue = self._task, self._queue
        if task is not None and queue is not None and not task.done():
            queue.put_nowait(None)  # the writer ends once the deliveries ahead of it are written
            self._arrived.set()
            await asyncio.wait({task}, timeout=DRAIN_SECONDS)
            task.cancel()  # the database did not answer in time: its batch is refused
            await asyncio.gather(task, return_exceptions=True)
        if queue is not None:
            _refuse(queue)
        if self._enqueueing:  # committed rows: let their jobs reach Redis, if it answers soon
            _, late = await asyncio.wait(set(self._enqueueing), timeout=5)
            for late_task in late:
                late_task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._task = self._queue = None

    async def _run(self, queue: asyncio.Queue[Queued]) -> None:
        wave, stopping = 1, False
        while not stopping:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            try:  # from here on, a request waits for an answer from this batch
                await self._wait_for_the_wave(queue, min(wave, MAX_BATCH))
                stopping = _take_more(batch, queue)
                wave = len(batch)
                written = await _write(batch)
            except asyncio.CancelledError:
                # Its rows may be committed even so: the platform's retry is then a duplicate,
                # answered 200, and the sweeper offers the entries to the worker.
                _fail(batch, WriterStopped("the server is stopping"))
                raise
            # The next batch's INSERT need not wait for this one's round trip to Redis.
            task = asyncio.create_task(_enqueue_then_answer(self._redis, written))
            self._enqueueing.add(task)
            task.add_done_callback(self._enqueueing.discard)

    async def _wait_for_the_wave(self, queue: asyncio.Queue[Queued], wave: int) -> None:
        """Until the queue holds the rest of a wave of `wave` deliveries (the one taken is the
        first), or LINGER_SECONDS have passed."""
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        while queue.qsize() < wave - 1:
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._arrived.wait()
            except TimeoutError:
                return


def _take_more(batch: list[Waiting], queue: asyncio.Queue[Queued]) -> bool:
    """Add what the queue holds to the batch, up to MAX_BATCH; whether the stop was met."""
    while len(batch) < MAX_BATCH and not queue.empty():
        waiting = queue.get_nowait()
        if waiting is None:
            return True
        batch.append(waiting)
    return False


def _refuse(queue: asyncio.Queue[Queued]) -> None:
    """Answer every delivery still queued when the writer is gone."""
    while not queue.empty():
        waiting = queue.get_nowait()
        if waiting is not None:
            _fail([waiting], WriterStopped("the server is stopping"))


async def _write(batch: list[Waiting]) -> list[Written]:
    """All rows in one transaction; if that fails, each alone, so one bad row (or a shop
    deleted meanwhile) fails only its own request, and an outage fails them all. The rows
    committed, with their futures, still to be answered."""
    try:
        ids = await _insert([delivery for delivery, _ in batch])
    except Exception as exc:
        if len(batch) == 1:
            _fail(batch, exc)
            return []
        log.warning("inbox batch of %s failed (%s); storing one by one", len(batch), exc)
        return [written for waiting in batch for written in await _write([waiting])]
    return [(future, entry_id) for (_, future), entry_id in zip(batch, ids, strict=True)]


async def _enqueue_then_answer(redis: ArqRedis, written: list[Written]) -> None:
    """Each request is answered only after its row is committed, and after its job was offered
    to Redis; an enqueue that fails leaves the rows to the sweeper, which offers every entry
    still unprocessed after 30 s."""
    new = [entry_id for _, entry_id in written if entry_id is not None]
    try:
        await enqueue_many(
            redis, [Job("ingest", (entry_id,), ingest_job_id(entry_id)) for entry_id in new]
        )
    except Exception:
        log.exception("could not enqueue inbox entries %s", new)
    finally:  # cancelled (the server stopping) too: the rows are committed
        for future, entry_id in written:
            if not future.done():
                future.set_result(entry_id)


async def _insert(deliveries: list[Delivery]) -> list[int | None]:
    """One INSERT for the batch; a delivery repeated within it gets its id once, the repeats
    None (a duplicate), as if they had come one after the other."""
    async with get_engine().begin() as connection:
        # vars, not asdict: the fields are plain values, and asdict's deep copy of each was
        # a sixtieth of the receiver's CPU.
        stored = await repository.insert_many(connection, [vars(d) for d in deliveries])
    ids: list[int | None] = []
    for delivery in deliveries:
        ids.append(stored.pop((delivery.shop_id, delivery.delivery_id), None))
    return ids


def _fail(batch: list[Waiting], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
