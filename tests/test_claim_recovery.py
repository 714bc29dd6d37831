"""A worker that dies holding a claim: the sweeper sends the email once when the claim provably
never reached the mail server, and never again when it may have (the send becomes `unknown`)."""

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from arq.connections import ArqRedis
from sqlmodel import select

from app.db import sessionmaker, utcnow
from app.mail.transport import SmtpTransport
from app.shops.models import Shop
from flows import engine, repository
from flows.models import Enrollment, Send, SendStatus
from flows.tasks import sweep
from tests.conftest import Mailbox, _free_port, running_worker, wait_for
from tests.test_abandoned_checkout import deliver, fresh_checkout, settle


async def enrolled(server: httpx.AsyncClient) -> Enrollment:
    """A checkout's enrollment, its first email due, and no worker yet to send it."""
    from app.inbox.models import InboxEntry
    from app.inbox.tasks import process_entry
    from app.redis import redis_settings
    from app.settings import get_settings

    await deliver(server, "checkouts/create", fresh_checkout())
    from arq import create_pool

    pool = await create_pool(redis_settings(get_settings()))
    try:
        async with sessionmaker()() as session:
            entry = (await session.exec(select(InboxEntry))).one()
        await process_entry(entry.id or 0, pool)
    finally:
        await pool.aclose()
    async with sessionmaker()() as session:
        return (await session.exec(select(Enrollment))).one()


async def crashed_claim(enrollment: Enrollment, *, handed_off: bool) -> None:
    """What a worker killed after claiming leaves: a `sending` row, a minute old."""
    async with sessionmaker()() as session:
        claim = await repository.claim_send(session, enrollment, enrollment.next_step or 0)
        assert claim is not None
        claim.claimed_at = utcnow() - timedelta(minutes=1)
        if handed_off:
            claim.handing_off_at = claim.claimed_at + timedelta(seconds=1)
        await session.commit()


async def idle(redis: ArqRedis) -> None:
    async def nothing_running() -> bool:
        await asyncio.sleep(0.2)
        return not await redis.keys("arq:in-progress:*")

    await wait_for(nothing_running)


async def sends() -> list[Send]:
    async with sessionmaker()() as session:
        return list((await session.exec(select(Send).order_by(Send.id))).all())  # type: ignore[arg-type]


async def test_a_claim_that_never_reached_the_mail_server_is_sent_once_by_the_sweeper(
    server: httpx.AsyncClient, redis: ArqRedis, smtp_url: str, shop: Shop, mailbox: Mailbox
) -> None:
    enrollment = await enrolled(server)
    await crashed_claim(enrollment, handed_off=False)

    async with running_worker(redis, SmtpTransport(smtp_url)):
        await idle(redis)  # the step's own job runs and finds the step claimed
        assert mailbox.messages == []
        assert "1 claim(s) released" in await sweep({"redis": redis})
        await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
        await settle(mailbox)
        await sweep({"redis": redis})  # nothing left to recover
        await asyncio.sleep(0.5)

    assert len(mailbox.messages) == 1
    [send] = await sends()
    assert send.status == SendStatus.SENT and send.handing_off_at is not None


async def test_a_claim_whose_hand_off_began_is_never_resent_and_is_marked_unknown(
    server: httpx.AsyncClient, redis: ArqRedis, smtp_url: str, shop: Shop, mailbox: Mailbox
) -> None:
    enrollment = await enrolled(server)
    await crashed_claim(enrollment, handed_off=True)

    async with running_worker(redis, SmtpTransport(smtp_url)):
        await idle(redis)  # the step's own job runs and finds the step claimed
        assert "1 claim(s) unknown" in await sweep({"redis": redis})
        await settle(mailbox)
        await sweep({"redis": redis})

    assert mailbox.messages == []
    [send] = await sends()
    assert send.status == SendStatus.UNKNOWN and "hand-off" in (send.error or "")
    async with sessionmaker()() as session:
        after = await repository.get_enrollment(session, enrollment.id or 0)
    assert after is not None and after.next_step == 1  # the series goes on to its next step


async def test_a_young_claim_of_a_running_job_is_left_alone(
    server: httpx.AsyncClient, redis: ArqRedis, shop: Shop
) -> None:
    enrollment = await enrolled(server)
    await crashed_claim(enrollment, handed_off=False)
    job_id = engine.step_job_id(enrollment)
    await redis.psetex(f"arq:in-progress:{job_id}", 60_000, b"1")  # a worker runs the step

    assert "claim" not in await sweep({"redis": redis})
    [send] = await sends()
    assert send.status == SendStatus.SENDING


async def test_a_worker_whose_claim_was_released_meanwhile_sends_nothing(
    server: httpx.AsyncClient,
    redis: ArqRedis,
    smtp_url: str,
    shop: Shop,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow worker, not a dead one: the sweeper takes its claim back between the claim and
    the hand-off. The hand-off mark and the release are conditional on each other, so the slow
    worker's message never leaves, and the step's next run sends it once."""
    offer = engine._offer
    released: list[str | None] = []

    async def slow_offer(session: Any, subject: Any, enrollment: Any, send: Any, spec: Any) -> Any:
        if not released:
            async with sessionmaker()() as other:
                from app.queue import Jobs

                jobs = Jobs()
                released.append(await engine.recover_claim(other, jobs, send.id))
                await jobs.enqueue(redis)
        return await offer(session, subject, enrollment, send, spec)

    monkeypatch.setattr(engine, "_offer", slow_offer)
    enrollment = await enrolled(server)
    async with running_worker(redis, SmtpTransport(smtp_url)):
        await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
        await settle(mailbox)

    assert released == ["released"]
    assert len(mailbox.messages) == 1
    [send] = await sends()
    assert send.status == SendStatus.SENT and send.enrollment_id == enrollment.id


class DropsDuringData:
    """An SMTP server that takes the message, then drops the connection before answering."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received += 1
        server.transport.close()
        return "250 never heard"


async def test_a_connection_dropped_during_data_is_unknown_and_never_retried(
    server: httpx.AsyncClient, redis: ArqRedis, shop: Shop
) -> None:
    handler = DropsDuringData()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        await enrolled(server)
        transport = SmtpTransport(f"smtp://127.0.0.1:{controller.port}")
        async with running_worker(redis, transport):
            await wait_for(lambda: asyncio.sleep(0, result=handler.received))

            async def settled() -> bool:
                found = await sends()
                return bool(found) and found[0].status != SendStatus.SENDING

            await wait_for(settled)
            await sweep({"redis": redis})
            await asyncio.sleep(1)
    finally:
        controller.stop()

    assert handler.received == 1
    [send] = await sends()
    assert send.status == SendStatus.UNKNOWN
    assert send.message_id and send.handing_off_at is not None
