"""The inbox writer's group commit: which deliveries share a transaction."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from sqlalchemy import event

from app.db import get_engine
from app.inbox.writer import Delivery, InboxWriter
from app.shops.models import Shop


def delivery(shop: Shop, number: int) -> Delivery:
    assert shop.id is not None
    return Delivery(shop.id, "shopify", "checkouts/update", f"event:{number}", '{"n": 1}')


@pytest.fixture
def inserts() -> Iterator[list[int]]:
    """The number of rows of each INSERT into the inbox, in order."""
    seen: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.startswith("INSERT INTO inbox"):
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


async def test_a_delivery_waiting_for_its_wave_when_the_server_stops_is_refused(
    redis: ArqRedis, shop: Shop, inserts: list[int]
) -> None:
    writer = InboxWriter(redis)
    await asyncio.gather(*(writer.store(delivery(shop, n)) for n in range(8)))
    waiting = asyncio.create_task(writer.store(delivery(shop, 100)))
    for _ in range(3):
        await asyncio.sleep(0)

    await writer.stop()

    # Refused (the platform retries it), not left without an answer.
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, timeout=1)
    assert inserts == [8]
