"""Installing from Shopify: the authorization-code grant and the embedded app home (token
exchange), against the local Shopify stand-in; every refusal stores nothing."""

import hashlib
import hmac
import time
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
from sqlmodel import select

from app import security
from app.db import sessionmaker
from app.shops.models import Shop
from flows import service as flows_service
from flows.models import Flow
from integrations.shopify import admin, install
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOPIFY_CLIENT_ID, SHOPIFY_CLIENT_SECRET

DOMAIN = "nordic-wool.myshopify.com"


def signed_query(params: dict[str, str], secret: str = SHOPIFY_CLIENT_SECRET) -> str:
    """A callback query signed the way Shopify signs it."""
    message = "&".join(f"{key}={value}" for key, value in sorted(params.items()))
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return urlencode({**params, "hmac": digest})


async def start(server: httpx.AsyncClient, shop: str = DOMAIN) -> httpx.Response:
    return await server.get("/auth/shopify/install", params={"shop": shop})


async def started_state(server: httpx.AsyncClient) -> str:
    """Start an install as a browser; the state Shopify will hand back."""
    started = await start(server)
    # The cookie is Secure (APP_URL is https); this test client talks plain http, so the
    # browser's cookie jar is played by hand.
    browser_cookie = started.cookies[install.STATE_COOKIE]
    server.headers["Cookie"] = f"{install.STATE_COOKIE}={browser_cookie}"
    return parse_qs(urlparse(started.headers["location"]).query)["state"][0]


async def callback(
    server: httpx.AsyncClient, standin: ShopifyStandin, state: str, **changes: str
) -> httpx.Response:
    params = {
        "code": standin.issue_code(DOMAIN),
        "host": "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvbm9yZGljLXdvb2w",
        "shop": DOMAIN,
        "state": state,
        "timestamp": str(int(time.time())),
        **changes,
    }
    return await server.get(f"/auth/shopify/callback?{signed_query(params)}")


async def stored_shop() -> Shop | None:
    async with sessionmaker()() as session:
        return (await session.exec(select(Shop))).first()


def add_store(standin: ShopifyStandin) -> None:
    standin.add_shop(DOMAIN, name="Nordic Wool", currency="SEK", locale="sv", country_code="SE")


async def test_authorization_code_grant_installs_the_shop(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    add_store(standin)

    started = await start(server)
    assert started.status_code == 303
    assert "Secure" in started.headers["set-cookie"] and "HttpOnly" in started.headers["set-cookie"]
    authorize = urlparse(started.headers["location"])
    query = parse_qs(authorize.query)
    assert (authorize.scheme, authorize.netloc, authorize.path) == (
        "https",
        DOMAIN,
        "/admin/oauth/authorize",
    )
    assert query["client_id"] == [SHOPIFY_CLIENT_ID]
    assert query["scope"] == [install.SCOPES]
    assert query["redirect_uri"] == ["https://rebound.test/auth/shopify/callback"]
    state = await started_state(server)

    finished = await callback(server, standin, state)

    assert finished.status_code == 303, finished.text
    assert finished.headers["location"] == f"https://{DOMAIN}/admin/apps/{SHOPIFY_CLIENT_ID}"
    shop = await stored_shop()
    assert shop and shop.name == "Nordic Wool" and shop.currency == "SEK" and shop.locale == "sv"
    assert shop.access_token_encrypted
    token = security.decrypt(shop.access_token_encrypted)
    assert (await admin.fetch_shop(DOMAIN, token)).name == "Nordic Wool"  # a working token
    subscribed = {s["topic"] for s in standin.subscriptions(DOMAIN)}
    assert subscribed == {topic.replace("/", "_").upper() for topic in install.WEBHOOK_TOPICS}
    async with sessionmaker()() as session:
        assert [
            f.name
            for f in (await session.exec(select(Flow).where(Flow.name == "abandoned_cart"))).all()
        ] == ["abandoned_cart"]

    replayed = await callback(server, standin, state)
    assert replayed.status_code == 401


async def test_refused_installs_store_nothing(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    add_store(standin)
    for shop in ("evil.com", "x.myshopify.com.evil.com", "-x.myshopify.com", ""):
        assert (await start(server, shop)).status_code == 400

    state = await started_state(server)
    stale = str(int(time.time()) - 3600)
    refusals = [
        await server.get(
            "/auth/shopify/callback?"
            + signed_query({"code": "c", "shop": DOMAIN, "state": state, "timestamp": stale}, "x")
        ),
        await callback(server, standin, state, timestamp=stale),
        await callback(server, standin, state, shop="other.myshopify.com"),
        await callback(server, standin, "a-state-never-issued"),
    ]
    for response in refusals:
        assert response.status_code in (400, 401), response.text
    # The cookie binds the state to the browser that started the install.
    state = await started_state(server)
    server.headers["Cookie"] = f"{install.STATE_COOKIE}=another-browser"
    assert (await callback(server, standin, state)).status_code == 401

    assert await stored_shop() is None
    assert standin.subscriptions(DOMAIN) == []


async def test_embedded_app_home_exchanges_the_id_token_and_installs(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    add_store(standin)
    query = {
        "embedded": "1",
        "host": "aG9zdA",
        "shop": DOMAIN,
        "id_token": standin.id_token(DOMAIN),
    }

    page = await server.get("/app", params=query)

    assert page.status_code == 200, page.text
    assert "Rebound is installed on Nordic Wool" in page.text
    shop = await stored_shop()
    assert shop and shop.access_token_encrypted
    assert {s["topic"] for s in standin.subscriptions(DOMAIN)} >= {
        "CHECKOUTS_CREATE",
        "ORDERS_PAID",
    }

    other = "other-store.myshopify.com"
    standin.add_shop(other, name="Other Store")
    forged_token = standin.id_token(other, secret="x" * 40)  # not signed with the app's secret
    refused = await server.get("/app", params={**query, "shop": other, "id_token": forged_token})
    assert "Rebound is installed" not in refused.text
    async with sessionmaker()() as session:
        assert len((await session.exec(select(Shop))).all()) == 1  # only the genuine install


async def test_reinstall_after_uninstall_starts_clean_and_keeps_flow_settings(
    server: httpx.AsyncClient, standin: ShopifyStandin
) -> None:
    add_store(standin)
    await callback(server, standin, await started_state(server))
    async with sessionmaker()() as session:
        shop = (await session.exec(select(Shop))).one()
        await flows_service.set_step_delay(session, shop, "abandoned_cart", 1, 1800)
        shop.uninstalled_at, shop.access_token_encrypted = shop.created_at, None
        await session.commit()

    assert (await callback(server, standin, await started_state(server))).status_code == 303

    async with sessionmaker()() as session:
        shop = (await session.exec(select(Shop))).one()
        flow = (await session.exec(select(Flow).where(Flow.name == "abandoned_cart"))).one()
    assert shop.uninstalled_at is None and shop.access_token_encrypted
    assert flow.steps[0]["delay"] == 1800
    assert len(standin.subscriptions(DOMAIN)) == len(install.WEBHOOK_TOPICS)  # no duplicates


def test_the_app_toml_declares_what_the_code_installs() -> None:
    toml = tomllib.loads((Path(__file__).parents[1] / "shopify.app.toml").read_text())

    assert toml["embedded"] is True
    assert toml["access_scopes"]["scopes"] == install.SCOPES
    subscriptions = toml["webhooks"]["subscriptions"]
    assert subscriptions[0]["topics"] == install.WEBHOOK_TOPICS
    assert sorted(subscriptions[1]["compliance_topics"]) == [
        "customers/data_request",
        "customers/redact",
        "shop/redact",
    ]
