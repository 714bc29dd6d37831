"""Webhook receivers: verify on the raw bytes, store in the inbox, enqueue, answer fast."""

import hashlib
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from app.inbox.writer import Delivery, InboxWriter
from app.settings import get_settings
from app.shops.service import Signer, webhook_signer
from integrations.shopify import webhooks as shopify
from integrations.woocommerce import webhooks as woocommerce

router = APIRouter(tags=["webhooks"])
Endpoint = Callable[[Request], Awaitable[Response]]

MAX_BODY = 1024 * 1024


def _answer(status: str) -> Response:
    return JSONResponse({"status": status})


def _webhook_route(path: str) -> Callable[[Endpoint], Endpoint]:
    """A plain Starlette route: the receivers take the raw request and answer themselves, so
    FastAPI's per-request work (dependency solving, response validation) buys nothing: it cost
    65 µs of the 270 µs a delivery took in the app (measured in-process). Platforms, not API
    clients, call these: they are not in the OpenAPI schema."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
        return endpoint

    return register


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


@_webhook_route("/webhooks/shopify")
async def receive_shopify(request: Request) -> Response:
    body = await _read_body(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    domain = headers.get("x-shopify-shop-domain", "").strip().lower()
    shop = await webhook_signer(shopify.PLATFORM, domain) if domain else None
    topic = headers.get("x-shopify-topic", "").strip()
    if shop is None and topic in shopify.COMPLIANCE_TOPICS and _from_the_app(headers, body):
        return _answer("nothing held for this shop")
    if shop is None or not shop.secret or not shopify.is_genuine(shop.secret, headers, body):
        # One answer for unknown shops and bad signatures: nothing to learn by probing.
        raise HTTPException(401, "webhook signature could not be verified for this shop")
    if not topic:
        raise HTTPException(400, "X-Shopify-Topic header is missing")
    return await _accept(request, shop, topic, shopify.delivery_id(headers), body)


@_webhook_route("/webhooks/woocommerce")
async def receive_woocommerce(request: Request) -> Response:
    body = await _read_body(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    if woocommerce.is_ping(headers, body):
        return _answer("pong")  # sent once when a webhook is created; nothing to keep
    shop = None
    for domain in woocommerce.store_domains(headers.get("x-wc-webhook-source", "")):
        shop = shop or await webhook_signer(woocommerce.PLATFORM, domain)
    if shop is None or not shop.secret or not woocommerce.is_genuine(shop.secret, headers, body):
        raise HTTPException(401, "webhook signature could not be verified for this store")
    topic = headers.get("x-wc-webhook-topic", "").strip()
    if not topic:
        raise HTTPException(400, "X-WC-Webhook-Topic header is missing")
    return await _accept(request, shop, topic, woocommerce.delivery_id(headers, body), body)


async def _accept(
    request: Request,
    shop: Signer,
    topic: str,
    delivery: str | None,
    body: bytes,
) -> Response:
    """Store a verified delivery once; the writer hands a new one to the worker. The body is
    not parsed here: `ingest` parses it, and keeps one that is not JSON as failed, with the
    reason, for replay (DESIGN.md, principle 7). Parsing it twice was a sixth of a delivery's
    CPU in the app; a 400 made the platform retry a body that would never change."""
    writer: InboxWriter = request.app.state.inbox_writer
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError as exc:  # the inbox keeps text; a platform signs UTF-8 JSON
        raise HTTPException(400, f"webhook body is not UTF-8: {exc}") from exc
    entry_id = await writer.store(
        Delivery(
            shop_id=shop.shop_id,
            platform=shop.platform,
            topic=topic,
            delivery_id=delivery
            or "body:" + hashlib.sha256(topic.encode() + b"\0" + body).hexdigest(),
            payload=payload,
        )
    )
    return _answer("accepted" if entry_id is not None else "duplicate")
