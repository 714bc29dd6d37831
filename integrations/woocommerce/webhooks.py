"""WooCommerce webhooks: which store sent it, is it genuine, and which domain events it carries.

Orders are WooCommerce's checkouts too: block checkout saves a `checkout-draft` order, classic
checkout leaves a `pending` order when payment is abandoned. Both, with a billing email, are
started checkouts; an order that moves on to a paid status is the purchase that ends them."""

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

from app.commerce.events import (
    CheckoutChanged,
    CheckoutClosed,
    Event,
    InvalidPayload,
    LineItem,
    OrderPlaced,
)
from integrations.payload import identifier, items, money, obj, optional_text, text

PLATFORM = "woocommerce"
ORDER_TOPICS = frozenset({"order.created", "order.updated"})
STARTED = frozenset({"checkout-draft", "pending", "failed"})
PAID = frozenset({"processing", "on-hold", "completed"})
CLOSED = frozenset({"cancelled", "trash"})


def store_domain(source: str) -> str:
    """X-WC-Webhook-Source is the store's home URL; its host (and port) names the store."""
    return urlsplit(source.strip()).netloc.lower()


def is_genuine(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """X-WC-Webhook-Signature: base64 HMAC-SHA256 of the raw body, compared in constant time."""
    received = headers.get("x-wc-webhook-signature", "")
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    try:
        return bool(received) and hmac.compare_digest(received.encode("ascii"), expected)
    except UnicodeEncodeError:
        return False


def is_ping(headers: Mapping[str, str], body: bytes) -> bool:
    """The delivery WooCommerce sends when a webhook is created: a form body `webhook_id=N`."""
    form = body.decode("ascii", errors="replace").strip()
    name, _, value = form.partition("=")
    return "x-wc-webhook-signature" not in headers and name == "webhook_id" and value.isdigit()


def delivery_id(headers: Mapping[str, str]) -> str | None:
    if delivery := headers.get("x-wc-webhook-delivery-id"):
        return f"delivery:{headers.get('x-wc-webhook-id', '')}:{delivery}"
    return None


def checkout_token(order_id: str) -> str:
    return f"order-{order_id}"


def events(topic: str, payload: Any) -> list[Event]:
    if not isinstance(payload, dict):
        raise InvalidPayload(f"{topic} payload must be a JSON object")
    if topic == "order.deleted":
        return [CheckoutClosed(checkout_token(identifier(payload, "id")))]
    if topic not in ORDER_TOPICS:
        return []  # customers are read with the flows that need them
    status = text(payload, "status")
    if status in STARTED:
        return [_checkout(payload, status)]
    if status in PAID:
        return [_order(payload)]
    if status in CLOSED:
        return [CheckoutClosed(checkout_token(identifier(payload, "id")))]
    return []  # refunded: a paid order seen before; its money is for attribution


def _checkout(payload: dict[str, Any], status: str) -> CheckoutChanged:
    order_id = identifier(payload, "id")
    billing = obj(payload, "billing")
    lines = [_line_item(item) for item in items(payload, "line_items")]
    started_at = _timestamp(payload, "date_created_gmt")
    return CheckoutChanged(
        token=checkout_token(order_id),
        cart_token=optional_text(payload, "cart_hash"),
        email=optional_text(billing, "email"),
        first_name=optional_text(billing, "first_name"),
        locale=None,  # WooCommerce orders carry none; the store's locale applies
        currency=text(payload, "currency"),
        subtotal_price=str(
            sum((Decimal(line.price) * line.quantity for line in lines), Decimal(0))
        ),
        total_price=money(payload, "total"),
        restore_url=_restore_url(payload, status, lines),
        started_at=started_at,
        updated_at=_optional_timestamp(payload, "date_modified_gmt") or started_at,
        completed_at=None,
        line_items=lines,
    )


def _restore_url(payload: dict[str, Any], status: str, lines: list[LineItem]) -> str | None:
    """Pending and failed orders can be paid again on their order-pay page (`payment_url`).
    A `checkout-draft` cannot: WooCommerce only takes payment for pending and failed orders, and
    the draft lives in the shopper's session. Its cart is rebuilt with `?add-to-cart=`, which core
    WooCommerce supports for one product at a time: the first item, then the cart page."""
    if status != "checkout-draft":
        return optional_text(payload, "payment_url")
    store = _store_url(payload)
    if not lines or not store or not lines[0].variant_id:
        return None
    first = lines[0]
    query = urlencode({"add-to-cart": first.variant_id, "quantity": first.quantity})
    return f"{store}/cart/?{query}"


def _store_url(payload: dict[str, Any]) -> str | None:
    payment_url = optional_text(payload, "payment_url")
    if not payment_url:
        return None
    parts = urlsplit(payment_url)
    return f"{parts.scheme}://{parts.netloc}"


def _order(payload: dict[str, Any]) -> OrderPlaced:
    order_id = identifier(payload, "id")
    billing = obj(payload, "billing")
    return OrderPlaced(
        platform_id=order_id,
        name=f"#{optional_text(payload, 'number') or order_id}",
        checkout_token=checkout_token(order_id),
        cart_token=optional_text(payload, "cart_hash"),
        email=optional_text(billing, "email"),
        currency=text(payload, "currency"),
        total_price=money(payload, "total"),
        placed_at=(
            _optional_timestamp(payload, "date_paid_gmt")
            or _optional_timestamp(payload, "date_modified_gmt")
            or _timestamp(payload, "date_created_gmt")
        ),
    )


def _line_item(item: Any) -> LineItem:
    if not isinstance(item, dict):
        raise InvalidPayload("line_items must hold objects")
    quantity = item.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
        raise InvalidPayload(f"line item quantity must be a whole number, not {quantity!r}")
    # `subtotal` is the line before coupons, as a decimal string; `price` is a float in the API.
    subtotal = Decimal(money(item, "subtotal"))
    unit = (subtotal / quantity).quantize(Decimal("0.01")) if quantity else subtotal
    variation = item.get("variation_id")
    product = identifier(item, "product_id") if item.get("product_id") else None
    image: dict[str, Any] = item["image"] if isinstance(item.get("image"), dict) else {}
    return LineItem(
        title=text(item, "name"),
        variant_title=_variation_title(item),
        quantity=quantity,
        price=str(unit),
        image_url=optional_text(image, "src"),
        variant_id=identifier(item, "variation_id") if variation else product,
        product_id=product,
    )


def _variation_title(item: dict[str, Any]) -> str | None:
    """Variation attributes ride in meta_data as key/display_value pairs (e.g. Size: M)."""
    values = [
        str(meta.get("display_value") or meta.get("value"))
        for meta in item.get("meta_data") or []
        if isinstance(meta, dict) and not str(meta.get("key", "_")).startswith("_")
    ]
    return " / ".join(values) or None


def _optional_timestamp(payload: dict[str, Any], key: str) -> datetime | None:
    """`*_gmt` fields are UTC written without an offset (2017-03-22T16:28:02)."""
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{key} must be a timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidPayload(f"{key} is not a timestamp: {value!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _timestamp(payload: dict[str, Any], key: str) -> datetime:
    moment = _optional_timestamp(payload, key)
    if moment is None:
        raise InvalidPayload(f"{key} is missing")
    return moment
