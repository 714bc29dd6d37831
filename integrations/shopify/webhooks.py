"""Shopify webhooks: who sent it, is it genuine, and which domain events it carries."""

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from itertools import zip_longest
from typing import Any

from app.commerce.events import (
    CheckoutChanged,
    Customer,
    CustomerDataRequested,
    CustomerRedacted,
    Event,
    InvalidPayload,
    LineItem,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
    ShopRedacted,
    ShopUninstalled,
    Tracking,
)
from integrations.payload import identifier, items, money, obj, optional_text, text

PLATFORM = "shopify"
CHECKOUT_TOPICS = frozenset({"checkouts/create", "checkouts/update"})
ORDER_TOPICS = frozenset({"orders/create", "orders/paid"})
FULFILLMENT_TOPICS = frozenset({"fulfillments/create", "fulfillments/update"})
# A fulfilment in one of these states sent nothing to the customer.
UNSHIPPED_STATUSES = frozenset({"cancelled", "error", "failure"})
# Mandatory for App Store apps; Shopify sends them even for shops that never installed or left.
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
HMAC_HEADERS = ("x-shopify-hmac-sha256", "shopify-hmac-sha256")  # the first present counts


def is_genuine(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """The body's base64 HMAC-SHA256 matches X-Shopify-Hmac-Sha256 (compared in constant time).
    `headers` have lower-case names. The same check as shopify_app's verify_webhook_req
    (tests/test_shopify_webhooks.py compares the two), without its first step: it parses and
    re-serializes the whole body to redact it for a log line, a third of a delivery's CPU."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False  # Shopify signs UTF-8 JSON; other bytes cannot be a genuine delivery.
    received = next((headers[name] for name in HMAC_HEADERS if name in headers), "")
    expected = base64.b64encode(hmac.digest(secret.encode(), body, hashlib.sha256))
    try:
        return bool(received) and hmac.compare_digest(received.encode("ascii"), expected)
    except UnicodeEncodeError:
        return False  # a non-ASCII signature header cannot be compared, and is not genuine


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """What makes a delivery unique. One merchant action shares an event id across topics, so
    the topic is part of the key."""
    topic = headers.get("x-shopify-topic", "")
    if event_id := headers.get("x-shopify-event-id"):
        return f"event:{topic}:{event_id}"
    if webhook_id := headers.get("x-shopify-webhook-id"):
        return f"webhook:{webhook_id}"
    return None


def events(topic: str, payload: Any) -> list[Event]:
    """The domain events a verified delivery carries; topics Rebound does not use carry none."""
    if not isinstance(payload, dict):
        raise InvalidPayload(f"{topic} payload must be a JSON object")
    if topic in CHECKOUT_TOPICS:
        return [_checkout(payload)]
    if topic in ORDER_TOPICS:
        return [_order(payload)]
    if topic == "orders/cancelled":
        # The payload is the whole order: recording it first means a cancellation delivered
        # before orders/create still has its order.
        order = _order(payload)
        return [order, OrderCancelled(order.platform_id, _timestamp(payload, "cancelled_at"))]
    if topic == "refunds/create":
        refund = _refund(payload)
        return [refund] if refund else []
    if topic in FULFILLMENT_TOPICS:
        shipment = _shipment(payload)
        return [shipment] if shipment else []
    if topic == "app/uninstalled":
        return [ShopUninstalled()]
    if topic == "customers/data_request":
        request = obj(payload, "data_request")
        request_id = identifier(request, "id") if request.get("id") is not None else None
        return [CustomerDataRequested(_customer(payload, "orders_requested"), request_id)]
    if topic == "customers/redact":
        return [CustomerRedacted(_customer(payload, "orders_to_redact"))]
    if topic == "shop/redact":
        return [ShopRedacted()]
    return []


def _customer(payload: dict[str, Any], orders_key: str) -> Customer:
    customer = obj(payload, "customer")
    platform_id = customer.get("id")
    return Customer(
        email=optional_text(customer, "email"),
        phone=optional_text(customer, "phone"),
        platform_id=identifier(customer, "id") if platform_id is not None else None,
        order_ids=tuple(
            identifier({"id": order_id}, "id") for order_id in items(payload, orders_key)
        ),
    )


def _checkout(payload: dict[str, Any]) -> CheckoutChanged:
    customer = obj(payload, "customer")
    started_at = _timestamp(payload, "created_at")
    first_name, last_name = _name(payload, customer)
    return CheckoutChanged(
        token=text(payload, "token"),
        cart_token=optional_text(payload, "cart_token"),
        email=optional_text(payload, "email") or optional_text(customer, "email"),
        first_name=first_name,
        last_name=last_name,
        phone=_phone(payload, customer),
        locale=optional_text(payload, "customer_locale"),
        # Line prices and totals are in the currency the shopper saw.
        currency=optional_text(payload, "presentment_currency") or text(payload, "currency"),
        subtotal_price=money(payload, "subtotal_price"),
        total_price=money(payload, "total_price"),
        restore_url=optional_text(payload, "abandoned_checkout_url"),
        started_at=started_at,
        updated_at=_optional_timestamp(payload, "updated_at") or started_at,
        completed_at=_optional_timestamp(payload, "completed_at"),
        line_items=[_line_item(item) for item in items(payload, "line_items")],
    )


def _order(payload: dict[str, Any]) -> OrderPlaced:
    customer = obj(payload, "customer")
    presentment = obj(obj(payload, "total_price_set"), "presentment_money")
    return OrderPlaced(
        platform_id=identifier(payload, "id"),
        name=optional_text(payload, "name") or f"#{identifier(payload, 'id')}",
        checkout_token=optional_text(payload, "checkout_token"),
        cart_token=optional_text(payload, "cart_token"),
        email=(
            optional_text(payload, "email")
            or optional_text(payload, "contact_email")
            or optional_text(customer, "email")
        ),
        currency=(
            optional_text(presentment, "currency_code")
            or optional_text(payload, "presentment_currency")
            or text(payload, "currency")
        ),
        total_price=money(presentment, "amount") if presentment else money(payload, "total_price"),
        placed_at=_timestamp(payload, "created_at"),
        line_items=[_line_item(item) for item in items(payload, "line_items")],
        shipping_country=_country(obj(payload, "shipping_address")),
        locale=optional_text(payload, "customer_locale"),
        first_name=_name(payload, customer)[0],
        discount_codes=tuple(
            str(line["code"])
            for line in items(payload, "discount_codes")
            if isinstance(line, dict) and line.get("code")
        ),
    )


def _country(address: dict[str, Any]) -> str | None:
    code = optional_text(address, "country_code")
    if code is None:
        return None
    if len(code) != 2 or not (code.isascii() and code.isalpha()):
        raise InvalidPayload(f"country_code must be an ISO 3166-1 alpha-2 code, not {code!r}")
    return code.upper()


def _refund(payload: dict[str, Any]) -> OrderRefunded | None:
    """The money a refund sent back: its successful refund transactions. refunds/create fires
    whether or not money moved (a refund may only restock), so a refund of nothing is no event."""
    order_id = identifier(payload, "order_id")
    refund_id = identifier(payload, "id")
    refunded_at = _optional_timestamp(payload, "processed_at") or _timestamp(payload, "created_at")
    amount = Decimal(0)
    for transaction in items(payload, "transactions"):
        if not isinstance(transaction, dict):
            raise InvalidPayload("transactions must hold objects")
        kind, status = optional_text(transaction, "kind"), optional_text(transaction, "status")
        if kind == "refund" and status == "success":
            value = Decimal(money(transaction, "amount"))
            if value < 0:
                raise InvalidPayload(f"refund transaction amount must not be negative: {value}")
            amount += value
    if amount == 0:
        return None
    return OrderRefunded(order_id, refund_id, str(amount), refunded_at)


def _shipment(payload: dict[str, Any]) -> OrderShipped | None:
    order_id = identifier(payload, "order_id")
    shipment_id = identifier(payload, "id")
    shipped_at = _timestamp(payload, "created_at")
    delivered = optional_text(payload, "shipment_status") == "delivered"
    # Shopify stamps no delivery time; the update that reported "delivered" is the closest.
    delivered_at = _timestamp(payload, "updated_at") if delivered else None
    tracking = _tracking(payload)
    if optional_text(payload, "status") in UNSHIPPED_STATUSES:
        return None
    changed_at = _optional_timestamp(payload, "updated_at")
    return OrderShipped(order_id, shipment_id, shipped_at, tracking, delivered_at, changed_at)


def _tracking(payload: dict[str, Any]) -> tuple[Tracking, ...]:
    """One entry per parcel: `tracking_numbers` and `tracking_urls` are parallel lists. The
    singular fields hold the first entry, and stand in when the lists are empty."""
    company = optional_text(payload, "tracking_company")
    first_number, first_url = _one(payload, "tracking_number"), _one(payload, "tracking_url")
    numbers = _texts(payload, "tracking_numbers") or first_number
    urls = _texts(payload, "tracking_urls") or first_url
    return tuple(
        Tracking(company=company, number=number, url=url)
        for number, url in zip_longest(numbers, urls)
        if number or url
    )


def _texts(payload: dict[str, Any], key: str) -> list[str | None]:
    """A list of strings; a blank stays in place as None, so parallel lists keep their pairs."""
    found: list[str | None] = []
    for entry in items(payload, key):
        if not isinstance(entry, str):
            raise InvalidPayload(f"{key} must hold strings, not {entry!r}")
        found.append(entry.strip() or None)
    return found


def _one(payload: dict[str, Any], key: str) -> list[str | None]:
    value = optional_text(payload, key)
    return [value] if value else []


def _line_item(item: Any) -> LineItem:
    if not isinstance(item, dict):
        raise InvalidPayload("line_items must hold objects")
    quantity = item.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
        raise InvalidPayload(f"line item quantity must be a whole number, not {quantity!r}")
    # Order line items carry the shopper's currency in price_set; checkout line items have
    # only `price`, already in that currency.
    presentment = obj(obj(item, "price_set"), "presentment_money")
    return LineItem(
        title=optional_text(item, "presentment_title") or text(item, "title"),
        variant_title=(
            optional_text(item, "presentment_variant_title") or optional_text(item, "variant_title")
        ),
        quantity=quantity,
        price=money(presentment, "amount") if presentment else money(item, "price"),
        variant_id=identifier(item, "variant_id") if item.get("variant_id") is not None else None,
        product_id=identifier(item, "product_id") if item.get("product_id") is not None else None,
    )


def _name(payload: dict[str, Any], customer: dict[str, Any]) -> tuple[str | None, str | None]:
    """First and last name, both from the first place that gives a first name (else a last
    name). The parts are never mixed across places: the addresses may name other people (the
    documented sample bills Bob Biller and ships to Steve Shipper for customer John Smith)."""
    sources = (customer, obj(payload, "billing_address"), obj(payload, "shipping_address"))
    named = next((s for s in sources if optional_text(s, "first_name")), None) or next(
        (s for s in sources if optional_text(s, "last_name")), {}
    )
    return optional_text(named, "first_name"), optional_text(named, "last_name")


def _phone(payload: dict[str, Any], customer: dict[str, Any]) -> str | None:
    """The checkout's own contact phone first, then the customer's, then the addresses'."""
    for source in (
        payload,
        customer,
        obj(payload, "billing_address"),
        obj(payload, "shipping_address"),
    ):
        if phone := optional_text(source, "phone"):
            return phone
    return None


def _optional_timestamp(payload: dict[str, Any], key: str) -> datetime | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{key} must be an ISO 8601 timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidPayload(f"{key} is not an ISO 8601 timestamp: {value!r}") from exc
    if moment.tzinfo is None:
        raise InvalidPayload(f"{key} has no UTC offset: {value!r}")
    return moment.astimezone(UTC)


def _timestamp(payload: dict[str, Any], key: str) -> datetime:
    moment = _optional_timestamp(payload, key)
    if moment is None:
        raise InvalidPayload(f"{key} is missing")
    return moment
