"""Each flow end to end on a clock the test moves (time-machine, never sleeping): signed Shopify
webhooks over HTTP, the real arq worker on the real Redis, the sweeper and the daily win-back scan
as the worker's cron runs them, and emails on the in-process SMTP server.

The clock stands still (`tick=False`) and moves only when a test moves it. arq reads the same
clock (job scores and due times are `time.time()`), so a deferred step becomes due for the worker
exactly when the test travels past its due time. Quiet hours are off for shops made in tests (the
autouse `no_quiet_hours`), and the tests run in daylight hours in UTC anyway. Each test keeps to
one flow's marketing emails, so smart sending (16 h across flows) never holds one back.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from arq.connections import ArqRedis
from arq.constants import default_queue_name
from arq.utils import timestamp_ms
from sqlmodel import select

from app.customers import repository as customers
from app.db import sessionmaker
from app.mail.models import Unsubscribe
from app.shops.models import Shop
from flows.models import EnrollmentStatus
from flows.tasks import sweep, winback_scan
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, Mailbox, wait_for
from tests.shopify import add_documented_variants, fixture
from tests.test_abandoned_checkout import deliver, fresh_checkout, order_for
from tests.test_flows import (
    PRODUCTS,
    SOCKS,
    change_shop,
    edit_flow,
    enrollments,
    only,
    open_shop,
    reload,
    text,
)

# A Monday morning, in whole seconds: timestamps compare exactly after a database round trip.
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
JANE = "jane.doe@example.com"  # the shopper of the documented payloads
BO = "bo@example.com"

CART_SUBJECTS = (
    "Jane, your items are waiting at Nordic Wool",
    "Still thinking it over? Your cart at Nordic Wool is saved",
    "Last reminder: your cart at Nordic Wool",
)


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    """Time stands at START until the test moves it."""
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


# --- the store, the worker and the mailbox ---------------------------------------------------


async def open_store(standin: ShopifyStandin) -> Shop:
    """The stand-in store with test_flows' products and the two of the documented payloads."""
    shop = await open_shop(standin, country_code="US")
    add_documented_variants(standin, SHOP_DOMAIN)
    return shop


async def worker_caught_up(redis: ArqRedis) -> bool:
    """No job due by the test's clock is left: arq removes a job from its queue when it ends,
    and a job's follow-ups (ingest → run_step) are queued before it ends."""
    return int(await redis.zcount(default_queue_name, "-inf", timestamp_ms())) == 0


async def work(redis: ArqRedis) -> None:
    """The minute cron: the sweeper offers every due step, then the worker runs what is due."""
    await sweep({"redis": redis})
    await wait_for(lambda: worker_caught_up(redis))


def scan_time(day: int) -> datetime:
    """The daily scan's time (07:00:30 UTC, as the cron runs it) on a day counted from START."""
    return (START + timedelta(days=day)).replace(hour=7, minute=0, second=30)


@dataclass
class Store:
    """What each test here drives: the stand-in store and its shop, the app that takes its
    webhooks, the real worker's Redis, the mailbox, and the clock."""

    shop: Shop
    standin: ShopifyStandin
    server: httpx.AsyncClient
    redis: ArqRedis
    mailbox: Mailbox
    clock: time_machine.Traveller

    async def work(self) -> None:
        await work(self.redis)

    def subjects(self, to: str = JANE) -> list[str]:
        return [str(m["Subject"]) for m in self.mailbox.messages if m["To"] == to]

    async def arrives_when_due(self, due: datetime, subject: str, to: str = JANE) -> str:
        """Nothing a second before `due`; at `due`, exactly one more email, with this subject.
        Returns its plain text."""
        before = self.subjects(to)
        self.clock.move_to(due - timedelta(seconds=1))
        await self.work()
        assert self.subjects(to) == before, f"sent before {due}"
        self.clock.move_to(due)
        await self.work()
        assert self.subjects(to) == [*before, subject]
        (message,) = [m for m in self.mailbox.messages if m["To"] == to][-1:]
        return text(message)

    async def nothing_more_until(self, until: datetime) -> None:
        """Travel day by day to `until`, the sweeper running each time: no email at all."""
        count = len(self.mailbox.messages)
        while datetime.now(UTC) < until:
            self.clock.move_to(min(datetime.now(UTC) + timedelta(days=1), until))
            await self.work()
        assert len(self.mailbox.messages) == count, [
            m["Subject"] for m in self.mailbox.messages[count:]
        ]

    async def scan_days(self, days: range) -> list[int]:
        """The daily cron on each day (lapsed customers start win-back, their first email is
        due at once): the days on which someone started."""
        started = []
        for day in days:
            self.clock.move_to(scan_time(day))
            outcome = await winback_scan({"redis": self.redis})
            await self.work()
            if not outcome.startswith("0 "):
                started.append(day)
        return started

    # Webhooks, as Shopify delivers them.

    async def buys(self, email: str, number: int, **changes: Any) -> None:
        """orders/create for an order placed now, from no checkout."""
        payload = fixture("orders_create")
        payload.update(
            id=number, name=f"#{number}", order_number=number, email=email, contact_email=email,
            checkout_token=None, checkout_id=None, cart_token=None,
            created_at=datetime.now(UTC).isoformat(), **changes,
        )  # fmt: skip
        await deliver(self.server, "orders/create", payload)

    async def buys_every_20_days(self) -> None:
        """Jane's rhythm: three orders, on days 0, 20 and 40, at 10:00. With a median gap of 20
        days and k = 2 she has lapsed once 40 days pass without an order: from day 80 at 10:00."""
        for number, day in ((1001, 0), (1002, 20), (1003, 40)):
            self.clock.move_to(START + timedelta(days=day))
            await self.buys(JANE, number)

    async def ships(self, number: int, *, delivered: bool = False) -> None:
        """fulfillments/create when the parcel leaves; fulfillments/update when it arrives."""
        payload = fixture("fulfillments_create")
        now = datetime.now(UTC).isoformat()
        payload.update(order_id=number, status="success", email=JANE)
        if delivered:
            payload.update(shipment_status="delivered", updated_at=now)
            await deliver(self.server, "fulfillments/update", payload)
        else:
            payload.update(shipment_status=None, created_at=now, updated_at=now)
            await deliver(self.server, "fulfillments/create", payload)


@pytest.fixture
async def store(
    clock: time_machine.Traveller,
    standin: ShopifyStandin,
    server: httpx.AsyncClient,
    worker: None,
    redis: ArqRedis,
    mailbox: Mailbox,
) -> Store:
    """The stand-in store opened at START, the worker running."""
    shop = await open_store(standin)
    return Store(shop, standin, server, redis, mailbox, clock)


# --- abandoned cart ---------------------------------------------------------------------------


async def test_a_cart_gets_its_three_reminders_each_when_due_and_the_last_with_the_offer(
    store: Store,
) -> None:
    left_at = START

    await deliver(store.server, "checkouts/create", fresh_checkout())
    await store.work()
    assert store.mailbox.messages == []

    first = await store.arrives_when_due(left_at + timedelta(hours=1), CART_SUBJECTS[0])
    assert "Merino Crew Sweater" in first and "Wool Beanie" in first
    second = await store.arrives_when_due(left_at + timedelta(hours=24), CART_SUBJECTS[1])
    assert store.standin.discounts(SHOP_DOMAIN) == [] and "10%" not in second
    third = await store.arrives_when_due(left_at + timedelta(hours=72), CART_SUBJECTS[2])

    (discount,) = store.standin.discounts(SHOP_DOMAIN)
    assert discount["code"] in third and "10%" in third
    cart = await only("abandoned_cart", JANE)
    assert (cart.status, cart.next_step) == (EnrollmentStatus.DONE, None)
    await store.nothing_more_until(left_at + timedelta(days=10))
    assert store.mailbox.recipients == [[JANE]] * 3


async def test_a_purchase_after_the_first_reminder_ends_the_series_for_good(
    store: Store,
) -> None:
    checkout = fresh_checkout()
    await deliver(store.server, "checkouts/create", checkout)
    await store.arrives_when_due(START + timedelta(hours=1), CART_SUBJECTS[0])

    store.clock.shift(timedelta(hours=3))
    await deliver(store.server, "orders/create", order_for(checkout))
    await store.work()

    cart = await only("abandoned_cart", JANE)
    assert (cart.status, cart.exit_reason) == (EnrollmentStatus.EXITED, "purchased")
    assert cart.recovered_order_id is not None
    await store.nothing_more_until(START + timedelta(days=5))
    assert store.subjects() == [CART_SUBJECTS[0]]
    assert store.standin.discounts(SHOP_DOMAIN) == []


async def test_a_reminder_falling_due_after_the_cart_expired_ends_the_series_unsent(
    store: Store,
) -> None:
    shop = store.shop
    await edit_flow(shop, "set_setting", "abandoned_cart", "cart_kept_days", 3)
    await deliver(store.server, "checkouts/create", fresh_checkout())
    await store.arrives_when_due(START + timedelta(hours=1), CART_SUBJECTS[0])
    await store.arrives_when_due(START + timedelta(hours=24), CART_SUBJECTS[1])
    # The last reminder is due as the cart's third day ends, at 10:00 UTC: the quiet morning.
    await change_shop(shop, quiet_hours="09:00-12:00", timezone="UTC")

    store.clock.move_to(START + timedelta(hours=72))
    await store.work()
    waiting = await only("abandoned_cart", JANE)
    assert (waiting.status, waiting.waiting_for) == (EnrollmentStatus.ACTIVE, "quiet_hours")

    store.clock.move_to(START + timedelta(hours=74))  # noon: quiet hours over, the cart gone
    await store.work()

    cart = await only("abandoned_cart", JANE)
    assert (cart.status, cart.exit_reason) == (EnrollmentStatus.EXITED, "cart_expired")
    assert store.subjects() == list(CART_SUBJECTS[:2])
    assert store.standin.discounts(SHOP_DOMAIN) == []


# --- post-purchase ----------------------------------------------------------------------------


async def test_post_purchase_from_order_to_cross_sell_each_email_when_due(
    store: Store,
) -> None:
    # Two months ago Bo bought the sweater with socks: something to recommend to Jane later.
    sweater = fixture("orders_create")["line_items"][0]
    product_id, title, price = PRODUCTS[SOCKS]
    socks = {**sweater, "id": 2, "title": title, "variant_title": None, "price": price,
             "variant_id": int(SOCKS), "product_id": int(product_id)}  # fmt: skip
    await store.buys(BO, 4001, line_items=[sweater, socks])
    await store.work()
    store.clock.shift(timedelta(days=60))

    await store.buys(JANE, 5001)
    await store.work()
    store.clock.shift(timedelta(days=1))
    await store.work()
    assert store.subjects() == []  # nothing before the parcel leaves

    store.clock.shift(timedelta(hours=2))
    await store.ships(5001)
    await store.work()
    (notice,) = store.mailbox.messages
    assert notice["Subject"] == "Jane, your order #5001 is on its way"
    assert "1z827wk74630" in text(notice)

    store.clock.shift(timedelta(days=3))
    delivered_at = datetime.now(UTC)
    await store.ships(5001, delivered=True)
    await store.work()
    assert len(store.mailbox.messages) == 1

    care = await store.arrives_when_due(
        delivered_at + timedelta(days=2),
        "Jane, how to get the most out of your order from Nordic Wool",
    )
    assert "arrived safely" in care
    await store.arrives_when_due(
        delivered_at + timedelta(days=7),
        "Jane, what do you think of your order from Nordic Wool?",
    )
    await store.arrives_when_due(
        delivered_at + timedelta(days=14),
        "Jane, how likely are you to recommend Nordic Wool?",
    )
    cross_sell = await store.arrives_when_due(
        delivered_at + timedelta(days=21),
        "Jane, we picked these for you at Nordic Wool",
    )
    assert "Wool Socks" in cross_sell

    purchase = (await enrollments("post_purchase", JANE))[0]
    assert purchase.status == EnrollmentStatus.DONE
    await store.nothing_more_until(delivered_at + timedelta(days=60))
    assert len(store.subjects()) == 5 and store.subjects(BO) == []


# --- win-back ---------------------------------------------------------------------------------


async def test_win_back_from_the_lapse_to_the_goodbye_and_marketing_stopped(
    store: Store,
) -> None:
    await store.buys_every_20_days()
    await store.work()

    assert await store.scan_days(range(41, 82)) == [81]
    enrolled_at = scan_time(81)
    (offer,) = store.mailbox.messages
    assert offer["Subject"] == "Jane, we miss you at Nordic Wool: 15% off your order"
    (discount,) = store.standin.discounts(SHOP_DOMAIN)
    assert discount["code"] in text(offer)

    await store.arrives_when_due(
        enrolled_at + timedelta(days=7),
        "Jane, here's what we care about at Nordic Wool",
    )
    await store.arrives_when_due(
        enrolled_at + timedelta(days=14),
        "Jane, should we stop emailing you?",
    )

    store.clock.move_to(enrolled_at + timedelta(days=28) - timedelta(seconds=1))
    await store.work()
    assert await unsubscribed() == []
    store.clock.move_to(enrolled_at + timedelta(days=28))
    await store.work()
    assert await unsubscribed() == [(JANE, "winback_ignored")]
    assert (await only("winback", JANE)).status == EnrollmentStatus.DONE

    # Marketing has stopped: a cart she leaves the next day gets no reminder.
    store.clock.shift(timedelta(days=1))
    await deliver(store.server, "checkouts/create", fresh_checkout())
    await store.nothing_more_until(datetime.now(UTC) + timedelta(days=4))
    assert await enrollments("abandoned_cart", JANE) == []
    assert len(store.mailbox.messages) == 3


async def test_win_back_asks_again_only_after_the_cooldown(store: Store) -> None:
    shop = store.shop
    assert shop.id is not None
    await store.buys_every_20_days()
    assert await store.scan_days(range(41, 82)) == [81]
    first = await only("winback", JANE)

    # She comes back three days after the offer, then stops again: gaps 20, 20 and 44 days,
    # median 20, so she has lapsed again 40 days on, on day 124 at 10:00.
    store.clock.move_to(START + timedelta(days=84))
    await store.buys(JANE, 1004)
    await store.work()
    assert (await reload(first)).exit_reason == "purchased"

    # Lapsed again, but within 180 days of the last win-back: the daily scan leaves her be.
    assert await store.scan_days(range(82, 81 + 180)) == []
    async with sessionmaker()() as session:
        lapsed = [
            c.email
            async for c in customers.lapsed_customers(
                session, shop.id, now=scan_time(81 + 179), k=2.0
            )
        ]
    assert lapsed == [JANE]

    # 180 days after the first: asked again.
    assert await store.scan_days(range(81 + 180, 81 + 182)) == [81 + 180]
    assert [e.id == first.id for e in await enrollments("winback", JANE)] == [True, False]
    assert store.subjects() == ["Jane, we miss you at Nordic Wool: 15% off your order"] * 2


async def unsubscribed() -> list[tuple[str, str | None]]:
    async with sessionmaker()() as session:
        return [(u.email, u.reason) for u in (await session.exec(select(Unsubscribe))).all()]
