"""The flow engine with time under the test's control: events whose timestamps lie in the past
make steps due, and `engine.run_step` runs them at once on a real database, a real SMTP server
and the Shopify stand-in. Nothing here sleeps."""

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce import repository as commerce
from app.commerce.events import (
    CheckoutChanged,
    CheckoutClosed,
    CommerceEvent,
    LineItem,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
    Tracking,
)
from app.commerce.models import Order
from app.db import sessionmaker
from app.mail.transport import SmtpTransport, Transport
from app.queue import Jobs
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import engine, timing
from flows import service as flows_service
from flows.definitions import (
    DAY,
    DEFAULT_SETTINGS,
    DEFAULT_STEPS,
    HOUR,
    FlowDefinitionError,
    validate_settings,
    validate_steps,
)
from flows.models import Enrollment, EnrollmentStatus, Flow, NpsAnswer, Send, SendStatus
from flows.service import FlowSettingError
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, Mailbox, link_targets

# variant id → (product id, title, price). The stand-in store has all but the scarf (deleted
# from the store) and lists the cardigan as sold out.
PRODUCTS = {
    "4401": ("801", "Merino Crew Sweater", "120.00"),
    "4402": ("802", "Wool Beanie", "25.00"),
    "4403": ("803", "Wool Socks", "15.00"),
    "4404": ("804", "Mittens", "30.00"),
    "4405": ("805", "Scarf", "40.00"),
    "4406": ("806", "Cardigan", "90.00"),
}
DELETED = {"4405"}
SOLD_OUT = {"4406"}
SWEATER, BEANIE, SOCKS, MITTENS, SCARF, CARDIGAN = PRODUCTS
NPS_LINK = re.compile(r"https://rebound\.test(/nps/[A-Za-z0-9_.-]+/(\d+))")
ADA = "ada@example.com"
BO = "bo@example.com"
Row = TypeVar("Row", bound=SQLModel)


# --- time, shops and events ------------------------------------------------------------------


def now() -> datetime:
    # Whole seconds: a timestamp compared after a database round trip compares exactly.
    return datetime.now(UTC).replace(microsecond=0)


async def open_shop(standin: ShopifyStandin, *, country_code: str | None = "SE") -> Shop:
    """A Shopify store with the products above, connected through the stand-in."""
    standin.add_shop(SHOP_DOMAIN, name="Nordic Wool")
    for variant_id, (_, title, price) in PRODUCTS.items():
        if variant_id in DELETED:
            continue
        standin.add_variant(
            SHOP_DOMAIN, variant_id=int(variant_id), title="Default", price=price,
            product_title=title, handle=title.lower().replace(" ", "-"),
            available=variant_id not in SOLD_OUT,
        )  # fmt: skip
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session,
            domain=SHOP_DOMAIN,
            access_token=standin.token_for(SHOP_DOMAIN),
            api_secret=SHOP_SECRET,
            name="Nordic Wool",
        )
        shop.currency = "USD"
        shop.country_code = country_code
        await session.commit()
        return shop


async def stored_row(session: AsyncSession, model: type[Row], row_id: int | None) -> Row:
    """The row as the database holds it now; it must be there."""
    row = await session.get(model, row_id)
    assert row is not None
    return row


async def update(model: type[SQLModel], row_id: int | None, **values: Any) -> None:
    """Set columns of one stored row, committed."""
    async with sessionmaker()() as session:
        row = await stored_row(session, model, row_id)
        for key, value in values.items():
            setattr(row, key, value)
        await session.commit()


async def change_shop(shop: Shop, **values: Any) -> None:
    await update(Shop, shop.id, **values)


async def switch_off(shop: Shop, name: str, *keys: str) -> None:
    """Switch steps off by key, as a merchant would by number."""
    flow = await stored_flow(shop, name)
    for key in keys:
        (number,) = [n for n, step in enumerate(flow.steps, start=1) if step["key"] == key]
        await edit_flow(shop, "set_step_enabled", name, number, False)


async def edit_flow(shop: Shop, edit: str, *args: Any) -> None:
    """A merchant's edit through flows.service, committed."""
    async with sessionmaker()() as session:
        await getattr(flows_service, edit)(session, await stored_row(session, Shop, shop.id), *args)
        await session.commit()


async def stored_flow(shop: Shop, name: str) -> Flow:
    async with sessionmaker()() as session:
        query = select(Flow).where(Flow.shop_id == shop.id, Flow.name == name)
        return (await session.exec(query)).one()


def item(variant_id: str, quantity: int = 1) -> LineItem:
    product_id, title, price = PRODUCTS[variant_id]
    return LineItem(
        title=title, variant_title=None, quantity=quantity, price=price,
        variant_id=variant_id, product_id=product_id,
    )  # fmt: skip


def order(
    number: str,
    email: str,
    variants: Sequence[str],
    *,
    placed_at: datetime,
    total: str = "100.00",
    country: str | None = "SE",
    codes: tuple[str, ...] = (),
) -> OrderPlaced:
    return OrderPlaced(
        platform_id=number, name=f"#{number}", checkout_token=None, cart_token=None,
        email=email, currency="USD", total_price=total, placed_at=placed_at,
        line_items=[item(v) for v in variants], shipping_country=country, locale="en",
        discount_codes=codes,
    )  # fmt: skip


def checkout(
    token: str,
    email: str,
    *,
    subtotal: str = "60.00",
    total: str | None = None,
    updated_at: datetime | None = None,
    started_at: datetime | None = None,
    variants: Sequence[str] = (SWEATER,),
    phone: str | None = None,
) -> CheckoutChanged:
    updated = updated_at or now() - timedelta(hours=2)
    return CheckoutChanged(
        token=token, cart_token=f"cart-{token}", email=email, first_name="Ada",
        last_name="Lovelace", phone=phone, locale="en",
        currency="USD", subtotal_price=subtotal, total_price=total or subtotal,
        restore_url=f"https://{SHOP_DOMAIN}/checkouts/{token}/recover",
        started_at=started_at or updated, updated_at=updated, completed_at=None,
        line_items=[item(v) for v in variants],
    )  # fmt: skip


def shipped(
    number: str,
    at: datetime,
    *,
    delivered_at: datetime | None = None,
    tracking: tuple[Tracking, ...] = (),
    shipment: str = "f1",
    changed_at: datetime | None = None,
) -> OrderShipped:
    return OrderShipped(
        order_id=number, shipment_id=shipment, shipped_at=at, tracking=tracking,
        delivered_at=delivered_at, changed_at=changed_at,
    )  # fmt: skip


def delivered_order(
    number: str, email: str, *, placed_at: datetime
) -> tuple[OrderPlaced, OrderShipped]:
    """An order of the sweater, shipped the day after it was placed and delivered the day after
    that."""
    return (
        order(number, email, [SWEATER], placed_at=placed_at),
        shipped(number, placed_at + timedelta(days=1), delivered_at=placed_at + timedelta(days=2)),
    )


async def apply(shop: Shop, *events: CommerceEvent) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        for event in events:
            await engine.apply(session, Jobs(), shop.id, event)
        await session.commit()


# --- enrollments, steps and what was sent ----------------------------------------------------


async def enrollments(flow: str, email: str | None = None) -> list[Enrollment]:
    async with sessionmaker()() as session:
        query = select(Enrollment).where(Enrollment.flow == flow).order_by(col(Enrollment.id))
        if email is not None:
            query = query.where(Enrollment.email == email)
        return list((await session.exec(query)).all())


async def only(flow: str, email: str) -> Enrollment:
    (enrollment,) = await enrollments(flow, email)
    return enrollment


async def reload(enrollment: Enrollment) -> Enrollment:
    async with sessionmaker()() as session:
        return await stored_row(session, Enrollment, enrollment.id)


async def change(enrollment: Enrollment, **values: Any) -> None:
    """Move an enrollment in time (or otherwise) in the database, as time passing would."""
    await update(Enrollment, enrollment.id, **values)


def index(enrollment: Enrollment, step: int | str) -> int:
    """A step by its index, or by its key: keys stay put when a flow gains steps."""
    if isinstance(step, int):
        return step
    (found,) = [n for n, spec in enumerate(enrollment.steps) if spec["key"] == step]
    return found


def next_key(enrollment: Enrollment) -> str | None:
    step = enrollment.next_step
    return None if step is None else str(enrollment.steps[step]["key"])


async def run(enrollment: Enrollment, step: int | str, transport: Transport) -> str:
    assert enrollment.id is not None
    async with sessionmaker()() as session:
        return await engine.run_step(
            session, Jobs(), transport, enrollment.id, index(enrollment, step)
        )


async def sends(enrollment: Enrollment) -> list[Send]:
    async with sessionmaker()() as session:
        query = select(Send).where(Send.enrollment_id == enrollment.id).order_by(col(Send.step))
        return list((await session.exec(query)).all())


async def send_for(enrollment: Enrollment, step: int | str) -> Send:
    (found,) = [s for s in await sends(enrollment) if s.step == index(enrollment, step)]
    return found


def text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def hrefs(message: EmailMessage) -> list[str]:
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    return re.findall(r'href="([^"]*)"', str(body.get_content()))


def to(mailbox: Mailbox, address: str) -> list[EmailMessage]:
    return [m for m in mailbox.messages if m["To"] == address]


# --- post-purchase ---------------------------------------------------------------------------


async def test_post_purchase_from_the_order_to_the_last_step(
    standin: ShopifyStandin, server: httpx.AsyncClient, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    transport = SmtpTransport(smtp_url)
    placed_at = now() - timedelta(days=25)
    shipped_at = placed_at + timedelta(days=1)
    delivered_at = shipped_at + timedelta(days=1)

    await apply(shop, order("5001", ADA, [SWEATER], placed_at=placed_at))

    enrollment = await only("post_purchase", ADA)
    assert enrollment.status == EnrollmentStatus.ACTIVE
    assert enrollment.steps[0]["key"] == "thank_you" and not enrollment.steps[0]["enabled"]
    assert next_key(enrollment) == "shipping_notice"
    assert (enrollment.due_at, enrollment.waiting_for) == (None, "shipped")
    assert await run(enrollment, "shipping_notice", transport) == "not due"

    parcel = Tracking("PostNord", "PN123456789SE", "https://tracking.postnord.com/PN123456789SE")
    await apply(shop, shipped("5001", shipped_at, tracking=(parcel,)))

    enrollment = await reload(enrollment)
    assert (enrollment.due_at, enrollment.waiting_for) == (shipped_at, None)
    assert await run(enrollment, "shipping_notice", transport) == "sent"
    (notice,) = mailbox.messages
    assert notice["To"] == ADA
    assert "PN123456789SE" in text(notice) and "Carrier: PostNord" in text(notice)

    # Care waits for the delivery; with no delivery event, it is expected after transit_days.
    enrollment = await reload(enrollment)
    assert next_key(enrollment) == "care"
    assert enrollment.due_at == shipped_at + timedelta(days=5) + timedelta(days=2)

    # The same fulfilment, now delivered (no tracking this time: the number is kept).
    await apply(shop, shipped("5001", shipped_at, delivered_at=delivered_at))

    enrollment = await reload(enrollment)
    assert enrollment.due_at == delivered_at + timedelta(days=2)
    assert await run(enrollment, "care", transport) == "sent"
    assert "arrived safely" in text(mailbox.messages[-1])

    enrollment = await reload(enrollment)
    assert next_key(enrollment) == "review"
    assert enrollment.due_at == delivered_at + timedelta(days=7)
    assert await run(enrollment, "review", transport) == "sent"
    review = text(mailbox.messages[-1])
    tracked = next(w for w in review.split() if "/c/" in w)  # the product page, tracked
    landed = await server.get(tracked.removeprefix("https://rebound.test"))
    assert landed.status_code == 303
    assert landed.headers["location"].startswith(
        f"https://{SHOP_DOMAIN}/products/merino-crew-sweater?utm_source=rebound&utm_medium=email"
        "&utm_campaign=post_purchase&utm_content=review"
    )

    enrollment = await reload(enrollment)
    assert next_key(enrollment) == "nps"
    assert enrollment.due_at == delivered_at + timedelta(days=14)
    assert await run(enrollment, "nps", transport) == "sent"
    links = NPS_LINK.findall(text(mailbox.messages[-1]))
    assert [int(score) for _, score in links] == list(range(11))
    assert len(mailbox.messages) == 4

    answered = await server.get(links[9][0])
    assert answered.status_code == 200
    assert [a.score for a in await nps_answers()] == [9]
    await server.get(links[3][0])
    assert [a.score for a in await nps_answers()] == [3]  # a second click changes the answer
    token = links[3][0].split("/")[2]
    assert (await server.get(f"/nps/{token}/11")).status_code == 404
    assert (await server.get(f"/nps/{token[:-2]}xx/5")).status_code == 404
    assert [a.score for a in await nps_answers()] == [3]

    # Nobody else bought the sweater with something else: nothing to recommend.
    enrollment = await reload(enrollment)
    assert next_key(enrollment) == "cross_sell"
    assert enrollment.due_at == delivered_at + timedelta(days=21)
    assert await run(enrollment, "cross_sell", transport) == "skipped: nothing to recommend yet"
    skipped = await send_for(enrollment, "cross_sell")
    assert skipped.status == SendStatus.SKIPPED and skipped.error == "nothing to recommend yet"
    assert len(mailbox.messages) == 4

    enrollment = await reload(enrollment)
    assert enrollment.status == EnrollmentStatus.DONE and enrollment.next_step is None
    assert [s.status for s in await sends(enrollment)] == [SendStatus.SENT] * 4 + [
        SendStatus.SKIPPED
    ]


async def nps_answers() -> list[NpsAnswer]:
    async with sessionmaker()() as session:
        return list((await session.exec(select(NpsAnswer))).all())


async def test_cross_sell_recommends_what_others_bought_with_it_never_what_the_customer_has(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    # Care, review and NPS off: cross-sell follows the shipping notice.
    await switch_off(shop, "post_purchase", "care", "review", "nps")
    long_ago = now() - timedelta(days=60)
    await apply(
        shop,
        order("4001", ADA, [SOCKS], placed_at=now() - timedelta(days=100)),  # Ada has socks
        order("4002", "bo@example.com", [SWEATER, BEANIE], placed_at=long_ago),
        order("4003", "cy@example.com", [SWEATER, SOCKS, BEANIE], placed_at=long_ago),
        order("4004", "di@example.com", [SWEATER, SOCKS], placed_at=long_ago),
        order("4005", "ed@example.com", [SWEATER, MITTENS], placed_at=long_ago),
        order("4006", "fa@example.com", [SWEATER, SCARF], placed_at=long_ago),
        order("4007", "gu@example.com", [SWEATER, CARDIGAN], placed_at=long_ago),
        order("4008", "hu@example.com", [CARDIGAN, SCARF, MITTENS], placed_at=long_ago),
    )
    placed_at = now() - timedelta(days=25)
    delivered_at = placed_at + timedelta(days=2)
    await apply(shop, *delivered_order("5001", ADA, placed_at=placed_at))
    enrollment = await only("post_purchase", ADA)
    transport = SmtpTransport(smtp_url)
    assert await run(enrollment, "shipping_notice", transport) == "sent"

    enrollment = await reload(enrollment)
    assert next_key(enrollment) == "cross_sell"
    assert enrollment.due_at == delivered_at + timedelta(days=21)
    assert await run(enrollment, "cross_sell", transport) == "sent"

    body = text(mailbox.messages[-1])
    picks = body.split("we think you might like these too.")[1].split("Shop Nordic Wool")[0]
    # Most often bought with the sweater first; socks she has, the scarf the store deleted,
    # the cardigan is sold out; mittens were bought with it once.
    titles = [line[2:].split(",")[0] for line in picks.splitlines() if line.startswith("- ")]
    assert titles == ["Wool Beanie", "Mittens"]
    assert f"https://{SHOP_DOMAIN}/products/wool-beanie" in link_targets(picks)
    assert "$25.00" in picks
    assert "Merino Crew Sweater" not in picks


async def test_an_international_parcel_is_expected_a_week_later(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin, country_code="SE")
    placed_at = now() - timedelta(days=3)
    shipped_at = placed_at + timedelta(days=1)
    await apply(
        shop,
        order("6001", ADA, [SWEATER], placed_at=placed_at, country="SE"),
        order("6002", BO, [SWEATER], placed_at=placed_at, country="US"),
        shipped("6001", shipped_at),
        shipped("6002", shipped_at),
    )
    transport = SmtpTransport(smtp_url)
    domestic, abroad = await only("post_purchase", ADA), await only("post_purchase", BO)
    assert await run(domestic, "shipping_notice", transport) == "sent"
    assert await run(abroad, "shipping_notice", transport) == "sent"

    domestic, abroad = await reload(domestic), await reload(abroad)
    assert next_key(domestic) == next_key(abroad) == "care"
    assert domestic.due_at == shipped_at + timedelta(days=5 + 2)
    assert abroad.due_at == shipped_at + timedelta(days=5 + 7 + 2)

    # A delivery event replaces the estimate, at home and abroad alike.
    delivered_at = shipped_at + timedelta(days=1)
    await apply(shop, shipped("6002", shipped_at, delivered_at=delivered_at))
    assert (await reload(abroad)).due_at == delivered_at + timedelta(days=2)


async def test_a_fulfilment_or_refund_delivered_before_its_order_still_counts(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    placed_at = now() - timedelta(days=3)
    shipped_at = placed_at + timedelta(days=1)
    await apply(
        shop,
        shipped("7101", shipped_at),
        OrderRefunded("7102", "r1", "100.00", now()),
        order("7101", ADA, [SWEATER], placed_at=placed_at),
        order("7102", BO, [SWEATER], placed_at=placed_at),
        shipped("7102", shipped_at),
    )
    transport = SmtpTransport(smtp_url)

    shipping = await only("post_purchase", ADA)
    assert next_key(shipping) == "shipping_notice" and shipping.due_at == shipped_at
    assert await run(shipping, "shipping_notice", transport) == "sent"

    assert await enrollments("post_purchase", BO) == []  # refunded in full before it came
    assert [m["To"] for m in mailbox.messages] == [ADA]


async def test_a_late_older_fulfilment_delivery_keeps_the_corrected_tracking(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    """fulfillments/update with a corrected number, then the create it corrected arriving
    late (webhooks come out of order): the email shows the corrected number."""
    shop = await open_shop(standin)
    placed_at = now() - timedelta(days=3)
    shipped_at = placed_at + timedelta(days=1)
    wrong = Tracking("PostNord", "PN000000000SE", "https://tracking.postnord.com/PN000000000SE")
    right = Tracking("PostNord", "PN123456789SE", "https://tracking.postnord.com/PN123456789SE")
    await apply(
        shop,
        order("7201", ADA, [SWEATER], placed_at=placed_at),
        shipped("7201", shipped_at, tracking=(right,), changed_at=shipped_at + timedelta(hours=2)),
        shipped("7201", shipped_at, tracking=(wrong,), changed_at=shipped_at),
    )

    shipping = await only("post_purchase", ADA)
    assert await run(shipping, "shipping_notice", SmtpTransport(smtp_url)) == "sent"
    (notice,) = mailbox.messages
    assert "PN123456789SE" in text(notice) and "PN000000000SE" not in text(notice)

    # A later correction still wins, as does a delivery that does not say when it was made.
    newest = Tracking("DHL", "JD014600003SE", None)
    await apply(shop, shipped("7201", shipped_at, tracking=(newest,)))
    async with sessionmaker()() as session:
        order_row = (await session.exec(select(Order).where(Order.platform_id == "7201"))).one()
        (stored,) = await commerce.shipments_for_order(session, order_row)
    assert [entry["number"] for entry in stored.tracking] == ["JD014600003SE"]


async def test_a_cancelled_or_fully_refunded_order_ends_its_series(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    placed_at = now() - timedelta(days=3)
    await apply(
        shop,
        order("7001", "cancelled@example.com", [SWEATER], placed_at=placed_at),
        order("7002", "refunded@example.com", [SWEATER], placed_at=placed_at),
        order("7003", "partly@example.com", [SWEATER], placed_at=placed_at),
        shipped("7001", placed_at + timedelta(hours=1)),  # the notice of 7001 is due
    )
    await apply(
        shop,
        OrderCancelled("7001", now()),
        OrderRefunded("7002", "r1", "100.00", now()),
        OrderRefunded("7003", "r1", "60.00", now()),
        OrderRefunded("7003", "r1", "60.00", now()),  # the same refund delivered twice
    )

    cancelled = await only("post_purchase", "cancelled@example.com")
    refunded = await only("post_purchase", "refunded@example.com")
    partly = await only("post_purchase", "partly@example.com")
    assert (cancelled.status, cancelled.exit_reason) == (EnrollmentStatus.EXITED, "order_cancelled")
    assert (refunded.status, refunded.exit_reason) == (EnrollmentStatus.EXITED, "order_refunded")
    assert (partly.status, partly.exit_reason) == (EnrollmentStatus.ACTIVE, None)
    assert await run(cancelled, "shipping_notice", SmtpTransport(smtp_url)) == "not active"

    await apply(shop, OrderRefunded("7003", "r2", "40.00", now()))  # now all of it

    partly = await reload(partly)
    assert (partly.status, partly.exit_reason) == (EnrollmentStatus.EXITED, "order_refunded")
    assert mailbox.messages == []


async def test_an_unsubscribed_customer_gets_service_emails_but_no_marketing(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    placed_at = now() - timedelta(days=25)
    await apply(
        shop,
        *delivered_order("5001", ADA, placed_at=placed_at),
        checkout("cart-1", ADA),  # a new cart since: she is in both flows
    )
    assert (await only("abandoned_cart", ADA)).status == EnrollmentStatus.ACTIVE

    assert shop.id is not None
    async with sessionmaker()() as session:
        await engine.unsubscribe(session, shop.id, ADA)
        await session.commit()

    cart = await only("abandoned_cart", ADA)
    assert (cart.status, cart.exit_reason) == (EnrollmentStatus.EXITED, "unsubscribed")
    purchase = await only("post_purchase", ADA)
    assert purchase.status == EnrollmentStatus.ACTIVE

    transport = SmtpTransport(smtp_url)
    assert await run(purchase, "shipping_notice", transport) == "sent"
    (notice,) = mailbox.messages
    assert notice["To"] == ADA and "shipped" in text(notice)
    assert await run(purchase, "care", transport) == "skipped: unsubscribed"
    assert await run(purchase, "review", transport) == "skipped: unsubscribed"

    review = await send_for(purchase, "review")
    assert (review.status, review.error) == (SendStatus.SKIPPED, "unsubscribed")
    assert len(mailbox.messages) == 1
    assert next_key(await reload(purchase)) == "nps"


# --- smart sending and quiet hours -----------------------------------------------------------


async def test_smart_sending_holds_a_marketing_step_after_another_flows_email(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    transport = SmtpTransport(smtp_url)
    placed_at = now() - timedelta(days=25)
    await apply(
        shop,
        *delivered_order("5001", ADA, placed_at=placed_at),
        checkout("cart-1", ADA),
    )
    cart = await only("abandoned_cart", ADA)
    assert await run(cart, 0, transport) == "sent"
    reminded_at = (await send_for(cart, 0)).sent_at
    assert reminded_at is not None

    purchase = await only("post_purchase", ADA)
    # The shipping notice is a service email: no waiting.
    assert await run(purchase, "shipping_notice", transport) == "sent"

    assert await run(purchase, "care", transport) == "deferred: smart_sending"
    purchase = await reload(purchase)
    assert purchase.status == EnrollmentStatus.ACTIVE and next_key(purchase) == "care"
    assert purchase.waiting_for == "smart_sending"
    assert purchase.due_at == reminded_at + timedelta(hours=16)
    assert [s.step for s in await sends(purchase)] == [index(purchase, "shipping_notice")]
    assert await run(purchase, "care", transport) == "not due"

    # A repeated delivery of the order (orders/paid after orders/create) leaves it waiting.
    await apply(shop, order("5001", ADA, [SWEATER], placed_at=placed_at))
    again = await reload(purchase)
    assert (again.waiting_for, again.due_at) == ("smart_sending", purchase.due_at)

    # Without a frequency cap, the care email goes once it is due.
    await change_shop(shop, frequency_cap=None)
    await change(purchase, due_at=now() - timedelta(minutes=1))
    assert await run(purchase, "care", transport) == "sent"
    assert len(to(mailbox, ADA)) == 3


async def test_smart_sending_ignores_the_flows_own_earlier_email(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    transport = SmtpTransport(smtp_url)
    placed_at = now() - timedelta(days=25)
    await apply(shop, *delivered_order("5001", ADA, placed_at=placed_at))
    purchase = await only("post_purchase", ADA)
    assert await run(purchase, "shipping_notice", transport) == "sent"
    assert await run(purchase, "care", transport) == "sent"  # marketing
    assert await run(purchase, "review", transport) == "sent"  # marketing, moments later
    assert [s.marketing for s in await sends(purchase)] == [False, True, True]


async def test_smart_sending_counts_another_series_of_the_same_flow(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    transport = SmtpTransport(smtp_url)
    placed_at = now() - timedelta(days=25)
    for number in ("5001", "5002"):  # two orders, two post-purchase series
        await apply(shop, *delivered_order(number, ADA, placed_at=placed_at))
    first, second = await enrollments("post_purchase", ADA)
    assert await run(first, "shipping_notice", transport) == "sent"
    assert await run(first, "care", transport) == "sent"
    assert await run(second, "shipping_notice", transport) == "sent"  # service: no waiting
    assert await run(second, "care", transport) == "deferred: smart_sending"
    assert len(to(mailbox, ADA)) == 3


def stockholm_window_around(moment: datetime) -> tuple[str, time]:
    """Quiet hours from an hour before to two hours after the hour `moment` falls in, in
    Stockholm: whenever the test runs, it runs inside them (the window may cross midnight)."""
    local = moment.astimezone(ZoneInfo("Europe/Stockholm"))
    start = (local.hour - 1) % 24
    end = (local.hour + 2) % 24
    return f"{start:02d}:00-{end:02d}:00", time(end)


async def test_quiet_hours_defer_a_marketing_step_to_the_morning_not_a_service_email(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    before = datetime.now(UTC)
    window, end = stockholm_window_around(before)
    await change_shop(shop, quiet_hours=window, timezone="Europe/Stockholm")
    transport = SmtpTransport(smtp_url)
    placed_at = now() - timedelta(days=3)
    await apply(
        shop,
        checkout("cart-1", ADA),
        order("5001", BO, [SWEATER], placed_at=placed_at),
        shipped("5001", placed_at + timedelta(days=1)),
    )

    cart = await only("abandoned_cart", ADA)
    assert await run(cart, 0, transport) == "deferred: quiet_hours"

    cart = await reload(cart)
    assert cart.status == EnrollmentStatus.ACTIVE and cart.next_step == 0
    assert cart.waiting_for == "quiet_hours" and cart.due_at is not None
    assert cart.due_at.astimezone(ZoneInfo("Europe/Stockholm")).time() == end
    assert before + timedelta(hours=1) <= cart.due_at <= before + timedelta(hours=2)
    assert await sends(cart) == [] and to(mailbox, ADA) == []

    purchase = await only("post_purchase", BO)
    assert await run(purchase, "shipping_notice", transport) == "sent"  # at night too
    assert len(to(mailbox, BO)) == 1

    # Morning: the window is over and the step is due; the reminder was kept, not dropped.
    await change_shop(shop, quiet_hours=None)
    await change(cart, due_at=now() - timedelta(minutes=1))
    assert await run(cart, 0, transport) == "sent"
    assert len(to(mailbox, ADA)) == 1


async def test_quiet_hours_follow_the_customers_clock_where_their_orders_tell_it(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    window, _ = stockholm_window_around(datetime.now(UTC))  # night in the shop's Stockholm
    await change_shop(shop, quiet_hours=window, timezone="Europe/Stockholm")
    # Her last order went to Japan, eight hours ahead of Stockholm: her clock is outside the window.
    await apply(
        shop, order("5002", ADA, [BEANIE], placed_at=now() - timedelta(days=30), country="JP")
    )
    await apply(shop, checkout("cart-jp", ADA), checkout("cart-here", BO))

    assert await run(await only("abandoned_cart", ADA), 0, SmtpTransport(smtp_url)) == "sent"
    assert await run(await only("abandoned_cart", BO), 0, SmtpTransport(smtp_url)) == (
        "deferred: quiet_hours"  # nothing known of him: the shop's clock
    )


@pytest.mark.parametrize(
    ("country", "zone"),
    [("SE", "Europe/Stockholm"), ("is", "Atlantic/Reykjavik"), ("US", None), (None, None)],
)
def test_a_country_with_one_clock_gives_its_zone(country: str | None, zone: str | None) -> None:
    assert timing.country_zone(country, utc(2026, 12, 2, 12)) == zone


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "quiet_hours", "zone", "expected"),
    [
        # A window crossing midnight, in UTC: before and after midnight, outside, at its ends.
        (utc(2025, 1, 15, 23, 0), "21:00-08:00", "UTC", utc(2025, 1, 16, 8, 0)),
        (utc(2025, 1, 15, 2, 30), "21:00-08:00", "UTC", utc(2025, 1, 15, 8, 0)),
        (utc(2025, 1, 15, 21, 0), "21:00-08:00", "UTC", utc(2025, 1, 16, 8, 0)),
        (utc(2025, 1, 15, 12, 0), "21:00-08:00", "UTC", None),
        (utc(2025, 1, 15, 8, 0), "21:00-08:00", "UTC", None),
        (utc(2025, 1, 15, 20, 59), "21:00-08:00", "UTC", None),
        # A window within one day.
        (utc(2025, 1, 15, 13, 0), "12:00-14:00", "UTC", utc(2025, 1, 15, 14, 0)),
        (utc(2025, 1, 15, 14, 0), "12:00-14:00", "UTC", None),
        (utc(2025, 1, 15, 11, 59), "12:00-14:00", "UTC", None),
        # A window ending at midnight.
        (utc(2025, 1, 15, 23, 0), "22:00-00:00", "UTC", utc(2025, 1, 16, 0, 0)),
        # Stockholm in winter (UTC+1) and summer (UTC+2).
        (utc(2025, 1, 15, 20, 30), "21:00-08:00", "Europe/Stockholm", utc(2025, 1, 16, 7, 0)),
        (utc(2025, 1, 15, 19, 30), "21:00-08:00", "Europe/Stockholm", None),
        (utc(2025, 7, 15, 19, 30), "21:00-08:00", "Europe/Stockholm", utc(2025, 7, 16, 6, 0)),
        (utc(2025, 7, 15, 6, 30), "21:00-08:00", "Europe/Stockholm", None),
        # The night the clocks change: the morning is in the other offset.
        (utc(2025, 10, 25, 20, 0), "21:00-08:00", "Europe/Stockholm", utc(2025, 10, 26, 7, 0)),
        (utc(2025, 3, 29, 21, 0), "21:00-08:00", "Europe/Stockholm", utc(2025, 3, 30, 6, 0)),
        # A zone without daylight saving time, where the local day is ahead of UTC's.
        (utc(2025, 6, 1, 13, 0), "21:00-08:00", "Asia/Tokyo", utc(2025, 6, 1, 23, 0)),
        (utc(2025, 6, 1, 20, 0), "21:00-08:00", "Asia/Tokyo", utc(2025, 6, 1, 23, 0)),
        (utc(2025, 6, 1, 23, 0), "21:00-08:00", "Asia/Tokyo", None),
        (utc(2025, 6, 1, 16, 0), "21:00-08:00", "Asia/Kolkata", utc(2025, 6, 2, 2, 30)),
        # No quiet hours; an unknown zone counts as UTC.
        (utc(2025, 1, 15, 23, 0), None, "UTC", None),
        (utc(2025, 1, 15, 23, 0), "21:00-08:00", "Mars/Olympus", utc(2025, 1, 16, 8, 0)),
        (utc(2025, 1, 15, 23, 0), "21:00-08:00", None, utc(2025, 1, 16, 8, 0)),
    ],
)
def test_quiet_until(
    moment: datetime, quiet_hours: str | None, zone: str | None, expected: datetime | None
) -> None:
    woken = timing.quiet_until(moment, quiet_hours, zone)
    assert woken == expected
    if woken is not None:
        assert woken.utcoffset() == timedelta(0)
        assert woken > moment


@pytest.mark.parametrize(
    "nonsense", ["21:00", "21:00-", "-08:00", "21:00/08:00", "25:00-08:00", "08:00-08:00", "night"]
)
def test_quiet_hours_that_cannot_be_read_are_refused(nonsense: str) -> None:
    with pytest.raises(timing.TimingError, match="is not quiet hours like 21:00-08:00"):
        timing.quiet_until(utc(2025, 1, 15, 23, 0), nonsense, "UTC")


def test_after_cap() -> None:
    sent = utc(2025, 1, 15, 10, 0)
    cap = 16 * HOUR
    assert timing.after_cap(None, cap, sent) is None
    assert timing.after_cap(sent, None, sent) is None
    assert timing.after_cap(sent, 0, sent) is None
    assert timing.after_cap(sent, cap, sent + timedelta(hours=1)) == utc(2025, 1, 16, 2, 0)
    assert timing.after_cap(sent, cap, sent + timedelta(hours=16)) is None
    assert timing.after_cap(sent, cap, sent + timedelta(days=2)) is None


# --- abandoned carts: offers, rules, the alert -----------------------------------------------


async def cart_series(shop: Shop, token: str, email: str, transport: Transport) -> Enrollment:
    """A cart left four days ago: all three reminders are due and go, one after the other."""
    left_at = now() - timedelta(days=4)
    await apply(shop, checkout(token, email, updated_at=left_at))
    enrollment = (await enrollments("abandoned_cart", email))[-1]
    assert enrollment.status == EnrollmentStatus.ACTIVE
    for step in range(3):
        assert await run(enrollment, step, transport) == "sent"
    return enrollment


async def age_sends(email: str, days: int) -> None:
    """Let `days` pass for what was sent to `email`."""
    async with sessionmaker()() as session:
        for sent in (await session.exec(select(Send).where(Send.email == email))).all():
            assert sent.sent_at is not None
            sent.sent_at -= timedelta(days=days)
        await session.commit()


def offer_in(message: EmailMessage) -> bool:
    return "use code" in text(message)


async def test_the_offer_guard_withholds_a_second_offer_within_90_days(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "reenroll_after_days", 0)
    await change_shop(shop, frequency_cap=None)  # weeks of carts, back to back in one test
    transport = SmtpTransport(smtp_url)

    first = await cart_series(shop, "cart-1", ADA, transport)
    got = await send_for(first, 2)
    assert got.discount_code and got.offer_skipped is None
    assert offer_in(mailbox.messages[-1]) and got.discount_code in text(mailbox.messages[-1])
    assert "10% off your order" in text(mailbox.messages[-1])

    second = await cart_series(shop, "cart-2", ADA, transport)
    withheld = await send_for(second, 2)
    assert withheld.discount_code is None
    assert withheld.offer_skipped and withheld.offer_skipped.startswith("offer guard")
    assert "within 90 days" in withheld.offer_skipped
    assert not offer_in(mailbox.messages[-1])
    assert "This is the last reminder" in text(mailbox.messages[-1])

    fresh = await cart_series(shop, "cart-3", BO, transport)  # someone else: a code
    assert (await send_for(fresh, 2)).discount_code and offer_in(mailbox.messages[-1])
    assert len(standin.discounts(SHOP_DOMAIN)) == 2

    await age_sends(ADA, 91)  # her offer is older than the guard's 90 days now
    third = await cart_series(shop, "cart-4", ADA, transport)
    assert (await send_for(third, 2)).discount_code and offer_in(mailbox.messages[-1])
    assert len(standin.discounts(SHOP_DOMAIN)) == 3


async def test_the_offer_guard_withholds_offers_from_who_bought_twice_with_one(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "reenroll_after_days", 0)
    await change_shop(shop, frequency_cap=None)  # weeks of carts, back to back in one test
    transport = SmtpTransport(smtp_url)
    bought_at = now() - timedelta(days=150)

    first = await cart_series(shop, "cart-1", ADA, transport)
    first_code = (await send_for(first, 2)).discount_code
    assert first_code
    await age_sends(ADA, 200)
    await apply(
        shop,
        order("8001", ADA, [SWEATER], placed_at=bought_at, codes=(first_code.lower(),)),
        order("8002", ADA, [BEANIE], placed_at=bought_at, codes=("SUMMER10",)),  # not ours
    )

    second = await cart_series(shop, "cart-2", ADA, transport)  # one purchase with a code is fine
    second_code = (await send_for(second, 2)).discount_code
    assert second_code and offer_in(mailbox.messages[-1])
    await age_sends(ADA, 200)
    await apply(shop, order("8003", ADA, [SOCKS], placed_at=bought_at, codes=(second_code,)))

    third = await cart_series(shop, "cart-3", ADA, transport)
    withheld = await send_for(third, 2)
    assert withheld.discount_code is None
    assert withheld.offer_skipped == "offer guard: bought with a reminder's code 2 times"
    assert not offer_in(mailbox.messages[-1])
    assert len(standin.discounts(SHOP_DOMAIN)) == 2


async def test_a_cart_below_the_minimum_value_is_not_reminded_about(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "min_cart_value", "50")

    await apply(shop, checkout("small", ADA, subtotal="20.00"), checkout("big", BO))

    assert await enrollments("abandoned_cart", ADA) == []
    assert len(await enrollments("abandoned_cart", BO)) == 1

    later = now() - timedelta(hours=1)  # she added to the cart: it is worth a reminder now
    await apply(shop, checkout("small", ADA, subtotal="55.00", updated_at=later))
    assert len(await enrollments("abandoned_cart", ADA)) == 1


async def test_a_customer_is_not_reminded_again_within_a_week_of_the_last_series(
    standin: ShopifyStandin,
) -> None:
    shop = await open_shop(standin)
    await apply(shop, checkout("cart-1", ADA))
    first = await only("abandoned_cart", ADA)
    await apply(shop, CheckoutClosed("cart-1"))
    assert (await reload(first)).exit_reason == "checkout_closed"

    await apply(shop, checkout("cart-2", ADA))
    assert [e.id for e in await enrollments("abandoned_cart", ADA)] == [first.id]

    # A series that started ten days ago but ended two days ago is still too recent.
    await change(first, created_at=now() - timedelta(days=10), updated_at=now() - timedelta(days=2))
    await apply(shop, checkout("cart-3", ADA))
    assert [e.id for e in await enrollments("abandoned_cart", ADA)] == [first.id]

    await change(first, updated_at=now() - timedelta(days=8))
    await apply(shop, checkout("cart-4", ADA))
    latest = (await enrollments("abandoned_cart", ADA))[-1]
    assert latest.id != first.id and latest.status == EnrollmentStatus.ACTIVE
    assert latest.subject.startswith("checkout:")


async def test_a_newer_cart_takes_over_from_the_older_one(standin: ShopifyStandin) -> None:
    shop = await open_shop(standin)
    await apply(shop, checkout("older", ADA, started_at=now() - timedelta(hours=3)))
    older = await only("abandoned_cart", ADA)

    await apply(
        shop,
        checkout("newer", ADA, started_at=now() - timedelta(minutes=30), updated_at=now()),
    )

    older, newer = await enrollments("abandoned_cart", ADA)
    assert (older.status, older.exit_reason) == (EnrollmentStatus.EXITED, "newer_checkout")
    assert newer.status == EnrollmentStatus.ACTIVE and newer.checkout_id != older.checkout_id

    # A late webhook for a cart older than the running one starts nothing.
    oldest = now() - timedelta(hours=5)
    await apply(shop, checkout("oldest", ADA, started_at=oldest, updated_at=oldest))
    assert [e.status for e in await enrollments("abandoned_cart", ADA)] == [
        EnrollmentStatus.EXITED,
        EnrollmentStatus.ACTIVE,
    ]


async def test_the_reminder_says_until_when_the_cart_is_kept(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    left_at = now() - timedelta(hours=2)
    await apply(shop, checkout("cart-1", ADA, updated_at=left_at))

    assert await run(await only("abandoned_cart", ADA), 0, SmtpTransport(smtp_url)) == "sent"

    kept = left_at + timedelta(days=30)
    (message,) = mailbox.messages
    assert f"We'll keep your cart until {kept:%B} {kept.day}, {kept.year}." in text(message)
    html = message.get_body(preferencelist=("html",))
    assert html is not None and f"{kept:%B} {kept.day}, {kept.year}" in str(html.get_content())


async def test_a_step_another_worker_claimed_is_not_sent_again(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await apply(shop, checkout("cart-1", ADA))
    cart = await only("abandoned_cart", ADA)
    assert shop.id is not None and cart.id is not None
    async with sessionmaker()() as session:  # another worker holds the claim, mid-send
        session.add(Send(shop_id=shop.id, enrollment_id=cart.id, step=0, email=ADA))
        await session.commit()

    assert await run(cart, 0, SmtpTransport(smtp_url)) == "claimed before"
    assert mailbox.messages == []


class FailingFor:
    """A transport that cannot deliver to one address the first time."""

    def __init__(self, address: str, then: Transport) -> None:
        self.address, self.then, self.failed = address, then, False

    async def deliver(self, message: Any, *, shop_domain: str) -> None:
        if message["To"] == self.address and not self.failed:
            self.failed = True
            raise ConnectionResetError("connection dropped")
        await self.then.deliver(message, shop_domain=shop_domain)


async def test_codes_from_other_flows_do_not_make_a_cart_gamer(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    assert shop.id is not None
    long_ago = now() - timedelta(days=200)
    async with sessionmaker()() as session:  # two win-back offers, long ago, both used
        for code in ("WINBACK-1", "WINBACK-2"):
            enrollment = Enrollment(
                shop_id=shop.id, flow="winback", subject=f"lapse:{ADA}:{code}", email=ADA,
                status=EnrollmentStatus.DONE,
            )  # fmt: skip
            session.add(enrollment)
            await session.flush()
            session.add(
                Send(
                    shop_id=shop.id, enrollment_id=enrollment.id or 0, step=0, email=ADA,
                    status=SendStatus.SENT, discount_code=code, sent_at=long_ago,
                )
            )  # fmt: skip
        await session.commit()
    await apply(
        shop,
        order("8101", ADA, [SWEATER], placed_at=long_ago, codes=("winback-1",)),
        order("8102", ADA, [BEANIE], placed_at=long_ago, codes=("WINBACK-2",)),
    )

    series = await cart_series(shop, "cart-1", ADA, SmtpTransport(smtp_url))

    reminder = await send_for(series, 2)
    assert reminder.discount_code and reminder.offer_skipped is None
    assert offer_in(mailbox.messages[-1])


async def test_a_big_cart_alerts_customer_service_once(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "alert_email", "care@shop.example")
    await edit_flow(shop, "set_setting", "abandoned_cart", "alert_min_total", "100")
    transport = SmtpTransport(smtp_url)
    await apply(
        shop,
        checkout("big", ADA, subtotal="150.00", phone="+46 70-123 45 67"),
        checkout("small", BO, subtotal="50.00"),
        checkout("retried", "cy@example.com", subtotal="140.00", total="150.00"),
    )

    big = await only("abandoned_cart", ADA)
    assert await run(big, 0, transport) == "sent"
    assert await run(big, 0, transport) == "not due"

    (alert,) = to(mailbox, "care@shop.example")
    assert "$150.00" in alert["Subject"] and "Ada Lovelace" in alert["Subject"]
    lines = text(alert).splitlines()
    assert "Customer: Ada Lovelace" in lines and f"Email: {ADA}" in lines
    assert "Phone: +46 70-123 45 67" in lines
    links = hrefs(alert)
    assert f"mailto:{ADA}" in links and "tel:+46701234567" in links
    assert alert["List-Unsubscribe"] is None
    (reminder,) = to(mailbox, ADA)
    assert "You left 1 item in your cart" in text(reminder)
    assert len(mailbox.messages) == 2

    assert await run(await only("abandoned_cart", BO), 0, transport) == "sent"
    assert len(to(mailbox, "care@shop.example")) == 1 and len(to(mailbox, BO)) == 1

    # The reminder fails after the alert went: its retry sends the reminder, not the alert again.
    retried = await only("abandoned_cart", "cy@example.com")
    flaky = FailingFor("cy@example.com", transport)
    with pytest.raises(ConnectionResetError):
        await run(retried, 0, flaky)
    assert await run(retried, 0, flaky) == "sent"
    assert len(to(mailbox, "care@shop.example")) == 2 and len(to(mailbox, "cy@example.com")) == 1
    # No phone on that checkout: the alert has no phone line and no tel: link.
    phoneless = to(mailbox, "care@shop.example")[-1]
    assert "Phone" not in text(phoneless)
    assert not any(link.startswith("tel:") for link in hrefs(phoneless))
    claims = {s.step: s for s in await sends(retried)}
    assert claims[-1].email == "care@shop.example" and claims[-1].status == SendStatus.SENT
    assert claims[-1].marketing is False


@pytest.mark.parametrize("exit_on_order", [True, False])
async def test_an_order_from_another_cart_ends_the_series_when_exit_on_order_says_so(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str, exit_on_order: bool
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "exit_on_order", exit_on_order)
    # The order (bought some other way) is delivered before the cart it followed.
    await apply(shop, order("8001", ADA, [BEANIE], placed_at=now() - timedelta(hours=1)))
    await apply(shop, checkout("cart-1", ADA, updated_at=now() - timedelta(hours=2)))

    carts = await enrollments("abandoned_cart", ADA)
    if exit_on_order:
        assert carts == []
        return
    # Off: only an order from this very cart would end it. The reminder goes, and then its own
    # order ends the series after all.
    assert await run(carts[0], "reminder", SmtpTransport(smtp_url)) == "sent"
    assert len(to(mailbox, ADA)) == 1
    bought = order("8002", ADA, [SWEATER], placed_at=now())
    await apply(shop, replace(bought, checkout_token="cart-1"))
    ended = await reload(carts[0])
    assert (ended.status, ended.exit_reason) == (EnrollmentStatus.EXITED, "purchased")
    assert ended.recovered_order_id is not None


async def test_a_shopper_back_at_the_cart_moves_the_next_reminder_even_when_step_one_is_off(
    standin: ShopifyStandin,
) -> None:
    shop = await open_shop(standin)
    await switch_off(shop, "abandoned_cart", "reminder")
    left_at = now() - timedelta(hours=3)
    await apply(shop, checkout("cart-1", ADA, updated_at=left_at))
    cart = await only("abandoned_cart", ADA)
    assert (next_key(cart), cart.due_at) == ("still_there", left_at + timedelta(hours=24))

    back_at = now() - timedelta(minutes=5)
    await apply(shop, checkout("cart-1", ADA, updated_at=back_at))
    assert (await reload(cart)).due_at == back_at + timedelta(hours=24)
    # A late, older delivery of the cart does not move it back.
    await apply(shop, checkout("cart-1", ADA, updated_at=left_at))
    assert (await reload(cart)).due_at == back_at + timedelta(hours=24)


async def test_the_alert_goes_with_the_first_reminder_when_step_one_is_off(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "alert_email", "care@shop.example")
    await edit_flow(shop, "set_setting", "abandoned_cart", "alert_min_total", "100")
    await edit_flow(shop, "set_step_enabled", "abandoned_cart", 1, False)
    await apply(shop, checkout("big", ADA, subtotal="150.00", updated_at=now() - timedelta(days=4)))
    transport = SmtpTransport(smtp_url)

    big = await only("abandoned_cart", ADA)
    assert big.next_step == 1
    assert await run(big, 1, transport) == "sent"
    assert len(to(mailbox, "care@shop.example")) == 1 and len(to(mailbox, ADA)) == 1
    assert await run(big, 2, transport) == "sent"
    assert len(to(mailbox, "care@shop.example")) == 1 and len(to(mailbox, ADA)) == 2


async def test_the_alert_goes_when_the_first_reminder_is_due_even_if_the_night_holds_it(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(shop, "set_setting", "abandoned_cart", "alert_email", "care@shop.example")
    await edit_flow(shop, "set_setting", "abandoned_cart", "alert_min_total", "100")
    window, _ = stockholm_window_around(datetime.now(UTC))
    await change_shop(shop, quiet_hours=window, timezone="Europe/Stockholm")
    await apply(shop, checkout("big", ADA, subtotal="150.00"))
    transport = SmtpTransport(smtp_url)

    big = await only("abandoned_cart", ADA)
    assert await run(big, 0, transport) == "deferred: quiet_hours"
    assert len(to(mailbox, "care@shop.example")) == 1 and to(mailbox, ADA) == []

    await change_shop(shop, quiet_hours=None)
    await change(big, due_at=now() - timedelta(minutes=1))
    assert await run(big, 0, transport) == "sent"
    assert len(to(mailbox, "care@shop.example")) == 1 and len(to(mailbox, ADA)) == 1


# --- flow versions and edits -----------------------------------------------------------------


async def test_a_running_enrollment_keeps_the_steps_it_started_with(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    left_at = now() - timedelta(hours=2)
    await apply(shop, checkout("cart-1", ADA, updated_at=left_at))
    running = await only("abandoned_cart", ADA)
    version = running.flow_version

    await edit_flow(shop, "set_step_delay", "abandoned_cart", 2, 2 * HOUR)

    flow = await stored_flow(shop, "abandoned_cart")
    assert flow.version == version + 1 and flow.steps[1]["delay"] == 2 * HOUR
    assert await run(running, 0, SmtpTransport(smtp_url)) == "sent"
    running = await reload(running)
    assert running.flow_version == version and running.steps[1]["delay"] == 24 * HOUR
    assert running.due_at == left_at + timedelta(hours=24)

    await apply(shop, checkout("cart-2", BO, updated_at=left_at))
    started_after = await only("abandoned_cart", BO)
    assert started_after.flow_version == version + 1
    assert started_after.steps[1]["delay"] == 2 * HOUR
    assert await run(started_after, 0, SmtpTransport(smtp_url)) == "sent"
    assert (await reload(started_after)).due_at == left_at + timedelta(hours=2)


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        ("set_step_delay", ("abandoned_cart", 2, -60), "step 2: delay must be zero or more"),
        ("set_step_delay", ("abandoned_cart", 4, 60), "has steps 1 to 3, not 4"),
        (
            "set_steps",
            (
                "abandoned_cart",
                [
                    {"key": f"s{n}", "template": "abandoned_cart", "delay": n * HOUR}
                    for n in range(11)
                ],
            ),
            "has 11 steps; at most 10",
        ),  # fmt: skip
        (
            "set_step_offer",
            ("abandoned_cart", 3, {"kind": "percentage", "value": "95"}),
            "above 90% gives the store away",
        ),
        ("set_setting", ("abandoned_cart", "discount_everything", True), "no setting"),
        ("set_setting", ("abandoned_cart", "min_cart_value", "-5"), "must not be negative"),
        ("set_setting", ("abandoned_cart", "alert_email", "care"), "must be an email address"),
        ("set_setting", ("post_purchase", "transit_days", -1), "whole number of zero or more"),
        ("set_step_enabled", ("no_such_flow", 1, False), "unknown flow"),
        # A reminder due after the cart is no longer kept, either way round.
        ("set_step_delay", ("abandoned_cart", 3, 31 * DAY), "step 3 is due after the cart"),
        ("set_setting", ("abandoned_cart", "cart_kept_days", 2), "step 3 is due after the cart"),
    ],
)
async def test_a_refused_edit_says_why_and_changes_nothing(
    standin: ShopifyStandin, edit: str, args: tuple[Any, ...], message: str
) -> None:
    shop = await open_shop(standin)
    before = {name: await stored_flow(shop, name) for name in ("abandoned_cart", "post_purchase")}

    async with sessionmaker()() as session:
        row = await stored_row(session, Shop, shop.id)
        with pytest.raises(FlowSettingError, match=re.escape(message)):
            await getattr(flows_service, edit)(session, row, *args)
        await session.commit()  # whatever the failed edit left in the session

    for name, flow in before.items():
        after = await stored_flow(shop, name)
        assert (after.version, after.steps, after.settings) == (
            flow.version,
            flow.steps,
            flow.settings,
        )


def test_defaults_are_valid_and_the_offer_is_on_the_last_cart_reminder() -> None:
    for name, steps in DEFAULT_STEPS.items():
        validate_steps(name, steps)
        validate_settings(name, DEFAULT_SETTINGS[name])
    cart = DEFAULT_STEPS["abandoned_cart"]
    assert [s["delay"] for s in cart] == [HOUR, 24 * HOUR, 3 * DAY]
    assert [bool(s.get("offer")) for s in cart] == [False, False, True]


@pytest.mark.parametrize(
    ("flow", "key", "value", "message"),
    [
        ("winback", "top_share", None, "top_share needs a value"),
        ("abandoned_cart", "offer_guard_days", None, "offer_guard_days needs a value"),
        ("winback", "top_share", "abc", "top_share cannot be 'abc'"),
        ("winback", "lapse_factor", "x", "lapse_factor cannot be 'x'"),
        ("winback", "top_share", 0.5, "at most 0.2"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_with_its_name(
    flow: str, key: str, value: Any, message: str
) -> None:
    with pytest.raises(FlowDefinitionError, match=re.escape(message)):
        validate_settings(flow, {key: value})


def test_alert_and_referral_settings_may_be_cleared() -> None:
    validate_settings("abandoned_cart", {"alert_email": None, "alert_min_total": None})
    validate_settings("post_purchase", {"referral_url": None, "referral_text": None})
