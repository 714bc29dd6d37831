"""Win-back end to end: the scan finds who lapsed against their own rhythm, each segment gets its
offer and copy, an order ends it, the goodbye unanswered stops marketing, and no one is asked
back twice within the cooldown. Time is the test's: orders lie in the past, steps are made due."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path

import httpx
from sqlmodel import select

from app.commerce.events import CheckoutChanged, OrderPlaced
from app.db import sessionmaker
from app.mail import repository as mail_repository
from app.mail.models import Unsubscribe
from app.mail.transport import OutboxTransport
from app.queue import Jobs
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import engine, winback
from flows import service as flows_service
from flows.models import Enrollment, EnrollmentStatus, Send, SendStatus
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET

NOW = datetime.now(UTC)


async def make_shop(standin: ShopifyStandin) -> Shop:
    standin.add_shop(SHOP_DOMAIN, name="Nordic Wool")
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session,
            domain=SHOP_DOMAIN,
            access_token=standin.token_for(SHOP_DOMAIN),
            api_secret=SHOP_SECRET,
        )
        shop.currency, shop.frequency_cap = "USD", None
        await session.commit()
        return shop


async def bought(shop: Shop, email: str, *days_ago: int, total: str = "40.00") -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        for days in days_ago:
            event = OrderPlaced(
                platform_id=f"{abs(hash((email, days)))}",
                name=f"#{days}",
                checkout_token=None,
                cart_token=None,
                email=email,
                currency="USD",
                total_price=total,
                placed_at=datetime.now(UTC) - timedelta(days=days),
            )
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()


async def enrollments() -> dict[str, Enrollment]:
    async with sessionmaker()() as session:
        query = select(Enrollment).where(Enrollment.flow == "winback")
        return {e.email: e for e in (await session.exec(query)).all()}


async def run_due(enrollment_id: int, transport: OutboxTransport) -> str:
    async with sessionmaker()() as session:
        enrollment = await session.get(Enrollment, enrollment_id)
        assert enrollment is not None and enrollment.next_step is not None
        enrollment.due_at = NOW - timedelta(seconds=1)
        await session.commit()
        return await engine.run_step(
            session, Jobs(), transport, enrollment_id, enrollment.next_step
        )


def last_text(outbox: Path) -> str:
    latest = max(outbox.rglob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    message = message_from_bytes(latest.read_bytes(), policy=policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


async def test_the_scan_enrolls_who_lapsed_against_their_own_rhythm(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    await bought(shop, "rhythm@example.com", 100, 90, 80)  # gaps 10 days: lapsed after 20
    await bought(shop, "steady@example.com", 60, 40, 20)  # gaps 20 days: due back at 40
    await bought(shop, "once@example.com", 120)  # one-time buyer past 90 days
    await bought(shop, "new@example.com", 30)  # one-time buyer, not yet
    await bought(shop, "gone@example.com", 200)
    async with sessionmaker()() as session:
        await mail_repository.add_unsubscribe(session, shop.id, "gone@example.com")
        await session.commit()

    started = await winback.scan_shop(shop.id, NOW)

    found = await enrollments()
    assert started == 2 and sorted(found) == ["once@example.com", "rhythm@example.com"]
    assert found["once@example.com"].context["segment"] == "one_time"
    assert found["rhythm@example.com"].context["segment"] == "regular"
    # Again the same day: no one new. A month on, "steady" has drifted too (50 days > 2 × 20),
    # while those already asked stay within their 180-day cooldown.
    assert await winback.scan_shop(shop.id, NOW) == 0
    assert await winback.scan_shop(shop.id, NOW + timedelta(days=30)) == 1
    assert sorted(await enrollments()) == [
        "once@example.com",
        "rhythm@example.com",
        "steady@example.com",
    ]


async def test_top_customers_get_the_richer_offer_and_their_own_copy(
    server: httpx.AsyncClient, standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    for number in range(60):  # 60 ordinary one-time customers, 2 % of them is one
        await bought(shop, f"c{number}@example.com", 100 + number, total="20.00")
    await bought(shop, "vip@example.com", 300, 250, total="900.00")
    await winback.scan_shop(shop.id, NOW)
    found = await enrollments()
    outbox = OutboxTransport(tmp_path)

    vip, ordinary = found["vip@example.com"], found["c0@example.com"]
    assert vip.context["segment"] == "top" and ordinary.context["segment"] == "one_time"
    assert await run_due(vip.id or 0, outbox) == "sent"
    vip_text = last_text(tmp_path)
    assert await run_due(ordinary.id or 0, outbox) == "sent"
    ordinary_text = last_text(tmp_path)

    assert "20% off" in vip_text and "10% off" in ordinary_text
    assert vip_text.split("20% off")[0] != ordinary_text.split("10% off")[0]  # own copy
    codes = {d["code"] for d in standin.discounts(SHOP_DOMAIN)}
    async with sessionmaker()() as session:
        sent = (await session.exec(select(Send).where(Send.status == SendStatus.SENT))).all()
    assert {s.discount_code for s in sent} == codes and len(codes) == 2


async def test_an_order_ends_win_back_and_an_unanswered_goodbye_stops_marketing(
    server: httpx.AsyncClient, standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    await bought(shop, "back@example.com", 150)
    await bought(shop, "quiet@example.com", 150)
    await winback.scan_shop(shop.id, NOW)
    found = await enrollments()
    outbox = OutboxTransport(tmp_path)
    assert await run_due(found["back@example.com"].id or 0, outbox) == "sent"

    await bought(shop, "back@example.com", 0)
    async with sessionmaker()() as session:
        back = await session.get(Enrollment, found["back@example.com"].id)
    assert back is not None and back.exit_reason == "purchased" and back.recovered_order_id

    quiet = found["quiet@example.com"].id or 0
    outcomes = [await run_due(quiet, outbox) for _ in range(4)]
    assert outcomes[:3] == ["sent", "sent", "sent"]
    assert "Keep me on the list" in last_text(tmp_path) or "/stay/" in last_text(tmp_path)
    assert outcomes[3] == "marketing stopped: the goodbye went unanswered"
    async with sessionmaker()() as session:
        stopped = (await session.exec(select(Unsubscribe))).one()
        enrollment = await session.get(Enrollment, quiet)
    assert stopped.email == "quiet@example.com" and stopped.reason == "winback_ignored"
    assert enrollment is not None and enrollment.status == EnrollmentStatus.DONE


async def test_a_click_on_stay_keeps_the_customer_on_the_list(
    server: httpx.AsyncClient, standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    await bought(shop, "stays@example.com", 150)
    await winback.scan_shop(shop.id, NOW)
    enrollment_id = (await enrollments())["stays@example.com"].id or 0
    outbox = OutboxTransport(tmp_path)
    for _ in range(3):
        assert await run_due(enrollment_id, outbox) == "sent"
    stay = next(w for w in last_text(tmp_path).split() if "/stay/" in w)

    page = await server.get(stay.removeprefix("https://rebound.test"))

    assert page.status_code == 200
    assert await run_due(enrollment_id, outbox) == "kept: the customer answered the goodbye"
    async with sessionmaker()() as session:
        assert (await session.exec(select(Unsubscribe))).first() is None


async def test_only_a_click_on_the_goodbye_answers_it(
    server: httpx.AsyncClient, standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    await bought(shop, "offer-clicker@example.com", 150)
    await winback.scan_shop(shop.id, NOW)
    enrollment_id = (await enrollments())["offer-clicker@example.com"].id or 0
    outbox = OutboxTransport(tmp_path)
    assert await run_due(enrollment_id, outbox) == "sent"
    shop_link = next(w for w in last_text(tmp_path).split() if "/r/" in w)
    assert (await server.get(shop_link.removeprefix("https://rebound.test"))).status_code == 303

    outcomes = [await run_due(enrollment_id, outbox) for _ in range(3)]

    assert outcomes == ["sent", "sent", "marketing stopped: the goodbye went unanswered"]


async def test_no_goodbye_sent_means_nobody_ignored_it(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    async with sessionmaker()() as session:
        await flows_service.set_step_enabled(session, shop, "winback", 3, False)
        await session.commit()
    await bought(shop, "no-goodbye@example.com", 150)
    await winback.scan_shop(shop.id, NOW)
    enrollment_id = (await enrollments())["no-goodbye@example.com"].id or 0
    outbox = OutboxTransport(tmp_path)

    outcomes = [await run_due(enrollment_id, outbox) for _ in range(3)]

    assert outcomes == ["sent", "sent", "kept: no goodbye was sent"]
    async with sessionmaker()() as session:
        assert (await session.exec(select(Unsubscribe))).first() is None


async def test_win_back_greets_by_name_in_the_language_of_the_last_order(
    standin: ShopifyStandin, tmp_path: Path
) -> None:
    shop = await make_shop(standin)
    assert shop.id is not None
    long_ago = datetime.now(UTC) - timedelta(days=150)
    async with sessionmaker()() as session:
        for event in (
            CheckoutChanged(
                token="done-1", cart_token=None, email="astrid@example.com", first_name="Astrid",
                last_name=None, phone=None, locale="sv", currency="USD", subtotal_price="40.00",
                total_price="40.00",
                restore_url=None, started_at=long_ago, updated_at=long_ago,
                completed_at=long_ago, line_items=[],
            ),
            OrderPlaced(
                platform_id="9100", name="#9100", checkout_token="done-1", cart_token=None,
                email="astrid@example.com", currency="USD", total_price="40.00",
                placed_at=long_ago, locale="sv-SE",
            ),
        ):  # fmt: skip
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()
    await winback.scan_shop(shop.id, NOW)
    enrollment = (await enrollments())["astrid@example.com"]

    assert await run_due(enrollment.id or 0, OutboxTransport(tmp_path)) == "sent"
    assert last_text(tmp_path).startswith("Hej Astrid!")


def test_segments_follow_the_customer() -> None:
    from app.customers.models import LapsedCustomer

    def customer(orders: int, top: bool) -> LapsedCustomer:
        return LapsedCustomer("a@b.c", orders, NOW, None, Decimal(1), 1, 1, 1, top)

    assert customer(1, True).segment == "top"
    assert customer(1, False).segment == "one_time"
    assert customer(3, False).segment == "regular"
