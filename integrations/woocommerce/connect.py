"""Connecting a WooCommerce store: WooCommerce's app authorization endpoint (wc-auth), then
Rebound's own webhooks created through the REST API with a per-store secret."""

import logging
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from arq.connections import ArqRedis
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from app import security
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


async def set_up_store(ctx: dict[str, Any], shop_id: int) -> str:
    """arq job: after a connection, read the store's settings and create the webhooks."""
    async with sessionmaker()() as session:
        shop = await shops.get(session, shop_id)
        if shop is None or shop.platform != "woocommerce" or not shop.api_secret_encrypted:
            return "nothing to set up"
        created = await create_webhooks(shop, security.decrypt(shop.api_secret_encrypted))
        await read_store_settings(shop)
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
    return RedirectResponse(f"{base_url}/wc-auth/v1/authorize?{query}", status_code=303)


@router.post("/connect/woocommerce/callback")
async def receive_keys(
    keys: AuthorizedKeys, session: SessionDep, redis: RedisDep
) -> dict[str, str]:
    pending = await redis.getdel(f"woocommerce:connect:{keys.user_id}")
    if pending is None:
        raise HTTPException(400, "no connection was started with this user_id, or it expired")
    if keys.key_permissions != "read_write":
        raise HTTPException(400, "Rebound needs read_write access to create webhooks and coupons")
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
    return {"status": "connected"}


async def _enqueue_set_up(redis: ArqRedis, shop: Shop) -> None:
    # The keys take effect once this answer is back: the webhooks are made by the worker.
    await redis.enqueue_job("set_up_store", shop.id, _job_id=f"set_up_store:{shop.id}")


@router.get("/connect/woocommerce/done", response_class=HTMLResponse)
async def connect_done(success: Annotated[str, Query()] = "0") -> HTMLResponse:
    if success == "1":
        message = "Rebound is connected. Abandoned-cart reminders start with the next checkout."
    else:
        message = "The connection was not approved. Nothing was stored; you can start again."
    return HTMLResponse(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Rebound</title>"
        f"</head><body style='font-family:system-ui,sans-serif;padding:24px'><h1>Rebound</h1>"
        f"<p>{message}</p></body></html>"
    )
