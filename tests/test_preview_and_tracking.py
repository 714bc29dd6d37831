"""Previews through the JSON API (authenticated per shop), and tracking: links to other sites
become signed click redirects with UTM, the open pixel is recorded, the restore link carries
UTM, a shop can switch tracking off, and a redirect never goes anywhere Rebound did not sign."""

import re
from datetime import timedelta

import httpx
from sqlmodel import select

from app import security
from app.api.auth import issue_token
from app.db import sessionmaker
from app.mail import tracking
from app.mail.transport import SmtpTransport
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows.models import Click, Open
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import Mailbox, link_targets
from tests.test_flows import (
    ADA,
    SWEATER,
    apply,
    change_shop,
    now,
    only,
    open_shop,
    order,
    reload,
    run,
    shipped,
    text,
)


def bearer(shop: Shop) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(shop)}"}


async def test_a_preview_in_swedish_for_the_shop_that_asks(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await open_shop(standin)
    response = await server.get(
        "/api/flows/abandoned_cart/steps/3/preview", params={"lang": "sv"}, headers=bearer(shop)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lang"] == "sv" and '<html lang="sv">' in body["html"]
    assert "BACK-PREVIEW" in body["text"]  # the last step's offer, with a sample code
    assert "Merino Crew Sweater" in body["text"]  # sample items: the shop has no carts yet
    assert "/c/" not in body["html"] and "/o/" not in body["html"]  # a preview tracks nothing
    html = await server.get(
        "/api/flows/post_purchase/steps/3/preview",
        params={"format": "html"},
        headers=bearer(shop),
    )
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "PostNord" in html.text


async def test_the_api_refuses_missing_forged_expired_and_other_shops_tokens(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await open_shop(standin)
    async with sessionmaker()() as session:
        other = await connect_shopify(
            session, domain="other-shop.myshopify.com", access_token="shpat_x", api_secret="s"
        )
        await session.commit()
    path = "/api/flows/abandoned_cart/steps/1/preview"
    expired = "rb_" + security.sign("api", {"shop": shop.id, "exp": 1})
    forged = issue_token(shop)[:-4] + "AAAA"

    assert (await server.get(path)).status_code == 401
    for token in (expired, forged, "not-a-token"):
        answer = await server.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, token
    # A token is for its own shop only: shop B's token previews B's flows, never A's data.
    mine = await server.get(path, headers=bearer(shop))
    theirs = await server.get(path, headers=bearer(other))
    assert mine.status_code == theirs.status_code == 200
    assert "Nordic Wool" in mine.json()["sender"] and "Nordic Wool" not in theirs.json()["sender"]
    unknown_step = await server.get(
        "/api/flows/abandoned_cart/steps/9/preview", headers=bearer(shop)
    )
    assert unknown_step.status_code == 404 and "steps 1 to 3" in unknown_step.text


async def test_links_are_tracked_with_utm_and_the_open_is_recorded(
    server: httpx.AsyncClient, standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    placed = now() - timedelta(days=20)
    await apply(shop, order("1701", ADA, [SWEATER], placed_at=placed))
    await apply(
        shop, shipped("1701", placed + timedelta(days=1), delivered_at=placed + timedelta(days=2))
    )
    enrollment = await only("post_purchase", ADA)
    transport = SmtpTransport(smtp_url)
    assert await run(enrollment, "shipping_notice", transport) == "sent"
    assert await run(await reload(enrollment), "care", transport) == "sent"
    care = mailbox.messages[-1]
    html = str(care.get_body(preferencelist=("html",)).get_content())  # type: ignore[union-attr]

    tracked = re.findall(r'href="https://rebound\.test(/c/[^"]+)"', html)
    assert tracked, "links to the store's product pages go through Rebound"
    landed = await server.get(tracked[0].replace("&amp;", "&"))
    assert landed.status_code == 303
    assert (
        "utm_source=rebound&utm_medium=email&utm_campaign=post_purchase&utm_content=care"
        in (landed.headers["location"])
    )
    pixel = re.search(r'<img src="https://rebound\.test(/o/[^"]+)" width="1"', html)
    assert pixel is not None
    image = await server.get(pixel.group(1))
    assert image.status_code == 200 and image.headers["content-type"] == "image/gif"
    async with sessionmaker()() as session:
        assert len((await session.exec(select(Open))).all()) == 1
        clicks = (await session.exec(select(Click))).all()
    assert [c.url for c in clicks] == [landed.headers["location"]]


async def test_a_shop_without_tracking_sends_plain_links_and_no_pixel(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await change_shop(shop, tracking=False)
    placed = now() - timedelta(days=20)
    await apply(shop, order("1801", ADA, [SWEATER], placed_at=placed))
    await apply(
        shop, shipped("1801", placed + timedelta(days=1), delivered_at=placed + timedelta(days=2))
    )
    enrollment = await only("post_purchase", ADA)
    transport = SmtpTransport(smtp_url)
    assert await run(enrollment, "shipping_notice", transport) == "sent"
    assert await run(await reload(enrollment), "care", transport) == "sent"

    care = mailbox.messages[-1]
    html = str(care.get_body(preferencelist=("html",)).get_content())  # type: ignore[union-attr]
    assert "/c/" not in html and "/o/" not in html
    assert any("/products/" in url for url in link_targets(text(care)))


async def test_a_redirect_goes_only_where_rebound_signed(server: httpx.AsyncClient) -> None:
    campaign = tracking.Campaign(1, 1, "winback", "goodbye")
    genuine = tracking.click_url("https://shop.example/a", campaign).split("/c/")[1]
    payload, _, mac = genuine.partition(".")
    swapped = security.sign("click", {"shop": 1, "send": 1, "to": "https://evil.example/"})
    for token in (f"{payload}.{'A' * len(mac)}", swapped.split(".")[0] + "." + mac,
                  security.sign("restore", {"shop": 1, "send": 1})):  # fmt: skip
        answer = await server.get(f"/c/{token}", follow_redirects=False)
        assert answer.status_code == 404, token
    script = security.sign("click", {"shop": 1, "send": 1, "to": "javascript:alert(1)"})
    assert (await server.get(f"/c/{script}")).status_code == 404


async def test_the_postal_address_is_in_both_parts_of_every_kind_of_email(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    shop = await open_shop(standin)
    await change_shop(shop, address=["Storgatan 1", "111 22 Stockholm", "Sweden"])
    for flow, step in (("abandoned_cart", 1), ("post_purchase", 3), ("winback", 3)):
        answer = await server.get(f"/api/flows/{flow}/steps/{step}/preview", headers=bearer(shop))
        assert answer.status_code == 200, answer.text
        for part in ("text", "html"):
            assert "Storgatan 1, 111 22 Stockholm, Sweden" in answer.json()[part], (flow, part)
