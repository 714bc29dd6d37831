"""Group commit for the webhook receivers: deliveries that arrive together are stored in one
transaction. On SQLite every write transaction queues for the one writer lock and every commit
syncs the log to disk; 32 deliveries at once then cost one commit instead of 32 in a queue (the
long tail of the ingest benchmark). Each request still answers only once its own row is durable,
so a platform never hears 200 for a delivery that could be lost."""

import asyncio
import logging
from dataclasses import asdict, dataclass

from app.db import sessionmaker
from app.inbox import repository

log = logging.getLogger("rebound.inbox")

MAX_BATCH = 200  # rows per transaction; more wait for the next one


@dataclass(frozen=True)
class Delivery:
    shop_id: int
    platform: str
    topic: str
    delivery_id: str
    payload: str


Waiting = tuple[Delivery, "asyncio.Future[int | None]"]


class InboxWriter:
    """One writer task per process, started by the first delivery (on the server's loop)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Waiting] | None = None
        self._task: asyncio.Task[None] | None = None

    async def store(self, delivery: Delivery) -> int | None:
        """The new inbox entry's id once it is committed; None for a delivery stored before."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(self._queue), name="inbox-writer")
        assert self._queue is not None
        future: asyncio.Future[int | None] = loop.create_future()
        self._queue.put_nowait((delivery, future))
        return await future

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = self._queue = None

    async def _run(self, queue: asyncio.Queue[Waiting]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await _write(batch)
            except asyncio.CancelledError:
                _fail(batch, ConnectionError("the server is stopping"))
                raise


async def _write(batch: list[Waiting]) -> None:
    """All rows in one transaction; if that fails, each alone, so one bad row (or a shop
    deleted meanwhile) fails only its own request, and an outage fails them all."""
    try:
        ids = await _insert([delivery for delivery, _ in batch])
    except Exception as exc:
        if len(batch) == 1:
            _fail(batch, exc)
            return
        log.warning("inbox batch of %s failed (%s); storing one by one", len(batch), exc)
        for waiting in batch:
            await _write([waiting])
        return
    for (_, future), entry_id in zip(batch, ids, strict=True):
        if not future.done():
            future.set_result(entry_id)


async def _insert(deliveries: list[Delivery]) -> list[int | None]:
    """One INSERT for the batch; a delivery repeated within it gets its id once, the repeats
    None (a duplicate), as if they had come one after the other."""
    async with sessionmaker()() as session:
        stored = await repository.insert_many(session, [asdict(d) for d in deliveries])
        await session.commit()
    ids: list[int | None] = []
    for delivery in deliveries:
        ids.append(stored.pop((delivery.shop_id, delivery.delivery_id), None))
    return ids


def _fail(batch: list[Waiting], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
