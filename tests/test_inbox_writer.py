"""The inbox writer's group commit: which deliveries share a transaction."""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import event, text

from app.db import get_engine
from app.inbox import writer as writer_module
from app.inbox.models import InboxStatus
from app.inbox.writer import Delivery, InboxWriter, WriterStopped
from app.main import create_app
from app.shops.models import Shop
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET
from tests.shopify import post


def delivery(shop: Shop, number: int) -> Delivery:
    assert shop.id is not None
    return Delivery(shop.id, "shopify", "checkouts/update", f"event:{number}", '{"n": 1}')


@pytest.fixture
def inserts() -> Iterator[list[int]]:
    """The number of rows of each INSERT into the inbox, in order."""
    seen: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if not statement.startswith("INSERT INTO inbox"):
            return
        if "unnest(" in statement:  # PostgreSQL's: the moment, then an array per column
            seen.append(len(parameters[1]))
        else:  # a multi-row VALUES, its parameters flattened
            columns = statement.partition("(")[2].partition(")")[0].count(",") + 1
            seen.append(len(parameters) // columns)

    engine = get_engine().sync_engine
    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


async def test_the_first_of_a_wave_waits_for_the_rest_of_it(
    redis: ArqRedis, shop: Shop, inserts: list[int]
) -> None:
    writer = InboxWriter(redis)
    first_wave = await asyncio.gather(*(writer.store(delivery(shop, n)) for n in range(8)))

    # The next wave's first delivery is taken alone; the other seven come a moment later.
    leader = asyncio.create_task(writer.store(delivery(shop, 100)))
    for _ in range(3):
        await asyncio.sleep(0)
    followers = await asyncio.gather(*(writer.store(delivery(shop, n)) for n in range(101, 108)))
    await leader
    await writer.stop()

    assert None not in first_wave and None not in followers
    assert inserts == [8, 8]


async def test_a_delivery_alone_is_written_without_waiting_for_a_wave(
    redis: ArqRedis, shop: Shop, inserts: list[int]
) -> None:
    writer = InboxWriter(redis)
    await asyncio.gather(*(writer.store(delivery(shop, n)) for n in range(8)))

    # Nobody follows: it waits at most the linger (a few ms), not for ever.
    stored = await asyncio.wait_for(writer.store(delivery(shop, 100)), timeout=1)
    await writer.stop()

    assert stored is not None
    assert inserts == [8, 1]


async def test_a_batch_stores_each_delivery_once_with_what_it_was_sent(
    shop: Shop, inserts: list[int]
) -> None:
    earlier = delivery(shop, 1)
    [earlier_id] = await writer_module._insert([earlier])
    again, first, repeat = earlier, delivery(shop, 2), delivery(shop, 2)
    odd = Delivery(shop.id or 0, "shopify", "orders/create", "event:3", '{"note": "é \\u0000"}')

    ids = await writer_module._insert([again, first, repeat, odd])

    assert ids[0] is None and ids[2] is None  # stored before, and twice in the batch
    assert ids[1] is not None and ids[3] is not None and earlier_id is not None
    assert inserts == [1, 4]
    async with get_engine().connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT id, topic, delivery_id, payload, status, received_at FROM inbox"
                    " ORDER BY id"
                )
            )
        ).all()
    assert [(r.id, r.topic, r.delivery_id, r.payload) for r in rows] == [
        (earlier_id, "checkouts/update", "event:1", '{"n": 1}'),
        (ids[1], "checkouts/update", "event:2", '{"n": 1}'),
        (ids[3], "orders/create", "event:3", odd.payload),
    ]
    assert {r.status for r in rows} == {InboxStatus.RECEIVED.name}
    assert all(r.received_at is not None for r in rows)


async def test_a_delivery_waiting_for_its_wave_when_the_server_stops_is_written(
    redis: ArqRedis, shop: Shop, inserts: list[int]
) -> None:
    writer = InboxWriter(redis)
    await asyncio.gather(*(writer.store(delivery(shop, n)) for n in range(8)))
    waiting = asyncio.create_task(writer.store(delivery(shop, 100)))
    for _ in range(3):
        await asyncio.sleep(0)

    await writer.stop()

    # Written before the stop returns (200: no retry needed), not left without an answer.
    assert waiting.done() and waiting.result() is not None
    assert inserts == [8, 1]


@pytest.fixture
def held_inserts(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Every batch's INSERT waits until the event is set: a slow database."""
    release = asyncio.Event()
    insert = writer_module._insert

    async def held(deliveries: list[Delivery]) -> list[int | None]:
        await release.wait()
        return await insert(deliveries)

    monkeypatch.setattr(writer_module, "_insert", held)
    return release


async def test_deliveries_queued_when_the_server_stops_are_written_before_it_stops(
    redis: ArqRedis, shop: Shop, held_inserts: asyncio.Event
) -> None:
    writer = InboxWriter(redis)
    being_written = asyncio.create_task(writer.store(delivery(shop, 0)))
    await asyncio.sleep(0.01)  # taken alone, its INSERT under way
    queued = [asyncio.create_task(writer.store(delivery(shop, n))) for n in (1, 2)]
    await asyncio.sleep(0)

    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0.01)
    held_inserts.set()
    await asyncio.wait_for(stopping, timeout=1)

    # Each answered with its committed row, not left waiting for a writer that is gone.
    ids = await asyncio.wait_for(asyncio.gather(being_written, *queued), timeout=1)
    assert None not in ids and len(set(ids)) == 3


async def test_deliveries_the_database_cannot_take_before_the_stop_are_refused(
    redis: ArqRedis, shop: Shop, held_inserts: asyncio.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "DRAIN_SECONDS", 0.05)
    writer = InboxWriter(redis)
    being_written = asyncio.create_task(writer.store(delivery(shop, 0)))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(writer.store(delivery(shop, 1)))
    await asyncio.sleep(0)

    await asyncio.wait_for(writer.stop(), timeout=1)  # the database never answers

    # 503, so the platform sends them again; the stop does not wait for ever.
    for request in (being_written, queued):
        with pytest.raises(WriterStopped):
            await asyncio.wait_for(request, timeout=1)


async def test_a_delivery_after_the_stop_is_refused(redis: ArqRedis, shop: Shop) -> None:
    writer = InboxWriter(redis)
    await writer.store(delivery(shop, 0))
    await writer.stop()

    with pytest.raises(WriterStopped):
        await asyncio.wait_for(writer.store(delivery(shop, 1)), timeout=1)


async def test_a_refused_delivery_is_answered_503(redis: ArqRedis, shop: Shop) -> None:
    app = create_app()
    app.state.inbox_writer = InboxWriter(redis)  # the lifespan's, already stopped
    await app.state.inbox_writer.stop()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rebound.test") as client:
        answer = await post(
            client, "checkouts/update", {"id": 1}, secret=SHOP_SECRET, domain=SHOP_DOMAIN
        )

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "30"
