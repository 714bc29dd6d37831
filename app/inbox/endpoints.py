"""Webhook receivers: verify on the raw bytes, store in the inbox, enqueue, answer fast."""

import hashlib
import json
import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from app.db import SessionDep
from app.inbox import repository
from app.inbox.tasks import ingest_job_id
from app.redis import RedisDep
from app.settings import get_settings
from app.shops import repository as shops
from app.shops.models import Shop
from app.shops.service import webhook_secret
from integrations.shopify import webhooks as shopify
from integrations.woocommerce import webhooks as woocommerce

log = logging.getLogger("rebound.inbox")
router = APIRouter(tags=["webhooks"])

MAX_BODY = 1024 * 1024


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, "webhook body is larger than 1 MiB")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise HTTPException(413, "webhook body is larger than 1 MiB")
    return bytes(body)


def _from_the_app(headers: dict[str, str], body: bytes) -> bool:
    secret = get_settings().shopify_api_secret
    return secret is not None and shopify.is_genuine(secret.get_secret_value(), headers, body)


@router.post("/webhooks/shopify", response_class=JSONResponse)
async def receive_shopify(request: Request, session: SessionDep, redis: RedisDep) -> dict[str, str]:
    body = await _read_body(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    domain = headers.get("x-shopify-shop-domain", "").strip().lower()
    shop = await shops.get_by_domain(session, shopify.PLATFORM, domain) if domain else None
    secret = webhook_secret(shop) if shop else None
    topic = headers.get("x-shopify-topic", "").strip()
    if shop is None and topic in shopify.COMPLIANCE_TOPICS and _from_the_app(headers, body):
        return {"status": "nothing held for this shop"}
    if (
        shop is None
        or shop.id is None
        or not secret
        or not shopify.is_genuine(secret, headers, body)
    ):
        # One answer for unknown shops and bad signatures: nothing to learn by probing.
        raise HTTPException(401, "webhook signature could not be verified for this shop")
    if not topic:
        raise HTTPException(400, "X-Shopify-Topic header is missing")
    return await _accept(session, redis, shop, topic, shopify.delivery_id(headers), body)


@router.post("/webhooks/woocommerce", response_class=JSONResponse)
async def receive_woocommerce(
    request: Request, session: SessionDep, redis: RedisDep
) -> dict[str, str]:
    body = await _read_body(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    if woocommerce.is_ping(headers, body):
        return {"status": "pong"}  # sent once when a webhook is created; nothing to keep
    shop = None
    for domain in woocommerce.store_domains(headers.get("x-wc-webhook-source", "")):
        shop = shop or await shops.get_by_domain(session, woocommerce.PLATFORM, domain)
    secret = webhook_secret(shop) if shop else None
    if shop is None or not secret or not woocommerce.is_genuine(secret, headers, body):
        raise HTTPException(401, "webhook signature could not be verified for this store")
    topic = headers.get("x-wc-webhook-topic", "").strip()
    if not topic:
        raise HTTPException(400, "X-WC-Webhook-Topic header is missing")
    return await _accept(session, redis, shop, topic, woocommerce.delivery_id(headers, body), body)


async def _accept(
    session: SessionDep,
    redis: RedisDep,
    shop: Shop,
    topic: str,
    delivery: str | None,
    body: bytes,
) -> dict[str, str]:
    """Store a verified delivery once, then hand it to the worker."""
    assert shop.id is not None
    try:
        payload = body.decode("utf-8")
        json.loads(payload)
    except ValueError as exc:
        raise HTTPException(400, f"webhook body is not valid JSON: {exc}") from exc
    entry_id = await repository.insert_new(
        session,
        shop_id=shop.id,
        platform=shop.platform,
        topic=topic,
        delivery_id=delivery or "body:" + hashlib.sha256(topic.encode() + b"\0" + body).hexdigest(),
        payload=payload,
    )
    await session.commit()
    if entry_id is None:
        return {"status": "duplicate"}
    try:
        await redis.enqueue_job("ingest", entry_id, _job_id=ingest_job_id(entry_id))
    except Exception:  # the row is safe; the sweeper enqueues it once Redis is back
        log.exception("could not enqueue inbox entry %s", entry_id)
    return {"status": "accepted"}
