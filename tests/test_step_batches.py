"""Due steps run together (engine.run_steps, and the worker's StepBatches): each gets the outcome
it would get alone, one step's failure stays its own, and nothing is sent twice."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from arq.connections import ArqRedis
from sqlmodel import select

from app.db import sessionmaker
from app.mail.transport import SmtpTransport
from app.queue import Jobs
from app.shops.models import Shop
from flows import engine, tasks
from flows.models import Enrollment, EnrollmentStatus, Send, SendStatus
from integrations.shopify import webhooks
from tests.conftest import _free_port
from tests.shopify import fixture

REFUSED = "refused@example.com"  # 550: no such user
LATER = "later@example.com"  # 451: try again later


class Server:
    """An SMTP server that refuses two addresses and keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 No such user"
        if address == LATER:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def received_by(self) -> list[str]:
        return sorted(str(message["To"]) for message in self.messages)


@pytest.fixture
def smtp() -> Iterator[tuple[Server, str]]:
    server = Server()
    controller = Controller(server, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield server, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


def checkout(n: int, email: str) -> dict[str, Any]:
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(
        id=payload["id"] + n,
        token=f"{payload['token'][:-2]}{n:02d}",
        cart_token=f"{payload['cart_token'][:-2]}{n:02d}",
        email=email,
        created_at=now,
        updated_at=now,
    )
    return payload


async def apply(shop: Shop, topic: str, payload: dict[str, Any]) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        for event in webhooks.events(topic, payload):
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()


async def enrollment_ids(shop: Shop, emails: list[str]) -> dict[str, int]:
    for n, email in enumerate(emails):
        await apply(shop, "checkouts/create", checkout(n, email))
    async with sessionmaker()() as session:
        found = (await session.exec(select(Enrollment))).all()
    return {e.email: e.id or 0 for e in found}


async def state() -> tuple[dict[int, Enrollment], list[Send]]:
    async with sessionmaker()() as session:
        enrollments = {e.id or 0: e for e in (await session.exec(select(Enrollment))).all()}
        return enrollments, list((await session.exec(select(Send))).all())


async def test_a_batch_gives_each_step_its_own_outcome(
    shop: Shop, smtp: tuple[Server, str]
) -> None:
    server, url = smtp
    emails = ["ada@example.com", REFUSED, "bought@example.com", LATER, "bo@example.com"]
    ids = await enrollment_ids(shop, emails)
    order = fixture("orders_create")
    bought = checkout(2, "bought@example.com")
    order.update(
        checkout_token=bought["token"],
        cart_token=bought["cart_token"],
        email=bought["email"],
        created_at=datetime.now(UTC).isoformat(),
    )
    await apply(shop, "orders/create", order)
    due = [(ids[email], 0) for email in emails]
    due += [(ids["ada@example.com"], 0), (987654, 0)]  # a duplicate job; an erased enrollment
    jobs = Jobs()

    transport = SmtpTransport(url)
    async with sessionmaker()() as session:
        outcomes = await engine.run_steps(session, jobs, transport, due)
    await transport.aclose()

    assert outcomes[0] == "sent"
    assert isinstance(outcomes[1], str) and outcomes[1].startswith("undeliverable: ")
    assert outcomes[2] == "not active"  # the order ended the series as it came in
    assert isinstance(outcomes[3], Exception) and "451" in str(outcomes[3])
    assert outcomes[4] == "sent"
    assert outcomes[5:] == ["not due", "not active"]
    assert server.received_by() == ["ada@example.com", "bo@example.com"]
    enrollments, sends = await state()
    by_email = {e.email: e for e in enrollments.values() if e.flow == "abandoned_cart"}
    assert {s.email: s.status for s in sends} == {
        "ada@example.com": SendStatus.SENT,
        "bo@example.com": SendStatus.SENT,
        REFUSED: SendStatus.FAILED,  # and no claim left for LATER: its retry sends it
    }
    sent = [s for s in sends if s.status == SendStatus.SENT]
    assert all(s.handing_off_at is not None and s.message_id for s in sent)
    assert by_email["ada@example.com"].next_step == by_email["bo@example.com"].next_step == 1
    assert by_email[REFUSED].exit_reason == "undeliverable"
    assert by_email["bought@example.com"].exit_reason == "purchased"
    assert by_email[LATER].status == EnrollmentStatus.ACTIVE and by_email[LATER].next_step == 0
    # The next reminders of the two sent, queued once the batch is done.
    assert sorted(job.args for job in jobs.pending) == sorted(
        [(ids["ada@example.com"], 1), (ids["bo@example.com"], 1)]
    )


async def test_steps_whose_jobs_run_together_go_in_one_batch_each_sent_once(
    shop: Shop, smtp: tuple[Server, str], redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = smtp
    emails = [f"customer{n}@example.com" for n in range(6)]
    ids = await enrollment_ids(shop, emails)
    batches: list[list[tuple[int, int]]] = []
    run_steps = engine.run_steps

    async def recording(*args: Any) -> list[engine.Outcome]:
        batches.append(list(args[3]))
        return await run_steps(*args)

    monkeypatch.setattr(engine, "run_steps", recording)
    ctx: dict[str, object] = {"transport": SmtpTransport(url), "redis": redis}
    jobs = [tasks.run_step(ctx, ids[email], 0) for email in emails]

    first = await asyncio.gather(*jobs)
    again = await asyncio.gather(*(tasks.run_step(ctx, ids[email], 0) for email in emails[:2]))

    assert first == ["sent"] * 6 and again == ["not due"] * 2
    assert [len(batch) for batch in batches] == [6, 2]
    assert server.received_by() == sorted(emails)
    transport = ctx["transport"]
    assert isinstance(transport, SmtpTransport)
    await transport.aclose()
