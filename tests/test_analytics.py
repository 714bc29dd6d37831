"""Attribution, the overview and A/B tests against the real database, with hand-computed
figures. Time is the test's: every row carries its own timestamps and `now` is passed in."""

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from app.analytics import abtests, attribution, repository
from app.analytics.abtests import HOLDOUT, AbTestError
from app.analytics.models import AbTest, Assignment, Attribution, FlowFigures
from app.analytics.tasks import choose_winners
from app.commerce.models import Checkout, Order, Refund
from app.db import sessionmaker
from app.privacy import repository as privacy
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows import service as flows_service
from flows.definitions import ABANDONED_CART, POST_PURCHASE, WINBACK
from flows.models import Click, Enrollment, Send, SendStatus

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday, noon UTC
_ids = itertools.count(1)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


async def make_shop(domain: str = "figures.myshopify.com", currency: str | None = "EUR") -> Shop:
    async with sessionmaker()() as session:
        shop = await connect_shopify(session, domain=domain, access_token="shpat_x", api_secret="s")
        shop.currency = currency
        await session.commit()
        await session.refresh(shop)
        return shop


async def sent(
    shop: Shop,
    flow: str,
    email: str | None,
    at: datetime,
    *,
    step: int = 0,
    checkout: Checkout | None = None,
    status: SendStatus = SendStatus.SENT,
    variant: str | None = None,
) -> Send:
    """An email of `flow` that went to `email` at `at`: a step of the cart's enrollment, or of
    one made for it."""
    assert shop.id is not None
    async with sessionmaker()() as session:
        query = select(Enrollment).where(
            Enrollment.flow == flow, Enrollment.checkout_id == (checkout.id if checkout else -1)
        )
        enrollment = (await session.exec(query)).first() or Enrollment(
            shop_id=shop.id,
            flow=flow,
            subject=f"test:{next(_ids)}",
            checkout_id=checkout.id if checkout else None,
            email=email or "",
        )
        session.add(enrollment)
        await session.flush()
        assert enrollment.id is not None
        send = Send(
            shop_id=shop.id,
            enrollment_id=enrollment.id,
            step=step,
            email=email or "",
            status=status,
            variant=variant,
            claimed_at=at,
            sent_at=at if status == SendStatus.SENT else None,
        )
        session.add(send)
        await session.commit()
        await session.refresh(send)
        return send


async def clicked(send: Send, at: datetime, url: str | None = None) -> None:
    assert send.id is not None
    async with sessionmaker()() as session:
        session.add(Click(shop_id=send.shop_id, send_id=send.id, url=url, clicked_at=at))
        await session.commit()


async def cart(shop: Shop, token: str, *, cart_token: str | None = None) -> Checkout:
    assert shop.id is not None
    async with sessionmaker()() as session:
        checkout = Checkout(
            shop_id=shop.id,
            token=token,
            cart_token=cart_token,
            email="cart@example.com",
            currency="EUR",
            subtotal_price="80.00",
            total_price="80.00",
            started_at=ago(days=1),
            platform_updated_at=ago(days=1),
        )
        session.add(checkout)
        await session.commit()
        await session.refresh(checkout)
        return checkout


async def ordered(
    shop: Shop,
    email: str | None,
    at: datetime,
    total: str = "100.00",
    *,
    currency: str = "EUR",
    checkout_token: str | None = None,
    cart_token: str | None = None,
    attribute: bool = True,
) -> Order:
    """An order placed at `at`, attributed as the engine does when it arrives."""
    assert shop.id is not None
    platform_id = str(next(_ids) + 10_000)
    async with sessionmaker()() as session:
        order = Order(
            shop_id=shop.id,
            platform_id=platform_id,
            name=f"#{platform_id}",
            email=email,
            currency=currency,
            total_price=total,
            placed_at=at,
            checkout_token=checkout_token,
            cart_token=cart_token,
        )
        session.add(order)
        await session.flush()
        if attribute:
            await attribution.attribute(session, order)
        await session.commit()
        await session.refresh(order)
        return order


async def refunded(order: Order, amount: str) -> None:
    async with sessionmaker()() as session:
        session.add(
            Refund(
                shop_id=order.shop_id,
                order_platform_id=order.platform_id,
                platform_id=str(next(_ids)),
                amount=amount,
                refunded_at=order.placed_at + timedelta(days=1),
            )
        )
        await session.commit()


async def credited(order: Order) -> Attribution | None:
    assert order.id is not None
    async with sessionmaker()() as session:
        return await repository.get_attribution(session, order.shop_id, order.id)


async def overview(shop: Shop, days: int = 7, now: datetime = NOW) -> Any:
    async with sessionmaker()() as session:
        return await repository.overview(session, shop, days=days, now=now)


def by_flow(figures: Any) -> dict[str, Any]:
    return {f.flow: f for f in figures.flows}


@pytest.fixture
async def shop() -> Shop:
    return await make_shop()


# --- attribution -----------------------------------------------------------------------------


async def test_a_click_counts_for_the_attribution_window_and_not_an_hour_past_it(
    shop: Shop,
) -> None:
    # Given two customers who each clicked an email, 4 days 23 h and 5 days 1 h before ordering
    inside = await sent(shop, WINBACK, "in@example.com", ago(days=6))
    await clicked(inside, ago(days=4, hours=23))
    outside = await sent(shop, WINBACK, "out@example.com", ago(days=6))
    await clicked(outside, ago(days=5, hours=1))

    # When both order now
    counted = await ordered(shop, "in@example.com", NOW)
    missed = await ordered(shop, "out@example.com", NOW)

    # Then only the click within the shop's 5 days earns the order
    found = await credited(counted)
    assert found is not None
    assert (found.send_id, found.flow, found.step, found.via) == (inside.id, WINBACK, 0, "click")
    assert found.attributed_at == NOW
    assert await credited(missed) is None


async def test_the_window_is_the_shops_own(shop: Shop) -> None:
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        stored.attribution_days = 7
        await session.commit()
    email = await sent(shop, WINBACK, "ann@example.com", ago(days=8))
    await clicked(email, ago(days=6, hours=23))

    assert await credited(await ordered(shop, "ann@example.com", NOW)) is not None


async def test_the_last_click_wins(shop: Shop) -> None:
    # Given two emails, the later one clicked first and the earlier one clicked last
    winback = await sent(shop, WINBACK, "ann@example.com", ago(days=3))
    review = await sent(shop, POST_PURCHASE, "ann@example.com", ago(days=2), step=4)
    await clicked(review, ago(days=2))
    await clicked(winback, ago(days=1))
    # and a click after the order, which cannot have brought it about
    await clicked(review, ago(hours=-1))

    order = await ordered(shop, "ann@example.com", NOW)

    found = await credited(order)
    assert found is not None
    assert (found.send_id, found.flow) == (winback.id, WINBACK)


async def test_only_sent_customer_emails_of_the_customer_count(shop: Shop) -> None:
    # A claim that never went out, the customer-service alert, and another customer's email
    sending = await sent(shop, WINBACK, "ann@example.com", ago(days=1), status=SendStatus.SENDING)
    await clicked(sending, ago(hours=20))
    alert = await sent(shop, ABANDONED_CART, "ann@example.com", ago(days=1), step=-1)
    await clicked(alert, ago(hours=20))
    other = await sent(shop, WINBACK, "bob@example.com", ago(days=1))
    await clicked(other, ago(hours=20))

    assert await credited(await ordered(shop, "ann@example.com", NOW)) is None


async def test_an_order_from_the_carts_own_checkout_counts_without_a_click(shop: Shop) -> None:
    # Given a cart reminded twice, never clicked
    checkout = await cart(shop, "tok-1", cart_token="cart-1")
    await sent(shop, ABANDONED_CART, "cart@example.com", ago(hours=20), checkout=checkout)
    last = await sent(
        shop, ABANDONED_CART, "cart@example.com", ago(hours=2), step=1, checkout=checkout
    )
    # and a later click on a win-back email to the same customer
    winback = await sent(shop, WINBACK, "cart@example.com", ago(hours=3))
    await clicked(winback, ago(hours=1))

    # When the order comes from that checkout, even under another address
    order = await ordered(shop, "someone-else@example.com", NOW, checkout_token="tok-1")

    # Then the cart's last email settles it
    found = await credited(order)
    assert found is not None
    assert (found.send_id, found.flow, found.step, found.via) == (
        last.id,
        ABANDONED_CART,
        1,
        "cart",
    )


async def test_the_carts_clicked_email_and_the_cart_token_count_too(shop: Shop) -> None:
    checkout = await cart(shop, "tok-2", cart_token="cart-2")
    first = await sent(shop, ABANDONED_CART, "cart@example.com", ago(hours=20), checkout=checkout)
    await sent(shop, ABANDONED_CART, "cart@example.com", ago(hours=2), step=1, checkout=checkout)
    await clicked(first, ago(hours=10))  # the restore link of the first reminder

    # An order with only the cart token, and no email at all
    order = await ordered(shop, None, NOW, cart_token="cart-2")

    found = await credited(order)
    assert found is not None
    assert (found.send_id, found.via) == (first.id, "cart")


async def test_attribution_is_decided_once(shop: Shop) -> None:
    first = await sent(shop, WINBACK, "ann@example.com", ago(days=2))
    await clicked(first, ago(days=1))
    order = await ordered(shop, "ann@example.com", NOW)
    before = await credited(order)

    # A later click on another email, then the same order delivered again
    other = await sent(shop, POST_PURCHASE, "ann@example.com", ago(hours=5))
    await clicked(other, ago(hours=1))
    async with sessionmaker()() as session:
        again = await session.get(Order, order.id)
        assert again is not None
        await attribution.attribute(session, again)
        await attribution.attribute(session, again)
        await session.commit()
        rows = (await session.exec(select(Attribution))).all()

    assert before is not None and len(rows) == 1
    assert rows[0].model_dump() == before.model_dump()
    assert rows[0].send_id == first.id


async def test_another_shops_emails_and_orders_never_count(shop: Shop) -> None:
    other = await make_shop("other.myshopify.com")
    # The customer clicked an email of the other shop, then ordered here
    theirs = await sent(other, WINBACK, "ann@example.com", ago(days=1))
    await clicked(theirs, ago(hours=5))
    here = await ordered(shop, "ann@example.com", NOW)
    # and clicked one of ours, then ordered there
    ours = await sent(shop, WINBACK, "bob@example.com", ago(days=1))
    await clicked(ours, ago(hours=5))
    there = await ordered(other, "bob@example.com", NOW, "500.00")
    # Their cart's token on our order
    their_cart = await cart(other, "tok-3")
    await sent(other, ABANDONED_CART, "cart@example.com", ago(hours=2), checkout=their_cart)
    via_token = await ordered(shop, None, NOW, checkout_token="tok-3")

    assert await credited(here) is None
    assert await credited(there) is None
    assert await credited(via_token) is None
    figures = by_flow(await overview(shop))
    assert (figures[WINBACK].emails, figures[WINBACK].clicks, figures[WINBACK].orders) == (1, 1, 0)
    assert (await overview(other)).revenue == 0


# --- the overview ----------------------------------------------------------------------------


@pytest.mark.parametrize("days", [7, 30, 90])
async def test_the_overview_has_every_flow_and_every_day_with_zeros(days: int) -> None:
    shop = await make_shop(currency=None)

    figures = await overview(shop, days)

    assert figures.days == days
    assert figures.currency == "USD"
    assert [f.flow for f in figures.flows] == [ABANDONED_CART, POST_PURCHASE, WINBACK]
    assert all(
        (f.emails, f.clicks, f.orders, f.revenue, f.conversion) == (0, 0, 0, 0, 0.0)
        for f in figures.flows
    )
    assert len(figures.series) == days
    assert figures.series[0].day == date(2026, 3, 10) - timedelta(days=days - 1)
    assert figures.series[-1].day == date(2026, 3, 10)
    zeros = dict.fromkeys([ABANDONED_CART, POST_PURCHASE, WINBACK], Decimal(0))
    assert all(d.revenue == zeros for d in figures.series)
    assert figures.revenue == 0


async def test_the_overview_counts_emails_clicks_orders_revenue_and_conversion(
    shop: Shop,
) -> None:
    # Abandoned cart: 4 emails in the last 7 days (one clicked twice), one 8 days ago,
    # a skipped step and an alert that are not emails to the customer
    checkout = await cart(shop, "tok-9")
    emails = [
        await sent(shop, ABANDONED_CART, f"c{n}@example.com", ago(days=n, hours=1))
        for n in range(4)
    ]
    await clicked(emails[1], ago(days=1))
    await clicked(emails[1], ago(hours=20))
    await sent(shop, ABANDONED_CART, "old@example.com", ago(days=8))
    await sent(
        shop, ABANDONED_CART, "c0@example.com", ago(hours=1), step=1, status=SendStatus.SKIPPED
    )
    await sent(shop, ABANDONED_CART, "cs@example.com", ago(days=1), step=-1)
    await sent(shop, ABANDONED_CART, "cart@example.com", ago(days=2), checkout=checkout)
    # Win-back: one email, clicked
    winback = await sent(shop, WINBACK, "w@example.com", ago(days=3))
    await clicked(winback, ago(days=3))

    # Orders: 120.00 from the clicked cart email yesterday, 80.00 from the cart (no click)
    # today, 45.50 from win-back 2 days ago less a refund of 5.50, and a win-back order in
    # dollars: an order, but no revenue in the shop's euros
    await ordered(shop, "c1@example.com", ago(hours=18), "120.00")
    await ordered(shop, None, ago(hours=1), "80.00", checkout_token="tok-9")
    late = await ordered(shop, "w@example.com", ago(days=2), "45.50")
    await refunded(late, "5.50")
    await ordered(shop, "w@example.com", ago(days=2, hours=1), "99.00", currency="USD")

    figures = await overview(shop, 7)

    flows = by_flow(figures)
    assert figures.currency == "EUR"
    assert flows[ABANDONED_CART] == FlowFigures(
        flow=ABANDONED_CART,
        emails=5,
        clicks=2,
        orders=2,
        revenue=Decimal("200.00"),
        conversion=2 / 5,
        recovered=Decimal("80.00"),  # the reminded cart itself; the 120.00 came by a click
    )
    assert (flows[WINBACK].emails, flows[WINBACK].clicks, flows[WINBACK].orders) == (1, 1, 2)
    assert flows[WINBACK].revenue == Decimal("40.00")
    assert flows[WINBACK].conversion == 2.0
    assert flows[POST_PURCHASE].emails == 0
    assert figures.revenue == Decimal("240.00")
    days = {d.day: d.revenue for d in figures.series}
    assert days[date(2026, 3, 10)] == {
        ABANDONED_CART: Decimal("80"),
        POST_PURCHASE: Decimal(0),
        WINBACK: Decimal(0),
    }
    assert days[date(2026, 3, 9)][ABANDONED_CART] == Decimal("120")
    assert days[date(2026, 3, 8)][WINBACK] == Decimal("40")
    assert sum(sum(d.revenue.values()) for d in figures.series) == figures.revenue

    # The 30 days also hold the email of 8 days ago
    assert by_flow(await overview(shop, 30))[ABANDONED_CART].emails == 6
    # and a day earlier, today's order and email are not there yet
    earlier = by_flow(await overview(shop, 7, ago(days=1)))
    assert earlier[ABANDONED_CART].orders == 0  # the 120.00 came 18 h ago: after that `now`


async def test_a_refund_subtracts_and_a_cancellation_takes_the_order_away(shop: Shop) -> None:
    email = await sent(shop, POST_PURCHASE, "ann@example.com", ago(days=2))
    await clicked(email, ago(days=1))
    order = await ordered(shop, "ann@example.com", ago(hours=3), "100.00")

    assert by_flow(await overview(shop))[POST_PURCHASE].revenue == Decimal("100")
    await refunded(order, "30.50")
    assert by_flow(await overview(shop))[POST_PURCHASE].revenue == Decimal("69.50")
    await refunded(order, "80.00")  # refunds beyond the total leave nothing, not less
    figures = by_flow(await overview(shop))[POST_PURCHASE]
    assert (figures.orders, figures.revenue) == (1, 0)

    async with sessionmaker()() as session:
        stored = await session.get(Order, order.id)
        assert stored is not None
        stored.cancelled_at = NOW
        await session.commit()
    figures = by_flow(await overview(shop))[POST_PURCHASE]
    assert (figures.orders, figures.revenue, figures.conversion) == (0, 0, 0.0)


async def test_deleting_a_shop_takes_its_figures_and_tests_along(shop: Shop) -> None:
    email = await sent(shop, WINBACK, "ann@example.com", ago(days=1))
    await clicked(email, ago(hours=2))
    await ordered(shop, "ann@example.com", NOW)
    async with sessionmaker()() as session:
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0.1, 10)
        await abtests.variant_for(session, test.shop_id, WINBACK, "our_values", "ann@example.com")
        await session.commit()

    async with sessionmaker()() as session:
        assert shop.id is not None
        await privacy.delete_shop(session, shop.id)
        await session.commit()
        for model in (Attribution, AbTest, Assignment):
            assert (await session.exec(select(model))).all() == []


# --- A/B tests -------------------------------------------------------------------------------

VARIANTS = [
    {"key": "plain", "weight": 3},
    {"key": "story", "weight": 1, "template": "winback_offer"},
]


def test_assignment_is_stable_per_customer_and_follows_weights_and_holdout() -> None:
    test = AbTest(id=41, shop_id=1, flow=WINBACK, step_key="x", variants=VARIANTS, holdout=0.1)
    emails = [f"customer{n}@example.com" for n in range(10_000)]

    first = [abtests.assign(test, email) for email in emails]

    assert first == [abtests.assign(test, email) for email in emails]
    assert abtests.assign(test, " Customer7@Example.com ") == first[7]
    shares = {key: first.count(key) / len(emails) for key in ("plain", "story", HOLDOUT)}
    # Holdout 10 %; the other 90 % split 3:1, so 67.5 % and 22.5 %
    assert shares[HOLDOUT] == pytest.approx(0.10, abs=0.015)
    assert shares["plain"] == pytest.approx(0.675, abs=0.02)
    assert shares["story"] == pytest.approx(0.225, abs=0.02)
    # Another test splits the same customers independently
    other = AbTest(id=42, shop_id=1, flow=WINBACK, step_key="x", variants=VARIANTS, holdout=0.1)
    moved = sum(
        abtests.assign(other, email) != mine for email, mine in zip(emails, first, strict=True)
    )
    assert moved > 3000


def test_probability_to_be_best() -> None:
    clear = abtests.probability_best([(50, 500), (20, 500)])
    assert clear[0] > 0.99
    assert sum(clear) == pytest.approx(1)

    even = abtests.probability_best([(30, 500), (30, 500)])
    assert even[0] == pytest.approx(0.5, abs=0.02)

    # With a holdout: the email beats no email, and the fixed seed repeats itself
    three = abtests.probability_best([(40, 400), (25, 400), (5, 100)])
    assert three == abtests.probability_best([(40, 400), (25, 400), (5, 100)])
    assert three[0] > 0.9
    assert abtests.probability_best([]) == []


async def test_a_customer_is_assigned_once_and_only_while_a_test_runs(shop: Shop) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        assert await abtests.variant_for(session, shop.id, WINBACK, "our_values", "a@x.com") is None
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0.2, 100)
        await session.commit()

    async with sessionmaker()() as session:
        found = await abtests.variant_for(session, shop.id, WINBACK, "our_values", "A@x.com")
        again = await abtests.variant_for(session, shop.id, WINBACK, "our_values", "a@x.com")
        elsewhere = await abtests.variant_for(session, shop.id, WINBACK, "goodbye", "a@x.com")
        await session.commit()
        rows = (await session.exec(select(Assignment))).all()

    assert found is not None and again is not None and elsewhere is None
    assert found[0].id == test.id
    assert found[1] == again[1] == abtests.assign(test, "a@x.com")
    assert [(row.email, row.variant) for row in rows] == [("a@x.com", found[1])]

    async with sessionmaker()() as session:
        stored = await abtests.get_test(session, shop, test.id or 0)
        assert stored is not None
        await abtests.stop_test(session, stored, now=NOW)
        await session.commit()
        assert await abtests.variant_for(session, shop.id, WINBACK, "our_values", "a@x.com") is None


def test_a_variant_is_the_step_with_the_variants_fields() -> None:
    test = AbTest(id=1, shop_id=1, flow=WINBACK, step_key="we_miss_you", variants=VARIANTS)
    step = {"key": "we_miss_you", "template": "winback_offer", "delay": 0, "marketing": True}

    assert abtests.variant_step(step, test, "story") == {**step, "template": "winback_offer"}
    assert abtests.key_of_step({"template": "x"}, 2) == "step_3"


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"variants": VARIANTS[:1]}, "2 to 4 variants"),
        ({"variants": VARIANTS + [{"key": k, "weight": 1} for k in "cde"]}, "2 to 4 variants"),
        ({"variants": [VARIANTS[0], {"key": "plain", "weight": 1}]}, "same key"),
        ({"variants": [VARIANTS[0], {"key": "b", "weight": 0}]}, "weight above zero"),
        ({"variants": [VARIANTS[0], {"key": "b", "weight": True}]}, "weight above zero"),
        ({"variants": [VARIANTS[0], {"key": "b c", "weight": 1}]}, "needs a key"),
        ({"variants": [VARIANTS[0], {"key": HOLDOUT, "weight": 1}]}, "names the holdout"),
        ({"variants": [VARIANTS[0], {"key": "b", "template": "no such"}]}, "not one of winback's"),
        (
            {"variants": [VARIANTS[0], {"key": "b", "template": "abandoned_cart"}]},
            "template 'abandoned_cart' is not one of winback's",
        ),
        ({"holdout": 0.6}, "holdout must be from 0 to 0.5"),
        ({"holdout": -0.1}, "holdout must be from 0 to 0.5"),
        ({"min_recipients": 0}, "at least 1"),
        ({"step_key": "nope"}, "'nope' is not a step of winback"),
        ({"step_key": "goodbye_ignored"}, "sends no email"),
        ({"flow": "newsletter"}, "unknown flow"),
    ],
)
async def test_a_bad_test_is_refused(shop: Shop, change: dict[str, Any], refusal: str) -> None:
    asked: dict[str, Any] = {
        "flow": WINBACK,
        "step_key": "our_values",
        "variants": VARIANTS,
        "holdout": 0.1,
        "min_recipients": 100,
        **change,
    }
    async with sessionmaker()() as session:
        with pytest.raises(AbTestError, match=refusal):
            await abtests.start_test(session, shop, **asked)
        assert (await session.exec(select(AbTest))).all() == []


async def test_one_test_runs_per_step(shop: Shop) -> None:
    start = abtests.start_test
    async with sessionmaker()() as session:
        first = await start(session, shop, WINBACK, "our_values", VARIANTS, 0, 10, now=ago(days=3))
        await session.commit()
        with pytest.raises(AbTestError, match="already runs"):
            await start(session, shop, WINBACK, "our_values", VARIANTS, 0, 10)
        # Another step may have its own; once the first ends, the step may have a new one
        await start(session, shop, WINBACK, "goodbye", VARIANTS, 0, 10, now=ago(days=2))
        await abtests.stop_test(session, first, now=ago(days=1))
        await start(session, shop, WINBACK, "our_values", VARIANTS, 0, 10, now=ago(days=1))
        await session.commit()
        assert [t.step_key for t in await abtests.list_tests(session, shop)] == [
            "our_values",
            "goodbye",
            "our_values",
        ]


async def assigned(test: AbTest, variant: str, email: str, at: datetime) -> Assignment:
    assert test.id is not None
    async with sessionmaker()() as session:
        row = Assignment(
            shop_id=test.shop_id, test_id=test.id, email=email, variant=variant, assigned_at=at
        )
        session.add(row)
        await session.commit()
        await session.refresh(row)
        return row


async def test_results_measure_every_arm_alike(shop: Shop) -> None:
    async with sessionmaker()() as session:
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0.25, 2)
        await session.commit()
    # plain: 3 recipients; one clicked twice and bought 60.00 a day later; one bought 6 days
    # after assignment (past the 5-day window)
    for n in range(3):
        await assigned(test, "plain", f"p{n}@example.com", ago(days=7))
    email = await sent(shop, WINBACK, "p0@example.com", ago(days=7), step=1)
    async with sessionmaker()() as session:
        claimed = await session.get(Send, email.id)
        assert claimed is not None
        await abtests.record_send(session, test, "plain", claimed)
        await session.commit()
    await clicked(email, ago(days=6, hours=12))
    await clicked(email, ago(days=6, hours=11))
    await ordered(shop, "p0@example.com", ago(days=6), "60.00")
    await ordered(shop, "p1@example.com", ago(days=1), "500.00")
    # story: 2 recipients, one bought twice (30.00 and 10.00, refunded 10.00)
    await assigned(test, "story", "s0@example.com", ago(days=4))
    await assigned(test, "story", "s1@example.com", ago(days=4))
    await ordered(shop, "s0@example.com", ago(days=3), "30.00")
    second = await ordered(shop, "s0@example.com", ago(days=2), "10.00")
    await refunded(second, "10.00")
    # holdout: 2 recipients, one bought 40.00 with no email at all; an order before the
    # assignment is not the test's
    await assigned(test, HOLDOUT, "h0@example.com", ago(days=3))
    await assigned(test, HOLDOUT, "h1@example.com", ago(days=3))
    await ordered(shop, "h0@example.com", ago(days=2), "40.00")
    await ordered(shop, "h1@example.com", ago(days=4), "70.00")

    async with sessionmaker()() as session:
        figures = await abtests.results(session, test)
        sends = (await session.exec(select(Send.variant))).all()
        links = (await session.exec(select(Assignment.email, Assignment.send_id))).all()
        credit = (await session.exec(select(Attribution.variant))).all()

    assert sends == ["plain"]
    assert [email_id for _, email_id in links if email_id] == [email.id]
    assert credit == ["plain"]  # p0's order came from the clicked email, sent as "plain"
    rows = {f.key: f for f in figures}
    assert [f.key for f in figures] == ["plain", "story", HOLDOUT]
    assert (rows["plain"].recipients, rows["plain"].clicks, rows["plain"].orders) == (3, 2, 1)
    assert rows["plain"].revenue == Decimal("60")
    assert rows["plain"].revenue_per_recipient == Decimal("20.00")
    assert rows["plain"].weight == pytest.approx(0.75 * 3 / 4)
    assert (rows["story"].recipients, rows["story"].orders, rows["story"].revenue) == (
        2,
        2,
        Decimal("30"),
    )
    assert rows["story"].revenue_per_recipient == Decimal("15.00")
    assert (rows[HOLDOUT].recipients, rows[HOLDOUT].clicks, rows[HOLDOUT].orders) == (2, 0, 1)
    assert rows[HOLDOUT].revenue_per_recipient == Decimal("20.00")
    assert rows[HOLDOUT].weight == 0.25
    # Conversions (recipients who ordered): plain 1/3, story 1/2, holdout 1/2
    assert [f.probability_best for f in figures] == abtests.probability_best(
        [(1, 3), (1, 2), (1, 2)]
    )
    assert sum(f.probability_best for f in figures) == pytest.approx(1)


async def test_the_variant_goes_with_the_order_it_earned(shop: Shop) -> None:
    email = await sent(shop, WINBACK, "ann@example.com", ago(days=2), variant="story")
    await clicked(email, ago(days=1))

    found = await credited(await ordered(shop, "ann@example.com", NOW))

    assert found is not None and found.variant == "story"


async def test_a_released_claim_leaves_the_assignment(shop: Shop) -> None:
    async with sessionmaker()() as session:
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0, 10)
        await session.commit()
    await assigned(test, "plain", "ann@example.com", ago(days=1))
    email = await sent(shop, WINBACK, "ann@example.com", ago(days=1))
    async with sessionmaker()() as session:
        claimed = await session.get(Send, email.id)
        assert claimed is not None
        await abtests.record_send(session, test, "plain", claimed)
        await session.commit()
        # The delivery failed: the engine deletes the claim so a retry can send it
        await session.delete(claimed)
        await session.commit()
    async with sessionmaker()() as session:
        rows = (await session.exec(select(Assignment))).all()
    assert [(row.variant, row.send_id) for row in rows] == [("plain", None)]


async def test_a_winner_is_chosen_only_past_min_recipients(shop: Shop) -> None:
    async with sessionmaker()() as session:
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0, 500)
        await session.commit()
        assert test.id is not None
        # plain: 50 of 500 bought; story: 20 of 499 so far
        for key, count, buyers in (("plain", 500, 50), ("story", 499, 20)):
            session.add_all(
                Assignment(
                    shop_id=test.shop_id,
                    test_id=test.id,
                    email=f"{key}{n}@example.com",
                    variant=key,
                    assigned_at=ago(days=3),
                )
                for n in range(count)
            )
            session.add_all(
                Order(
                    shop_id=test.shop_id,
                    platform_id=f"{key}-{n}",
                    name=f"#{key}-{n}",
                    email=f"{key}{n}@example.com",
                    currency="EUR",
                    total_price="25.00",
                    placed_at=ago(days=2),
                )
                for n in range(buyers)
            )
        await session.commit()

        assert await abtests.choose_winner(session, test, now=NOW) is None
        assert test.ended_at is None

        await assigned(test, "story", "story499@example.com", ago(days=3))
        assert await abtests.choose_winner(session, test, now=NOW) == "plain"
        await session.commit()

    async with sessionmaker()() as session:
        ended = await session.get(AbTest, test.id)
        assert ended is not None
        assert (ended.winner, ended.ended_at) == ("plain", NOW)
        assert await abtests.choose_winner(session, ended) == "plain"


async def test_no_winner_while_the_holdout_does_as_well(shop: Shop) -> None:
    async with sessionmaker()() as session:
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0.5, 2)
        await session.commit()
    # Both variants convert 1 of 2, and so does the holdout, who got no email
    for key in ("plain", "story", HOLDOUT):
        for n in range(2):
            await assigned(test, key, f"{key}{n}@example.com", ago(days=3))
        await ordered(shop, f"{key}0@example.com", ago(days=2))

    async with sessionmaker()() as session:
        assert await abtests.choose_winner(session, test, now=NOW) is None


async def test_the_hourly_job_makes_the_winner_the_step_for_new_enrollments(shop: Shop) -> None:
    async with sessionmaker()() as session:
        test = await abtests.start_test(session, shop, WINBACK, "our_values", VARIANTS, 0, 100)
        before = await flows_service.shop_flow(session, shop, WINBACK)
        version = before.version
        await session.commit()
        assert test.id is not None
        # story: 40 of 100 bought; plain: 5 of 100
        for key, buyers in (("story", 40), ("plain", 5)):
            session.add_all(
                Assignment(
                    shop_id=test.shop_id, test_id=test.id, email=f"{key}{n}@example.com",
                    variant=key, assigned_at=ago(days=3),
                )
                for n in range(100)
            )  # fmt: skip
            session.add_all(
                Order(
                    shop_id=test.shop_id, platform_id=f"{key}-{n}", name=f"#{key}-{n}",
                    email=f"{key}{n}@example.com", currency="EUR", total_price="25.00",
                    placed_at=ago(days=2),
                )
                for n in range(buyers)
            )  # fmt: skip
        await session.commit()

    assert await choose_winners({}) == f"1 running, ended: {test.id}:story"

    async with sessionmaker()() as session:
        flow = await flows_service.shop_flow(session, shop, WINBACK)
    (values,) = [s for s in flow.steps if s.get("key") == "our_values"]
    assert values["template"] == "winback_offer" and flow.version > version
