"""Deliveries as Shopify makes them: documented payloads, signed with the shop's secret."""

import base64
import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from integrations.shopify.standin import ShopifyStandin

FIXTURES = Path(__file__).parent / "fixtures" / "shopify"


def fixture(name: str) -> dict[str, Any]:
    # Python's json keeps integers above 2**53 exact, as Shopify's ids need.
    return copy.deepcopy(json.loads((FIXTURES / f"{name}.json").read_text()))


def signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers_for(topic: str, body: bytes, *, secret: str, domain: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature(secret, body),
        "X-Shopify-Shop-Domain": domain,
        "X-Shopify-API-Version": "2026-07",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": "2026-11-23T10:00:00.000000Z",
    }


async def post(
    client: httpx.AsyncClient,
    topic: str,
    payload: dict[str, Any] | bytes,
    *,
    secret: str,
    domain: str,
    headers: dict[str, Any] | None = None,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = headers_for(topic, body, secret=secret, domain=domain) | (headers or {})
    return await client.post("/webhooks/shopify", content=body, headers=sent)


def add_documented_variants(standin: ShopifyStandin, domain: str) -> None:
    """The stand-in store sells what the documented checkout payload holds."""
    for line in fixture("checkouts_create")["line_items"]:
        standin.add_variant(
            domain, variant_id=line["variant_id"], title=line["variant_title"],
            price=line["price"], product_title=line["title"],
            handle=line["title"].lower().replace(" ", "-"),
        )  # fmt: skip
