"""Installing Rebound on a Shopify store: the embedded app home (token exchange) and the
authorization-code grant for installs started outside the admin. Both end in `install`."""

import hashlib
import hmac
import logging
import re
import secrets
import time
from html import escape
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import shopify_app
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from app.admin.endpoints import NAV
from app.db import SessionDep
from app.redis import RedisDep
from app.settings import get_settings
from app.shops import repository as shops
from app.shops.models import Shop
from app.shops.service import connect_shopify
from integrations.shopify import admin, tokens

log = logging.getLogger("rebound.shopify")
router = APIRouter(tags=["shopify install"])

# The fewest scopes that work: checkouts, orders and refunds; fulfilments (fulfillments/*
# webhooks need read_fulfillments, read_orders is not enough); product data for emails;
# discount codes.
SCOPES = "read_orders,read_fulfillments,read_products,write_discounts"
WEBHOOK_TOPICS = [
    "checkouts/create",
    "checkouts/update",
    "orders/create",
    "orders/paid",
    "orders/cancelled",
    "refunds/create",
    "fulfillments/create",
    "fulfillments/update",
    "customers/update",
    "app/uninstalled",
]
SHOP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
STATE_COOKIE = "rebound_shopify_state"
STATE_TTL = 600  # seconds a merchant has to approve the install
CALLBACK_MAX_AGE = 300  # seconds; an older callback is a replay
PATCH_ID_TOKEN_PATH = "/app/patch-id-token"  # noqa: S105  (a URL path, not a secret)


def _app_config() -> shopify_app.AppConfig:
    settings = get_settings()
    if not settings.shopify_api_key or settings.shopify_api_secret is None:
        raise HTTPException(503, "SHOPIFY_API_KEY and SHOPIFY_API_SECRET must be set to install")
    return shopify_app.AppConfig(
        client_id=settings.shopify_api_key,
        client_secret=settings.shopify_api_secret.get_secret_value(),
        old_client_secret=None,
    )


AppConfigDep = Annotated[shopify_app.AppConfig, Depends(_app_config)]


def app_config_or_none() -> shopify_app.AppConfig | None:
    """The app's configuration when this Rebound is a Shopify app; None for self-hosters."""
    try:
        return _app_config()
    except HTTPException:
        return None


def valid_shop(shop: str | None) -> str:
    """Only `name.myshopify.com`: anything else could send the merchant or a code elsewhere."""
    domain = (shop or "").strip().lower()
    if not SHOP_NAME.fullmatch(domain):
        raise HTTPException(400, "shop must be a store domain like your-store.myshopify.com")
    return domain


async def install(session: AsyncSession, domain: str, grant: tokens.Grant) -> Shop:
    """Store the offline token (and its refresh token), read the shop's settings, subscribe its
    webhooks. New shops get the default flows; a reinstall keeps the merchant's flow settings."""
    access_token = grant.access_token
    info = await admin.fetch_shop(domain, access_token)
    shop = await connect_shopify(
        session, domain=domain, access_token=access_token, api_secret=None, name=info.name
    )
    tokens.keep_grant(shop, grant)
    keep_shop_settings(shop, info)
    callback = f"{get_settings().public_url}/webhooks/shopify"
    created = await admin.ensure_webhook_subscriptions(
        domain, access_token, callback, WEBHOOK_TOPICS
    )
    log.info("installed on %s; %s webhook subscriptions created", domain, len(created))
    return shop


def keep_shop_settings(shop: Shop, info: admin.ShopInfo) -> None:
    """What Rebound keeps of the store's own settings, read with `admin.fetch_shop`: every way
    of connecting a Shopify store (both install paths, `rebound shops add shopify`) ends here."""
    shop.email = info.contact_email
    shop.currency = info.currency_code
    shop.locale = info.primary_locale
    shop.timezone = info.iana_timezone
    shop.country_code = info.country_code
    shop.address = list(info.address_lines)


@router.get("/auth/shopify/install")
async def start_install(shop: str, redis: RedisDep, config: AppConfigDep) -> RedirectResponse:
    """Send the merchant to Shopify to approve Rebound, with a single-use state for this browser."""
    domain = valid_shop(shop)
    state = secrets.token_urlsafe(32)
    await redis.set(f"shopify:oauth-state:{state}", domain, ex=STATE_TTL)
    query = urlencode(
        {
            "client_id": config["client_id"],
            "scope": SCOPES,
            "redirect_uri": f"{get_settings().public_url}/auth/shopify/callback",
            "state": state,
        }
    )
    response = RedirectResponse(f"https://{domain}/admin/oauth/authorize?{query}", status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=STATE_TTL,
        httponly=True,
        secure=get_settings().public_url.startswith("https://"),
        samesite="lax",
        path="/auth/shopify",
    )
    return response


def query_hmac_is_valid(raw_query: str, secret: str) -> bool:
    """Shopify signs the callback query: hex HMAC-SHA256 of the other parameters, sorted."""
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    received = [value for key, value in pairs if key == "hmac"]
    message = "&".join(f"{key}={value}" for key, value in sorted(pairs) if key != "hmac")
    expected = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return len(received) == 1 and hmac.compare_digest(received[0].encode(), expected.encode())


@router.get("/auth/shopify/callback")
async def finish_install(
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    config: AppConfigDep,
    shop: str,
    code: Annotated[str, Query(min_length=1)],
    state: str,
    timestamp: str,
) -> RedirectResponse:
    domain = valid_shop(shop)
    if not query_hmac_is_valid(request.url.query, config["client_secret"]):
        raise HTTPException(401, "the request is not signed by Shopify")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > CALLBACK_MAX_AGE:
        raise HTTPException(401, "the install link has expired; start the install again")
    # Single use and bound to the browser that started the install.
    expected = await redis.getdel(f"shopify:oauth-state:{state}")
    cookie = request.cookies.get(STATE_COOKIE, "")
    if (
        expected is None
        or expected.decode() != domain
        or not hmac.compare_digest(cookie.encode(), state.encode())
    ):
        raise HTTPException(401, "this install link was already used or belongs to another browser")
    grant = await tokens.exchange_code(domain, code)
    await install(session, domain, grant)
    await session.commit()
    response = RedirectResponse(
        f"https://{domain}/admin/apps/{config['client_id']}", status_code=303
    )
    response.delete_cookie(STATE_COOKIE, path="/auth/shopify")
    return response


def _request_input(request: Request) -> shopify_app.RequestInput:
    return shopify_app.RequestInput(
        method=request.method,
        headers=dict(request.headers),
        url=str(request.url),
        body="",
    )


def _suggested(result: Any) -> Response:
    """The response shopifyapp suggests (a bounce page, a redirect, or an error)."""
    return Response(
        content=result.response.body,
        status_code=result.response.status,
        headers=result.response.headers,
    )


@router.get(PATCH_ID_TOKEN_PATH, response_class=HTMLResponse)
async def patch_id_token(request: Request, config: AppConfigDep) -> Response:
    """App Bridge fetches a fresh id token here and comes back to the app home."""
    return _suggested(shopify_app.app_home_patch_id_token(_request_input(request), config))


@router.get("/app", response_class=HTMLResponse)
async def app_home(request: Request, session: SessionDep, config: AppConfigDep) -> Response:
    """The embedded app home. With Shopify managed installation, the first visit is the install:
    the id token is verified and exchanged for an offline access token."""
    result = shopify_app.verify_app_home_req(_request_input(request), config, PATCH_ID_TOKEN_PATH)
    if not result.ok or result.shop is None or result.id_token is None:
        return _suggested(result)
    domain = f"{result.shop}.myshopify.com"
    shop = await shops.get_by_domain(session, "shopify", domain)
    if (
        shop is None
        or shop.access_token_encrypted is None
        or shop.uninstalled_at is not None
        or shop.token_invalid_at is not None  # refused, or its refresh token ran out: anew
        # Installed with a non-expiring token: opening the app is Shopify's way to cycle it.
        or (shop.token_expires_at is None and tokens.is_public_install(shop))
    ):
        grant = await tokens.exchange_id_token(domain, result.id_token)
        shop = await install(session, domain, grant)
        await session.commit()
    headers = dict(result.response.headers)
    # The admin's pages find the shop again from these (and a fresh id token App Bridge fetches).
    kept = {
        k: request.query_params[k]
        for k in ("embedded", "shop", "host")
        if k in request.query_params
    }
    return HTMLResponse(_home_page(shop, config["client_id"], urlencode(kept)), headers=headers)


def _home_page(shop: Shop, api_key: str, query: str) -> str:
    """Installed: say so, and offer the admin's pages (also as App Bridge's navigation menu)."""
    links = "".join(f'<a href="{path}?{escape(query)}">{label}</a>' for path, label in NAV[1:])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="shopify-api-key" content="{escape(api_key)}">
<script src="https://cdn.shopify.com/shopifycloud/app-bridge.js"></script>
<title>Rebound</title></head>
<body style="font-family:system-ui,sans-serif;padding:24px">
<ui-nav-menu><a href="/admin?{escape(query)}" rel="home">Overview</a>{links}</ui-nav-menu>
<h1>Rebound is installed on {escape(shop.name)}</h1>
<p>Abandoned-cart reminders are on: shoppers who leave a checkout with their email get up to three
reminders, 1 hour, 24 hours and 72 hours later, each with a link back to their cart.</p>
<p><a href="/admin?{escape(query)}">Open Rebound's overview</a></p>
</body></html>"""
