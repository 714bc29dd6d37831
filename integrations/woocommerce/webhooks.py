"""WooCommerce webhooks: which store sent it, is it genuine, and which domain events it carries.

Orders are WooCommerce's checkouts too: block checkout saves a `checkout-draft` order, classic
checkout leaves a `pending` order when payment is abandoned. Both, with a billing email, are
started checkouts; an order that moves on to a paid status is the purchase that ends them.
`completed` is WooCommerce's "shipped": with the Shipment Tracking extension its tracking numbers
ride in the order's `_wc_shipment_tracking_items` meta. Every delivery of an order carries its
whole state, so each one yields all the events it implies; repeats are absorbed downstream."""

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from app.commerce.events import (
    CheckoutChanged,
    CheckoutClosed,
    Event,
    InvalidPayload,
    LineItem,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
    Tracking,
)
from integrations.payload import identifier, items, money, obj, optional_text, text

PLATFORM = "woocommerce"
ORDER_TOPICS = frozenset({"order.created", "order.updated"})
STARTED = frozenset({"checkout-draft", "pending", "failed"})
PAID = frozenset({"processing", "on-hold", "completed"})
CLOSED = frozenset({"cancelled", "trash"})
# Orders a shopper's checkout made. Others (`admin`, `subscription` renewals…) were made for them:
# a pending one is an invoice waiting to be paid, not an abandoned cart.
SHOPPER_CHECKOUTS = frozenset({"checkout", "store-api"})
MERCHANT_MADE = frozenset({"admin", "subscription"})
# Shipment Tracking's predefined providers, by the slug it stores: name and tracking page.
# Custom providers carry their own name and link; an unknown slug keeps its number, no link.
TRACKING_PROVIDERS = {
    "usps": ("USPS", "https://tools.usps.com/go/TrackConfirmAction_input?qtc_tLabels1={}"),
    "ups": ("UPS", "https://www.ups.com/track?tracknum={}"),
    "fedex": ("FedEx", "https://www.fedex.com/fedextrack/?trknbr={}"),
    "dhl": ("DHL", "https://www.dhl.com/en/express/tracking.html?AWB={}&brand=DHL"),
    "dhl-us": ("DHL US", "https://www.logistics.dhl/us-en/home/tracking.html?tracking-id={}"),
    "postnord-sverige-ab": (
        "PostNord",
        "https://www.postnord.se/en/our-tools/track-and-trace?shipmentId={}",
    ),
    "royal-mail": ("Royal Mail", "https://www.royalmail.com/track-your-item#/tracking-results/{}"),
    "canada-post": (
        "Canada Post",
        "https://www.canadapost-postescanada.ca/track-reperage/en#/search?searchFor={}",
    ),
    "australia-post": ("Australia Post", "https://auspost.com.au/mypost/track/#/details/{}"),
    "deutsche-post-dhl": (
        "Deutsche Post DHL",
        "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode={}",
    ),
}


def store_domains(source: str) -> list[str]:
    """X-WC-Webhook-Source is the store's home URL; its host (and port) names the store. The
    merchant may have typed it with or without `www.` when connecting: both are tried."""
    host = urlsplit(source.strip()).netloc.lower()
    if not host:
        return []
    other = host.removeprefix("www.") if host.startswith("www.") else f"www.{host}"
    return [host, other]


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


def delivery_id(headers: Mapping[str, str], body: bytes) -> str | None:
    """WooCommerce makes the delivery id from the webhook id and the current second, so two
    different updates of one order in the same second share it: the body tells them apart, and a
    retried delivery (the same body) still is one."""
    if delivery := headers.get("x-wc-webhook-delivery-id"):
        digest = hashlib.sha256(body).hexdigest()[:32]
        return f"delivery:{headers.get('x-wc-webhook-id', '')}:{delivery}:{digest}"
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
    created_via = optional_text(payload, "created_via")
    if status in STARTED:
        return [] if created_via in MERCHANT_MADE else [_checkout(payload, status)]
    if status == "cancelled" and _unpaid_checkout(payload, created_via):
        # WooCommerce's "Hold stock" cancels unpaid checkout orders on its own (60 minutes by
        # default): the cart is still abandoned, and can no longer be paid on order-pay.
        return [_checkout(payload, status)]
    if status in CLOSED:
        closed: list[Event] = [CheckoutClosed(checkout_token(identifier(payload, "id")))]
        if _optional_timestamp(payload, "date_paid_gmt"):  # a paid order, cancelled
            closed += [
                _order(payload),
                OrderCancelled(identifier(payload, "id"), _modified(payload)),
            ]
        return closed
    if status in PAID or status == "refunded":
        found: list[Event] = [_order(payload), *_refunds(payload, status)]
        if status == "completed":
            found.append(_shipped(payload))
        return found
    return []  # statuses added by extensions mean nothing to Rebound


def _unpaid_checkout(payload: dict[str, Any], created_via: str | None) -> bool:
    return created_via in SHOPPER_CHECKOUTS and not _optional_timestamp(payload, "date_paid_gmt")


def _modified(payload: dict[str, Any]) -> datetime:
    return _optional_timestamp(payload, "date_modified_gmt") or _timestamp(
        payload, "date_created_gmt"
    )


def _refunds(payload: dict[str, Any], status: str) -> list[OrderRefunded]:
    """Each entry of `refunds` (id, reason, total as a negative string) is one refund. A
    `refunded` order with none listed was refunded in full outside WooCommerce's refund records."""
    order_id = identifier(payload, "id")
    refunds = [
        OrderRefunded(
            order_id=order_id,
            refund_id=identifier(refund, "id"),
            amount=str(abs(Decimal(money(refund, "total")))),
            refunded_at=_modified(payload),
        )
        for refund in items(payload, "refunds")
        if isinstance(refund, dict)
    ]
    if status == "refunded" and not refunds:
        refunds.append(
            OrderRefunded(order_id, "order-refunded", money(payload, "total"), _modified(payload))
        )
    return refunds


def _shipped(payload: dict[str, Any]) -> OrderShipped:
    """A completed order is shipped when it was completed: one shipment for the whole order."""
    shipped_at = _optional_timestamp(payload, "date_completed_gmt") or _modified(payload)
    return OrderShipped(
        order_id=identifier(payload, "id"),
        shipment_id="completed",
        shipped_at=shipped_at,
        tracking=_tracking(payload),
        changed_at=_modified(payload),
    )


def _tracking(payload: dict[str, Any]) -> tuple[Tracking, ...]:
    for meta in items(payload, "meta_data"):
        if isinstance(meta, dict) and meta.get("key") == "_wc_shipment_tracking_items":
            entries = meta.get("value")
            if not isinstance(entries, list):
                return ()
            return tuple(_tracking_entry(e) for e in entries if isinstance(e, dict))
    return ()


def _tracking_entry(entry: dict[str, Any]) -> Tracking:
    number = str(entry.get("tracking_number") or "").strip() or None
    custom_name = str(entry.get("custom_tracking_provider") or "").strip() or None
    custom_link = str(entry.get("custom_tracking_link") or "").strip() or None
    provider = str(entry.get("tracking_provider") or "").strip()
    # Older versions of the extension store a slug (`dhl-us`), current ones the name (`DHL US`).
    name, template = TRACKING_PROVIDERS.get(_slug(provider), (provider or None, None))
    if custom_link and number:
        custom_link = custom_link.replace("%1$s", quote(number))  # its own placeholder
    url = custom_link or (template.format(quote(number)) if template and number else None)
    if url and urlsplit(url).scheme not in ("http", "https"):
        url = None  # only web links reach an email
    return Tracking(company=custom_name or name, number=number, url=url)


def _slug(name: str) -> str:
    """WordPress's sanitize_title, as far as carrier names need it."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


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
        last_name=optional_text(billing, "last_name"),
        phone=optional_text(billing, "phone"),
        locale=_language(payload),
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
    the draft lives in the shopper's session; nor can an order cancelled unpaid. Their cart is
    rebuilt with `?add-to-cart=`, which core WooCommerce supports for one product at a time: the
    first item, then the cart page."""
    if status in ("pending", "failed"):
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
        line_items=[_line_item(item) for item in items(payload, "line_items")],
        shipping_country=(
            optional_text(obj(payload, "shipping"), "country") or optional_text(billing, "country")
        ),
        locale=_language(payload),
        first_name=optional_text(billing, "first_name"),
        discount_codes=tuple(
            str(line["code"])
            for line in items(payload, "coupon_lines")
            if isinstance(line, dict) and line.get("code")
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


# WooCommerce itself records no language on an order; the multilingual plugins do, as order
# meta the REST API shows: WPML (WooCommerce Multilingual) `wpml_language` ("sv"),
# TranslatePress `trp_language` ("sv_SE"). Polylang's `_pll_language` is private meta, which the
# API leaves out: those stores get their own language.
LANGUAGE_META = ("wpml_language", "trp_language")


def _language(payload: dict[str, Any]) -> str | None:
    """The language the customer shopped in, when a multilingual plugin recorded it."""
    metas = payload.get("meta_data")
    values = {
        meta["key"]: meta.get("value")
        for meta in (metas if isinstance(metas, list) else [])
        if isinstance(meta, dict) and isinstance(meta.get("key"), str)
    }
    for key in LANGUAGE_META:
        value = values.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:32]
    return None


def _variation_title(item: dict[str, Any]) -> str | None:
    """Variation attributes ride in meta_data as key/display_value pairs (e.g. Size: M)."""
    metas = item.get("meta_data")
    values = [
        str(meta.get("display_value") or meta.get("value"))
        for meta in (metas if isinstance(metas, list) else [])  # anything else says nothing
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
