"""End to end: signed Shopify webhooks over HTTP → inbox → real arq worker on real Redis → email on
a real SMTP server → restore link and unsubscribe."""

import asyncio
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from arq.connections import ArqRedis
from sqlmodel import func, select

from app.commerce.models import Checkout, Order
from app.db import sessionmaker
from app.inbox.models import InboxEntry, InboxStatus
from app.mail.models import Unsubscribe
from app.shops.models import Shop
from flows import service as flows_service
from flows.models import Click, Enrollment, EnrollmentStatus, Send
from flows.tasks import sweep
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, Mailbox, wait_for, without_utm
from tests.shopify import fixture, headers_for, post

RESTORE_LINK = re.compile(r"https://rebound\.test/r/[A-Za-z0-9_.-]+")


def fresh_checkout(**changes: Any) -> dict[str, Any]:
    """The documented checkouts/create payload, touched just now."""
    payload = fixture("checkouts_create")
    now = datetime.now(UTC).isoformat()
    payload.update(created_at=now, updated_at=now, **changes)
    return payload


def order_for(checkout: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = fixture("orders_create")
    payload.update(
        checkout_token=checkout["token"],
        cart_token=checkout["cart_token"],
        email=checkout["email"],
        created_at=datetime.now(UTC).isoformat(),
        **changes,
    )
    return payload


async def deliver(client: httpx.AsyncClient, topic: str, payload: Any, **kw: Any) -> httpx.Response:
    response = await post(client, topic, payload, secret=SHOP_SECRET, domain=SHOP_DOMAIN, **kw)
    assert response.status_code == 200, response.text
    return response


async def count(model: Any, *where: Any) -> int:
    async with sessionmaker()() as session:
        query = select(func.count()).select_from(model)
        for condition in where:
            query = query.where(condition)
        return int((await session.exec(query)).one())


async def all_processed() -> bool:
    async with sessionmaker()() as session:
        pending = select(InboxEntry).where(InboxEntry.status == InboxStatus.RECEIVED)
        return (await session.exec(pending)).first() is None


async def enrollment() -> Enrollment | None:
    async with sessionmaker()() as session:
        return (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).first()


async def settle(mailbox: Mailbox, seconds: float = 1.0) -> None:
    """Let the worker finish whatever it may still do, so a 'no email' assertion means something."""
    await wait_for(all_processed)
    await asyncio.sleep(seconds)


def text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def test_abandoned_checkout_gets_one_recovery_email_that_restores_the_cart(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    checkout = fresh_checkout()

    await deliver(server, "checkouts/create", checkout)

    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    message = mailbox.messages[0]
    assert mailbox.recipients[0] == ["jane.doe@example.com"]
    assert message["To"] == "jane.doe@example.com"
    assert "Jane" in message["Subject"] and "waiting" in message["Subject"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = text_part(message), html_part(message)
    for body in (text, html):
        assert "Merino Crew Sweater" in body and "Charcoal / M" in body
        assert "Wool Beanie" in body and "Oatmeal" in body
        assert "$49.00" in body  # 2 × 24.50
        assert "$146.28" in body  # the total
    assert "Qty 2" in html
    assert "- Merino Crew Sweater (Charcoal / M) x 1: $89.00\r\n- Wool Beanie" in text  # one a line
    assert 'style="display:none' in html  # the preheader
    unsubscribe = message["List-Unsubscribe"]
    # The signed one-click URL alone: a mailto: address would go to a mailbox nobody reads.
    assert re.fullmatch(r"<https://rebound\.test/u/[^>]+>", unsubscribe)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    link = RESTORE_LINK.search(text)
    assert link and link.group(0) in html
    path = link.group(0).removeprefix("https://rebound.test")
    restored = await server.get(path)
    assert restored.status_code == 303
    assert without_utm(restored.headers["location"]) == checkout["abandoned_checkout_url"]
    assert await count(Click) == 1

    await settle(mailbox)
    assert len(mailbox.messages) == 1


async def test_tampered_or_unknown_restore_link_is_404_never_a_redirect(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    await deliver(server, "checkouts/create", fresh_checkout())
    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    link = RESTORE_LINK.search(text_part(mailbox.messages[0]))
    assert link
    path = link.group(0).removeprefix("https://rebound.test")
    data, mac = path.removeprefix("/r/").split(".")

    tampered_mac = await server.get(f"/r/{data}.{mac[:-2]}AA")
    other_send = await server.get("/r/eyJzZW5kIjo5OTksInNob3AiOjF9." + mac)
    garbage = await server.get("/r/not-a-token")

    for response in (tampered_mac, other_send, garbage):
        assert response.status_code == 404
        assert "location" not in response.headers
    assert await count(Click) == 0


async def test_unsubscribe_confirms_on_get_unsubscribes_on_post_and_stops_all_email(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    await deliver(server, "checkouts/create", fresh_checkout())
    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    match = re.search(r"<https://rebound\.test(/u/[^>]+)>", mailbox.messages[0]["List-Unsubscribe"])
    assert match

    page = await server.get(match.group(1))
    assert page.status_code == 200 and 'method="post"' in page.text
    assert await count(Unsubscribe) == 0  # a link scanner's GET changes nothing

    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click to the URL.
    done = await server.post(match.group(1), data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert await count(Unsubscribe) == 1

    another = fresh_checkout(token="b" * 32, cart_token="c" * 32)
    await deliver(server, "checkouts/create", another)
    await settle(mailbox)
    assert len(mailbox.messages) == 1
    async with sessionmaker()() as session:
        enrollments = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).all()
    assert all(e.status != EnrollmentStatus.ACTIVE for e in enrollments)


async def test_duplicate_delivery_is_acknowledged_and_sends_one_email(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    import json

    body = json.dumps(fresh_checkout()).encode()
    headers = headers_for("checkouts/create", body, secret=SHOP_SECRET, domain=SHOP_DOMAIN)

    first = await server.post("/webhooks/shopify", content=body, headers=headers)
    again = await server.post("/webhooks/shopify", content=body, headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    assert await count(InboxEntry) == 1
    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    # The same checkout sent again as a new delivery (a checkouts/update) is no new cart.
    await deliver(server, "checkouts/update", json.loads(body))
    await settle(mailbox)
    assert len(mailbox.messages) == 1
    assert await count(Send) == 1


async def test_deliveries_arriving_together_are_each_stored_once(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    import json

    deliveries = []
    for number in range(30):
        body = json.dumps(fresh_checkout(token=f"together-{number}")).encode()
        deliveries.append(
            (body, headers_for("checkouts/create", body, secret=SHOP_SECRET, domain=SHOP_DOMAIN))
        )
    # A third of them sent twice at the same moment: the receiver writes them in one batch.
    sent = deliveries + deliveries[:10]

    answers = await asyncio.gather(
        *(server.post("/webhooks/shopify", content=body, headers=h) for body, h in sent)
    )

    statuses = [answer.json()["status"] for answer in answers]
    assert all(answer.status_code == 200 for answer in answers)
    assert sorted(statuses) == ["accepted"] * 30 + ["duplicate"] * 10
    assert await count(InboxEntry) == 30
    for first, again in zip(answers[:10], answers[30:], strict=True):
        assert {first.json()["status"], again.json()["status"]} == {"accepted", "duplicate"}


async def test_order_before_the_checkout_webhook_means_no_email(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox, redis: ArqRedis
) -> None:
    checkout = fresh_checkout()
    await deliver(server, "orders/create", order_for(checkout))
    await wait_for(all_processed)

    await deliver(server, "checkouts/create", checkout)
    await sweep({"redis": redis})
    await settle(mailbox)

    assert mailbox.messages == []
    assert await count(Enrollment, Enrollment.flow == "abandoned_cart") == 0


async def test_order_between_enrollment_and_send_ends_the_series(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox, redis: ArqRedis
) -> None:
    checkout = await enrolled_an_hour_before_the_first_email(server, shop)

    await deliver(server, "orders/paid", order_for(checkout))
    await wait_for(all_processed)
    await _make_due()
    await sweep({"redis": redis})
    await settle(mailbox)

    assert mailbox.messages == []
    found = await enrollment()
    assert found and found.status == EnrollmentStatus.EXITED and found.exit_reason == "purchased"


async def test_the_worker_rechecks_for_a_purchase_just_before_sending(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox, redis: ArqRedis
) -> None:
    await enrolled_an_hour_before_the_first_email(server, shop)
    # An order the flows never heard of (recorded, but its event not applied) must still stop it.
    async with sessionmaker()() as session:
        assert shop.id is not None
        session.add(
            Order(
                shop_id=shop.id,
                platform_id="1",
                name="#1",
                checkout_token=None,
                cart_token=None,
                email="JANE.DOE@example.com".lower(),
                currency="USD",
                total_price="146.28",
                placed_at=datetime.now(UTC),
            )
        )
        await session.commit()

    await nothing_sent_when_due(mailbox, redis, exit_reason="purchased")


async def test_completed_checkout_update_ends_the_enrollment(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox, redis: ArqRedis
) -> None:
    checkout = await enrolled_an_hour_before_the_first_email(server, shop)

    later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    await deliver(
        server, "checkouts/update", {**checkout, "updated_at": later, "completed_at": later}
    )
    await wait_for(all_processed)
    await nothing_sent_when_due(mailbox, redis, exit_reason="purchased")


async def test_redis_flushed_between_enrollment_and_due_time_still_sends_exactly_one(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox, redis: ArqRedis
) -> None:
    await enrolled_an_hour_before_the_first_email(server, shop)

    async def only_the_step_queued() -> bool:
        # The step, deferred an hour. The ingest job leaves the queue just after its delivery
        # reads as processed: arq removes it once the function has returned.
        return await redis.zcard("arq:queue") == 1

    await wait_for(only_the_step_queued)

    await redis.flushall()
    await _make_due()
    await sweep({"redis": redis})
    await sweep({"redis": redis})  # a second sweep while the first job is queued adds nothing

    await wait_for(lambda: asyncio.sleep(0, result=mailbox.messages))
    await sweep({"redis": redis})  # and one after it ran sends nothing again
    await settle(mailbox)
    assert len(mailbox.messages) == 1
    found = await enrollment()
    assert found and found.next_step == 1  # the series goes on with step 2


async def test_checkout_without_email_is_not_enrolled(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    payload = fresh_checkout(email=None, customer=None)

    await deliver(server, "checkouts/create", payload)
    await settle(mailbox, 0.3)

    assert await count(Checkout) == 1
    assert await count(Enrollment, Enrollment.flow == "abandoned_cart") == 0
    assert mailbox.messages == []


async def test_forged_signature_and_unknown_shop_get_401_and_store_nothing(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    payload = fresh_checkout()
    forged = await post(server, "checkouts/create", payload, secret="wrong", domain=SHOP_DOMAIN)
    unknown = await post(
        server, "checkouts/create", payload, secret=SHOP_SECRET, domain="other.myshopify.com"
    )
    unsigned = await post(
        server,
        "checkouts/create",
        payload,
        secret=SHOP_SECRET,
        domain=SHOP_DOMAIN,
        headers={"X-Shopify-Hmac-Sha256": ""},
    )
    non_ascii = await post(
        server,
        "checkouts/create",
        payload,
        secret=SHOP_SECRET,
        domain=SHOP_DOMAIN,
        headers={"X-Shopify-Hmac-Sha256": "é".encode("latin-1")},
    )

    for response in (forged, unknown, unsigned, non_ascii):
        assert response.status_code == 401
    assert await count(InboxEntry) == 0
    assert await count(Checkout) == 0


async def test_verified_malformed_json_is_acknowledged_and_kept_as_failed(
    server: httpx.AsyncClient, worker: None, shop: Shop
) -> None:
    response = await post(
        server, "checkouts/create", b'{"token": "abc",', secret=SHOP_SECRET, domain=SHOP_DOMAIN
    )

    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}

    async def failed() -> InboxEntry | None:
        async with sessionmaker()() as session:
            query = select(InboxEntry).where(InboxEntry.status == InboxStatus.FAILED)
            return (await session.exec(query)).first()

    entry = await wait_for(failed)
    assert entry.payload == '{"token": "abc",'
    assert entry.error is not None and entry.error.startswith("payload is not JSON")
    assert await count(Checkout) == 0


async def test_verified_but_unprocessable_payload_stays_in_the_inbox_as_failed(
    server: httpx.AsyncClient, worker: None, shop: Shop, mailbox: Mailbox
) -> None:
    payload = fresh_checkout()
    del payload["token"]

    await deliver(server, "checkouts/create", payload)

    async def failed() -> InboxEntry | None:
        async with sessionmaker()() as session:
            query = select(InboxEntry).where(InboxEntry.status == InboxStatus.FAILED)
            return (await session.exec(query)).first()

    entry = await wait_for(failed)
    assert entry.error == "token is missing"
    assert await count(Checkout) == 0


async def test_ids_above_2_to_the_53_stay_exact(
    server: httpx.AsyncClient, worker: None, shop: Shop
) -> None:
    big = 2**53 + 1  # a float would round this to 2**53
    checkout = fresh_checkout()
    await deliver(server, "orders/create", order_for(checkout, id=big))
    await wait_for(all_processed)

    async with sessionmaker()() as session:
        order = (await session.exec(select(Order))).one()
    assert order.platform_id == "9007199254740993"


async def test_out_of_order_update_never_overwrites_a_newer_cart(
    server: httpx.AsyncClient, worker: None, shop: Shop
) -> None:
    newer = fresh_checkout(total_price="500.00")
    older = {
        **newer,
        "total_price": "1.00",
        "updated_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }

    await deliver(server, "checkouts/update", newer)
    await wait_for(all_processed)
    await deliver(server, "checkouts/update", older)
    await wait_for(all_processed)

    async with sessionmaker()() as session:
        stored = (await session.exec(select(Checkout))).one()
    assert stored.total_price == "500.00"


async def test_health_checks_database_and_redis(server: httpx.AsyncClient) -> None:
    response = await server.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "redis": "ok"}


async def enrolled_an_hour_before_the_first_email(
    server: httpx.AsyncClient, shop: Shop
) -> dict[str, Any]:
    """A checkout abandoned just now, enrolled, its first email an hour away."""
    async with sessionmaker()() as session:
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 3600)
        await session.commit()
    checkout = fresh_checkout()
    await deliver(server, "checkouts/create", checkout)
    await wait_for(enrollment)
    return checkout


async def nothing_sent_when_due(mailbox: Mailbox, redis: ArqRedis, *, exit_reason: str) -> None:
    """Time passes until the step is due: no email goes out, and the series ended for why."""
    await _make_due()
    await sweep({"redis": redis})
    await settle(mailbox)
    assert mailbox.messages == []
    found = await enrollment()
    assert found and found.exit_reason == exit_reason


async def _make_due() -> None:
    """Time passes: the enrollment's step becomes due now."""
    async with sessionmaker()() as session:
        found = (
            await session.exec(select(Enrollment).where(Enrollment.flow == "abandoned_cart"))
        ).one()
        found.due_at = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()
