"""Connecting a WooCommerce store: WooCommerce's app authorization endpoint (wc-auth), then
Rebound's own webhooks created through the REST API with a per-store secret."""

import hmac
import logging
import secrets
from html import escape
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from arq import Retry
from arq.connections import ArqRedis
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from app import security
from app.api.auth import admin_login_link
from app.db import SessionDep, sessionmaker
from app.redis import RedisDep
from app.settings import get_settings
from app.shops import repository as shops
from app.shops.models import Shop
from app.shops.service import ShopError, connect_woocommerce, normalize_store_url, woocommerce_keys
from integrations.woocommerce import api

log = logging.getLogger("rebound.woocommerce")
router = APIRouter(tags=["woocommerce connect"])

WEBHOOK_TOPICS = [
    "order.created",
    "order.updated",
    "order.deleted",
    "customer.created",
    "customer.updated",
]
PENDING_TTL = 3600  # seconds a merchant has to approve the connection
# The browser that started a connection: only it gets the admin sign-in link on the done page.
BROWSER_COOKIE = "rebound_wc_connect"


class AuthorizedKeys(BaseModel):
    """What WooCommerce POSTs to the callback_url once the merchant approves."""

    key_id: int
    user_id: str
    consumer_key: str
    consumer_secret: str
    key_permissions: str


def credentials(shop: Shop) -> api.StoreCredentials:
    keys = woocommerce_keys(shop)
    if keys is None or shop.base_url is None:
        raise ShopError(f"{shop.domain} is not a connected WooCommerce store")
    return api.StoreCredentials(
        base_url=shop.base_url, consumer_key=keys[0], consumer_secret=keys[1]
    )


async def create_webhooks(shop: Shop, secret: str) -> list[str]:
    """Rebound's webhooks in the store, signed with the store's secret; never twice."""
    delivery_url = f"{get_settings().public_url}/webhooks/woocommerce"
    return await api.ensure_webhooks(credentials(shop), delivery_url, secret, WEBHOOK_TOPICS)


async def read_store_settings(shop: Shop) -> None:
    found = await api.fetch_store_settings(credentials(shop))
    shop.currency = found.currency or shop.currency
    shop.locale = found.language or shop.locale  # emails' language: orders carry none
    shop.country_code = found.country or shop.country_code
    shop.address = list(found.address_lines) or shop.address


SET_UP_RETRIES = (30, 120, 600, 1800, 3600)  # seconds: a store that is down comes back later


async def set_up_store(ctx: dict[str, Any], shop_id: int) -> str:
    """arq job: after a connection, read the store's settings and create the webhooks. A store
    that cannot be reached is tried again with backoff: without its webhooks nothing works."""
    async with sessionmaker()() as session:
        shop = await shops.get(session, shop_id)
        if shop is None or shop.platform != "woocommerce" or not shop.api_secret_encrypted:
            return "nothing to set up"
        try:
            created = await create_webhooks(shop, security.decrypt(shop.api_secret_encrypted))
            await read_store_settings(shop)
        except api.WooCommerceUnauthorized:
            log.error("WooCommerce store %s refused Rebound's keys: connect it again", shop.domain)
            return "keys refused"
        except (api.WooCommerceApiError, httpx.HTTPError) as exc:
            tries = int(ctx.get("job_try", 1))
            if tries > len(SET_UP_RETRIES):
                log.error("WooCommerce store %s could not be set up: %s", shop.domain, exc)
                return f"not set up: {exc}"
            delay = SET_UP_RETRIES[tries - 1]
            log.warning(
                "WooCommerce store %s not set up yet (%s); retry in %ss", shop.domain, exc, delay
            )
            raise Retry(defer=delay) from exc
        await session.commit()
    log.info("WooCommerce store %s set up; %s webhooks created", shop.domain, len(created))
    return f"{len(created)} webhooks created"


@router.get("/connect/woocommerce")
async def start_connect(store: str, redis: RedisDep) -> RedirectResponse:
    """Send the merchant to their store to approve Rebound's read/write access."""
    public_url = get_settings().public_url
    if not public_url.startswith("https://"):
        raise HTTPException(
            400, "WooCommerce sends keys only to https: set APP_URL to an https URL"
        )
    try:
        base_url = normalize_store_url(store)
    except ShopError as exc:
        raise HTTPException(400, str(exc)) from exc
    # Rebound's own id for this request: the callback must name it, or it is refused.
    request_id = secrets.token_urlsafe(24)
    await redis.set(f"woocommerce:connect:{request_id}", base_url, ex=PENDING_TTL)
    query = urlencode(
        {
            "app_name": "Rebound",
            "scope": "read_write",
            "user_id": request_id,
            "return_url": f"{public_url}/connect/woocommerce/done",
            "callback_url": f"{public_url}/connect/woocommerce/callback",
        }
    )
    response = RedirectResponse(f"{base_url}/wc-auth/v1/authorize?{query}", status_code=303)
    response.set_cookie(
        BROWSER_COOKIE,
        request_id,
        max_age=PENDING_TTL,
        httponly=True,
        secure=True,
        samesite="lax",
        path="/connect/woocommerce",
    )
    return response


@router.post("/connect/woocommerce/callback")
async def receive_keys(
    keys: AuthorizedKeys, session: SessionDep, redis: RedisDep
) -> dict[str, str]:
    # Read, not taken: a forged callback naming a real user_id must not spend the merchant's.
    pending = await redis.get(f"woocommerce:connect:{keys.user_id}")
    if pending is None:
        raise HTTPException(400, "no connection was started with this user_id, or it expired")
    if keys.key_permissions != "read_write":
        raise HTTPException(400, "Rebound needs read_write access to create webhooks and coupons")
    await _check_keys(pending.decode(), keys)
    if not await redis.delete(f"woocommerce:connect:{keys.user_id}"):
        raise HTTPException(400, "this connection was completed already")
    try:
        shop = await connect_woocommerce(
            session,
            url=pending.decode(),
            consumer_key=keys.consumer_key,
            consumer_secret=keys.consumer_secret,
            webhook_secret=secrets.token_urlsafe(32),
        )
    except ShopError as exc:
        raise HTTPException(400, str(exc)) from exc
    await session.commit()
    await _enqueue_set_up(redis, shop)
    # For the done page the merchant's browser comes back to: it offers a sign-in link, once.
    await redis.set(f"woocommerce:connected:{keys.user_id}", str(shop.id), ex=PENDING_TTL)
    return {"status": "connected"}


async def _check_keys(base_url: str, keys: AuthorizedKeys) -> None:
    """Anyone can start a connection for any store and see its user_id: only keys that the store
    itself accepts may replace what Rebound holds for it."""
    store = api.StoreCredentials(
        base_url=base_url, consumer_key=keys.consumer_key, consumer_secret=keys.consumer_secret
    )
    try:
        await api.fetch_store_settings(store)
    except (api.WooCommerceApiError, httpx.HTTPError) as exc:
        log.warning("wc-auth callback for %s refused: the store did not accept its keys", base_url)
        raise HTTPException(400, "the store did not accept these keys") from exc


async def _enqueue_set_up(redis: ArqRedis, shop: Shop) -> None:
    # The keys take effect once this answer is back: the webhooks are made by the worker.
    await redis.enqueue_job("set_up_store", shop.id, _job_id=f"set_up_store:{shop.id}")


@router.get("/connect/woocommerce/done", response_class=HTMLResponse)
async def connect_done(
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    success: Annotated[str, Query()] = "0",
    user_id: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    """Where WooCommerce sends the merchant back. After an approval, the browser that started
    the connection gets a button that signs it in to the admin (a one-time link)."""
    if success != "1":
        body = "<p>The connection was not approved. Nothing was stored; you can start again.</p>"
    else:
        body = "<p>Rebound is connected. Abandoned-cart reminders start with the next checkout.</p>"
        link = await _admin_link(request, session, redis, user_id)
        if link:
            body += (
                f"<p><a href='{escape(link)}' style='display:inline-block;background:#111;"
                "color:#fff;border-radius:6px;padding:12px 24px;text-decoration:none'>"
                "Open the Rebound admin</a></p>"
            )
        else:
            body += (
                "<p>To open the Rebound admin, run <code>rebound admin-link --shop "
                "YOUR-STORE</code> on the Rebound server.</p>"
            )
    response = HTMLResponse(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Rebound</title>"
        f"</head><body style='font-family:system-ui,sans-serif;padding:24px'><h1>Rebound</h1>"
        f"{body}</body></html>"
    )
    response.delete_cookie(BROWSER_COOKIE, path="/connect/woocommerce")
    return response


async def _admin_link(
    request: Request, session: AsyncSession, redis: ArqRedis, user_id: str
) -> str | None:
    """A sign-in link for the shop this browser just connected; None for any other browser, or
    when the link was shown already (a reload)."""
    cookie = request.cookies.get(BROWSER_COOKIE, "")
    if not user_id or not hmac.compare_digest(cookie.encode(), user_id.encode()):
        return None
    shop_id = await redis.getdel(f"woocommerce:connected:{user_id}")
    shop = await shops.get(session, int(shop_id)) if shop_id else None
    return admin_login_link(shop) if shop is not None else None
