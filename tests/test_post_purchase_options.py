"""The post-purchase steps a merchant switches on: a surprise reward after the Nth order, a
preference question whose answer steers later steps, a photo ask, a replenishment reminder with
a reorder link, and a refer-a-friend mention. Time is the test's: orders lie in the past."""

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlmodel import func, select

from app.commerce.models import OrderItem
from app.db import sessionmaker
from app.mail.transport import SmtpTransport
from app.shops.models import Shop
from flows.models import CustomerPreference
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, Mailbox, link_targets, without_utm
from tests.test_flows import (
    ADA,
    BEANIE,
    BO,
    SOCKS,
    SWEATER,
    apply,
    edit_flow,
    now,
    only,
    open_shop,
    order,
    reload,
    run,
    send_for,
    shipped,
    stored_flow,
    text,
    to,
)

PREFERENCE_LINK = re.compile(r"https://rebound\.test(/pref/[A-Za-z0-9_.-]+/(\d+))")


async def only_these_steps(shop: Shop, *keys: str, **changes: dict[str, Any]) -> None:
    """Post-purchase with just these steps on, each changed as given (by key)."""
    flow = await stored_flow(shop, "post_purchase")
    steps = [
        {**step, "enabled": step["key"] in keys, **changes.get(step["key"], {})}
        for step in flow.steps
    ]
    await edit_flow(shop, "set_steps", "post_purchase", steps)


async def test_a_surprise_reward_goes_once_with_the_nth_order(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await only_these_steps(shop, "reward", reward={"conditions": {"nth_order": 3}})
    placed = now() - timedelta(days=2)
    await apply(shop, *(order(f"50{n}", ADA, [SOCKS], placed_at=placed - timedelta(days=60 * n))
                        for n in (1, 2)))  # fmt: skip
    await apply(shop, order("503", ADA, [SOCKS], placed_at=placed))
    await apply(shop, order("504", ADA, [SOCKS], placed_at=placed + timedelta(hours=1)))
    await apply(shop, order("601", BO, [SOCKS], placed_at=placed))
    transport = SmtpTransport(smtp_url)

    # The earlier orders are too old to start a series; the 4th came before the 3rd's step ran.
    third, fourth = await _orders_of(ADA)
    assert third.order_id == await _order_id("503")
    assert await run(third, "reward", transport) == "sent"
    assert await run(fourth, "reward", transport) == (
        "skipped: order 4 of the customer, not order 3"
    )
    assert await run(await only("post_purchase", BO), "reward", transport) == (
        "skipped: order 1 of the customer, not order 3"
    )

    (reward,) = to(mailbox, ADA)
    body = text(reward)
    code = (await send_for(third, "reward")).discount_code
    assert code and code in body and "15% off" in body and "3" in body
    assert to(mailbox, BO) == []


async def test_a_reward_for_top_customers_ranks_them_by_what_they_spent(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await only_these_steps(shop, "reward", reward={"conditions": {"segment": "top"}})
    await edit_flow(shop, "set_setting", "winback", "top_share", 0.2)  # 1 in 5 is top
    placed = now() - timedelta(days=2)
    others = [f"c{n}@example.com" for n in range(4)]
    await apply(shop, order("700", ADA, [SWEATER], placed_at=placed, total="900.00"))
    await apply(shop, *(order(f"70{n + 1}", email, [SOCKS], placed_at=placed, total="20.00")
                        for n, email in enumerate(others)))  # fmt: skip
    transport = SmtpTransport(smtp_url)

    assert await run(await only("post_purchase", ADA), "reward", transport) == "sent"
    assert await run(await only("post_purchase", others[0]), "reward", transport) == (
        "skipped: segment is one_time"
    )
    assert len(to(mailbox, ADA)) == 1 and to(mailbox, others[0]) == []


async def test_a_preference_answer_is_stored_and_steers_a_later_step(
    server: httpx.AsyncClient, standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await only_these_steps(
        shop, "preference", "review", review={"conditions": {"preference": {"interest": "Offers"}}}
    )
    placed = now() - timedelta(days=20)
    await apply(shop, order("701", ADA, [SWEATER], placed_at=placed))
    await apply(
        shop, shipped("701", placed + timedelta(days=1), delivered_at=placed + timedelta(days=3))
    )
    transport = SmtpTransport(smtp_url)
    enrollment = await only("post_purchase", ADA)

    assert await run(enrollment, "preference", transport) == "sent"
    links = PREFERENCE_LINK.findall(text(to(mailbox, ADA)[0]))
    assert [option for _, option in links] == ["0", "1", "2"]
    answered = await server.get(links[2][0])  # "Care tips"
    assert answered.status_code == 200 and "Care tips" in answered.text
    forged = await server.get(links[2][0].replace("/2", "/7"))
    assert forged.status_code == 404

    assert await run(await reload(enrollment), "review", transport) == (
        "skipped: preference interest is not Offers"
    )
    async with sessionmaker()() as session:
        (stored,) = (await session.exec(select(CustomerPreference))).all()
    assert (stored.email, stored.key, stored.value) == (ADA, "interest", "Care tips")


async def test_a_replenishment_reminder_comes_before_it_runs_out_with_a_reorder_cart(
    server: httpx.AsyncClient, standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await only_these_steps(shop, "replenish")
    socks_product = "803"
    await edit_flow(shop, "set_setting", "post_purchase", "replenish_days", {socks_product: 30})
    placed = now() - timedelta(days=28)
    await apply(shop, order("801", ADA, [SOCKS, SWEATER], placed_at=placed))
    await apply(shop, order("802", BO, [BEANIE], placed_at=placed))
    transport = SmtpTransport(smtp_url)

    enrollment = await only("post_purchase", ADA)
    assert enrollment.due_at == placed + timedelta(days=30 - 5)  # five days' lead
    assert await run(enrollment, "replenish", transport) == "sent"
    assert await run(await only("post_purchase", BO), "replenish", transport) == (
        "skipped: nothing in the order to replenish"
    )

    body = text(to(mailbox, ADA)[0])
    assert "Wool Socks" in body and "Merino Crew Sweater" not in body
    link = next(w for w in body.split() if "/r/" in w)
    reorder = await server.get(urlsplit(link).path)
    assert reorder.status_code == 303
    assert without_utm(reorder.headers["location"]) == f"https://{SHOP_DOMAIN}/cart/{SOCKS}:1"


async def test_the_referral_mention_and_the_settings_a_running_series_started_with(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await only_these_steps(shop, "shipping_notice", "share_photo")
    await edit_flow(shop, "set_setting", "post_purchase", "referral_url", "https://nw.example/r/1")
    placed = now() - timedelta(days=15)
    await apply(shop, order("901", ADA, [SOCKS], placed_at=placed))
    # Edits after enrollment are for new series: this one keeps the referral it started with.
    await edit_flow(shop, "set_setting", "post_purchase", "referral_url", "https://nw.example/r/2")
    await apply(
        shop, shipped("901", placed + timedelta(days=1), delivered_at=placed + timedelta(days=2))
    )
    transport = SmtpTransport(smtp_url)
    enrollment = await only("post_purchase", ADA)

    assert await run(enrollment, "shipping_notice", transport) == "sent"
    assert await run(await reload(enrollment), "share_photo", transport) == "sent"

    notice, photo = to(mailbox, ADA)
    assert "https://nw.example/r/1" in link_targets(text(notice))
    assert "https://nw.example/r/2" not in link_targets(text(notice))
    assert "photo" in text(photo).lower()


async def test_a_repeated_order_delivery_adds_its_items_once(standin: ShopifyStandin) -> None:
    shop = await open_shop(standin)
    placed = now() - timedelta(days=1)
    for _ in range(2):
        await apply(shop, order("951", ADA, [SOCKS, BEANIE], placed_at=placed))

    async with sessionmaker()() as session:
        count = (await session.exec(select(func.count()).select_from(OrderItem))).one()
    assert count == 2


async def _order_id(platform_id: str) -> int:
    from app.commerce.models import Order

    async with sessionmaker()() as session:
        found = (await session.exec(select(Order).where(Order.platform_id == platform_id))).one()
    assert found.id is not None
    return found.id


async def _orders_of(email: str) -> list[Any]:
    from flows.models import Enrollment

    async with sessionmaker()() as session:
        query = select(Enrollment).where(
            Enrollment.flow == "post_purchase", Enrollment.email == email
        )
        return list((await session.exec(query)).all())


async def test_exit_rules_are_the_merchants_to_change(standin: ShopifyStandin) -> None:
    """By default an unsubscribe leaves post-purchase running (service emails still go); a
    merchant who wants it to end the series too says so in the flow's settings."""
    from flows import engine

    shop = await open_shop(standin)
    placed = now() - timedelta(days=1)
    await apply(shop, order("961", ADA, [SOCKS], placed_at=placed))
    await edit_flow(shop, "set_setting", "post_purchase", "exit_on_unsubscribe", True)
    await apply(shop, order("962", BO, [SOCKS], placed_at=placed))
    assert shop.id is not None
    async with sessionmaker()() as session:
        for email in (ADA, BO):
            await engine.unsubscribe(session, shop.id, email)
        await session.commit()

    kept, ended = await only("post_purchase", ADA), await only("post_purchase", BO)
    assert kept.status == "active" and ended.exit_reason == "unsubscribed"
