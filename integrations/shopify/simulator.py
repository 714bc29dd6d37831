"""A Shopify store stand-in: builds checkout and order payloads in Shopify's documented webhook
shape (see tests/fixtures/shopify) and delivers them signed, as Shopify does."""

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from integrations.shopify.admin import API_VERSION


@dataclass(frozen=True)
class Product:
    title: str
    variant_title: str | None
    price: str
    sku: str
    product_id: int
    variant_id: int


@dataclass
class Checkout:
    """A shopper's checkout as the store holds it; `payload()` renders Shopify's JSON."""

    shop_domain: str
    email: str | None
    first_name: str | None
    last_name: str | None = None
    currency: str = "USD"
    locale: str = "en-US"
    lines: list[tuple[Product, int]] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    cart_token: str = field(default_factory=lambda: secrets.token_hex(16))
    # Shopify ids pass 2**53: exact integers, never floats.
    checkout_id: int = field(default_factory=lambda: 2**53 + secrets.randbelow(10**15))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_at: datetime | None = None

    def touch(self) -> None:
        self.updated_at = datetime.now(UTC)

    @property
    def subtotal(self) -> Decimal:
        return sum((Decimal(product.price) * qty for product, qty in self.lines), Decimal("0.00"))

    @property
    def restore_url(self) -> str:
        return (
            f"https://{self.shop_domain}/5483800/checkouts/{self.token}/recover"
            f"?key={hashlib.sha256(self.token.encode()).hexdigest()[:32]}"
        )

    def payload(self) -> dict[str, Any]:
        total = f"{self.subtotal:.2f}"
        customer = {
            "id": 2**53 + 7 + secrets.randbelow(10**9),
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "state": "disabled",
            "verified_email": True,
            "currency": self.currency,
        }
        return {
            "id": self.checkout_id,
            "token": self.token,
            "cart_token": self.cart_token,
            "email": self.email,
            "gateway": None,
            "buyer_accepts_marketing": False,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "landing_site": "/",
            "note": None,
            "note_attributes": [],
            "referring_site": "",
            "shipping_lines": [],
            "taxes_included": False,
            "total_weight": 0,
            "currency": self.currency,
            "completed_at": _iso(self.completed_at) if self.completed_at else None,
            "phone": None,
            "customer_locale": self.locale,
            "line_items": [_line_item(product, qty) for product, qty in self.lines],
            "name": f"#{self.checkout_id}",
            "source": None,
            "abandoned_checkout_url": self.restore_url,
            "discount_codes": [],
            "tax_lines": [],
            "source_name": "web",
            "presentment_currency": self.currency,
            "total_discounts": "0.00",
            "total_line_items_price": total,
            "total_price": total,
            "total_tax": "0.00",
            "subtotal_price": total,
            "billing_address": {"first_name": self.first_name, "last_name": self.last_name},
            "shipping_address": {"first_name": self.first_name, "last_name": self.last_name},
            "customer": customer if self.email else None,
        }

    def order_payload(self, number: int) -> dict[str, Any]:
        total = f"{self.subtotal:.2f}"
        money = {"amount": total, "currency_code": self.currency}
        return {
            "id": 2**53 + 1000 + number * 7919,
            "admin_graphql_api_id": f"gid://shopify/Order/{2**53 + 1000 + number * 7919}",
            "name": f"#{number}",
            "order_number": number,
            "email": self.email,
            "contact_email": self.email,
            "checkout_token": self.token,
            "cart_token": self.cart_token,
            "created_at": _iso(datetime.now(UTC)),
            "processed_at": _iso(datetime.now(UTC)),
            "currency": self.currency,
            "presentment_currency": self.currency,
            "financial_status": "paid",
            "total_price": total,
            "subtotal_price": total,
            "total_price_set": {"shop_money": money, "presentment_money": money},
            "customer_locale": self.locale,
            "line_items": [_line_item(product, qty) for product, qty in self.lines],
            "customer": {"email": self.email, "first_name": self.first_name},
        }


def _line_item(product: Product, quantity: int) -> dict[str, Any]:
    return {
        "key": secrets.token_hex(16),
        "fulfillment_service": "manual",
        "gift_card": False,
        "grams": 300,
        "presentment_title": product.title,
        "presentment_variant_title": product.variant_title,
        "product_id": product.product_id,
        "quantity": quantity,
        "requires_shipping": True,
        "sku": product.sku,
        "taxable": True,
        "title": product.title,
        "variant_id": product.variant_id,
        "variant_title": product.variant_title,
        "variant_price": product.price,
        "vendor": "Rebound Demo",
        "line_price": f"{Decimal(product.price) * quantity:.2f}",
        "price": product.price,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook_headers(shop_domain: str, topic: str, secret: str, body: bytes) -> dict[str, str]:
    """The headers Shopify sends with a delivery, signature included."""
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(secret, body),
        "X-Shopify-Shop-Domain": shop_domain,
        "X-Shopify-API-Version": API_VERSION,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }


async def deliver(
    client: httpx.AsyncClient, shop_domain: str, secret: str, topic: str, payload: dict[str, Any]
) -> httpx.Response:
    """POST one signed delivery to Rebound's Shopify endpoint, as Shopify would."""
    body = json.dumps(payload).encode()
    return await client.post(
        "/webhooks/shopify",
        content=body,
        headers=webhook_headers(shop_domain, topic, secret, body),
    )
