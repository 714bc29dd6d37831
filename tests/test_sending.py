"""Sending a due step: SMTP refusals, retries, the outbox, and headers that cannot be injected."""

from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlmodel import select

from app.db import sessionmaker
from app.mail import repository as mail_repository
from app.mail.transport import OutboxTransport, SmtpTransport
from app.queue import Jobs
from app.shops.models import Shop
from flows import engine
from flows.models import Enrollment, EnrollmentStatus, Send, SendStatus
from integrations.shopify import webhooks
from tests.conftest import Mailbox, _free_port
from tests.shopify import fixture


class Refusing:
    """An SMTP server that refuses every recipient with the given reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:  # noqa: N802, E501
        return self.reply


class RefusingSender:
    """An SMTP server that refuses the sender (MAIL FROM): the shop's set-up, not a customer."""

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return "550 5.7.1 Sender address rejected: not owned by user"


@pytest.fixture
def refusing_smtp(request: pytest.FixtureRequest) -> Iterator[str]:
    controller = Controller(Refusing(request.param), hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


async def enroll(shop: Shop, **changes: Any) -> Enrollment:
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, updated_at=now, **changes)
    assert shop.id is not None
    async with sessionmaker()() as session:
        for event in webhooks.events("checkouts/create", payload):
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()
        return (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()


async def run(enrollment: Enrollment, transport: Any) -> str:
    assert enrollment.id is not None
    async with sessionmaker()() as session:
        return await engine.run_step(session, Jobs(), transport, enrollment.id, 0)


async def reload(enrollment: Enrollment) -> tuple[Enrollment, list[Send]]:
    async with sessionmaker()() as session:
        fresh = await session.get(Enrollment, enrollment.id)
        sends = (await session.exec(select(Send))).all()
        assert fresh is not None
        return fresh, list(sends)


@pytest.mark.parametrize("refusing_smtp", ["550 5.1.1 No such user"], indirect=True)
async def test_a_permanent_refusal_ends_the_series_without_retrying(
    shop: Shop, refusing_smtp: str
) -> None:
    enrollment = await enroll(shop)

    outcome = await run(enrollment, SmtpTransport(refusing_smtp))

    assert outcome.startswith("undeliverable")
    fresh, sends = await reload(enrollment)
    assert fresh.status == EnrollmentStatus.EXITED and fresh.exit_reason == "undeliverable"
    assert [s.status for s in sends] == [SendStatus.FAILED]
    assert shop.id is not None
    async with sessionmaker()() as session:
        # The address is on the shop's suppression list: no flow tries it again.
        assert (await mail_repository.opted_out(session, shop.id, fresh.email))[0]


@pytest.mark.parametrize("refusing_smtp", ["451 4.3.0 Try again later"], indirect=True)
async def test_a_temporary_refusal_releases_the_claim_so_a_retry_sends_once(
    shop: Shop, refusing_smtp: str, smtp_url: str, mailbox: Mailbox
) -> None:
    enrollment = await enroll(shop)

    with pytest.raises(Exception, match="451"):
        await run(enrollment, SmtpTransport(refusing_smtp))
    fresh, sends = await reload(enrollment)
    assert fresh.status == EnrollmentStatus.ACTIVE and sends == []

    assert await run(enrollment, SmtpTransport(smtp_url)) == "sent"
    assert await run(enrollment, SmtpTransport(smtp_url)) == "not due"
    assert len(mailbox.messages) == 1


async def test_a_refused_sender_is_retried_and_ends_no_series(shop: Shop) -> None:
    controller = Controller(RefusingSender(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        enrollment = await enroll(shop)
        with pytest.raises(Exception, match="550"):
            await run(enrollment, SmtpTransport(f"smtp://127.0.0.1:{controller.port}"))
    finally:
        controller.stop()

    fresh, sends = await reload(enrollment)
    assert fresh.status == EnrollmentStatus.ACTIVE and sends == []
    async with sessionmaker()() as session:
        assert shop.id is not None
        assert not (await mail_repository.opted_out(session, shop.id, fresh.email))[0]


async def test_smtp_server_down_leaves_the_step_to_be_retried(shop: Shop) -> None:
    enrollment = await enroll(shop)

    with pytest.raises(Exception):  # noqa: B017  (whatever the connection error, it propagates)
        await run(enrollment, SmtpTransport(f"smtp://127.0.0.1:{_free_port()}"))

    fresh, sends = await reload(enrollment)
    assert fresh.status == EnrollmentStatus.ACTIVE and fresh.next_step == 0 and sends == []


async def test_without_smtp_the_message_lands_in_the_outbox_as_eml(
    shop: Shop, tmp_path: Any
) -> None:
    enrollment = await enroll(shop)

    assert await run(enrollment, OutboxTransport(tmp_path)) == "sent"

    (written,) = list(tmp_path.rglob("*.eml"))
    message = message_from_bytes(written.read_bytes(), policy=policy.default)
    assert message["To"] == "jane.doe@example.com"
    assert list(tmp_path.rglob("*.part")) == []


async def test_line_breaks_in_names_never_reach_headers(shop: Shop, tmp_path: Any) -> None:
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored
        stored.name = "Evil\r\nBcc: victim@example.com"
        await session.commit()
    customer = fixture("checkouts_create")["customer"] | {"first_name": "Jane\nBcc: x@y.z"}
    enrollment = await enroll(shop, customer=customer)

    assert await run(enrollment, OutboxTransport(tmp_path)) == "sent"

    raw = next(tmp_path.rglob("*.eml")).read_bytes()
    message = message_from_bytes(raw, policy=policy.default)
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"] and "\n" not in message["From"]


async def test_a_suppressed_address_gets_no_email(
    shop: Shop, smtp_url: str, mailbox: Mailbox
) -> None:
    enrollment = await enroll(shop)
    assert shop.id is not None
    async with sessionmaker()() as session:
        await mail_repository.add_suppression(
            session, shop.id, enrollment.email, "bounce", "550 mailbox gone"
        )
        await session.commit()

    assert await run(enrollment, SmtpTransport(smtp_url)) == "exited: suppressed"
    assert mailbox.messages == []
