"""A faithful local WooCommerce for tests and the demo: the part of the REST API (wc/v3) that
`integrations.woocommerce.api` calls, the wc-auth key-granting endpoint, and webhook deliveries
signed and shaped as WooCommerce sends them.

Shapes come from the WooCommerce REST API docs (wp-api-v3) and, where the docs are silent or
stale, from WooCommerce's source: `WC_Webhook::deliver()` / `deliver_ping()` for deliveries,
`WC_Auth` for wc-auth, the REST controllers for validation errors. Bodies are encoded the way
PHP's `wp_json_encode` does (`/` escaped as `\\/`, non-ASCII as `\\uXXXX`), which matters because
webhook signatures are over the exact bytes.

The store is the request's Host header; point the client at the stand-in with
WOOCOMMERCE_API_ORIGIN (see `api.woocommerce_http_client`). Outgoing requests (webhooks, pings,
the wc-auth callback) go to their real URL, or to `outbound_origin` when it is set, keeping the
Host header, so an https:// delivery URL can land on a local server.

    standin = WooCommerceStandin()
    credentials = standin.add_store("store.example").credentials
    async with serve(standin) as origin:  # "http://127.0.0.1:PORT"
        ...
"""

import base64
import contextlib
import hashlib
import hmac
import html
import itertools
import json
import math
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from integrations.local_server import serve_app
from integrations.shopify.admin import _OriginTransport
from integrations.woocommerce.api import API_NAMESPACE, MAX_PER_PAGE, StoreCredentials

WC_VERSION = "9.9.5"
WP_VERSION = "6.8.2"
# WC_Webhook::get_default_topic_hooks(), the core topics and the actions that fire them.
TOPIC_HOOKS: dict[str, list[str]] = {
    "coupon.created": ["woocommerce_process_shop_coupon_meta", "woocommerce_new_coupon"],
    "coupon.updated": ["woocommerce_process_shop_coupon_meta", "woocommerce_update_coupon"],
    "coupon.deleted": ["wp_trash_post"],
    "coupon.restored": ["untrashed_post"],
    "customer.created": [
        "user_register",
        "woocommerce_created_customer",
        "woocommerce_new_customer",
    ],
    "customer.updated": ["profile_update", "woocommerce_update_customer"],
    "customer.deleted": ["delete_user"],
    "order.created": ["woocommerce_new_order"],
    "order.updated": [
        "woocommerce_update_order",
        "woocommerce_order_refunded",
        "woocommerce_delete_order_refund",
    ],
    "order.deleted": ["wp_trash_post", "woocommerce_trash_order"],
    "order.restored": ["untrashed_post", "woocommerce_untrash_order"],
    "product.created": [
        "woocommerce_process_product_meta",
        "woocommerce_new_product",
        "woocommerce_new_product_variation",
    ],
    "product.updated": [
        "woocommerce_process_product_meta",
        "woocommerce_update_product",
        "woocommerce_update_product_variation",
    ],
    "product.deleted": ["wp_trash_post"],
    "product.restored": ["untrashed_post"],
}
WEBHOOK_STATUSES = ("active", "paused", "disabled")
COUPON_TYPES = ("percent", "fixed_cart", "fixed_product")
MAX_DELIVERY_FAILURES = 5  # woocommerce_max_webhook_delivery_failures
AUTH_SCOPES = ("read", "write", "read_write")
# WC_REST_Authentication::send_unauthorized_headers() for a failed Basic auth.
BASIC_REALM = (
    'Basic realm="WooCommerce API. Use a consumer key in the username field and a consumer '
    'secret in the password field."'
)


# --- encoding and errors -------------------------------------------------------------------------


def php_json_encode(value: Any) -> str:
    """`wp_json_encode($value)`: compact, ASCII-only, with `/` escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def sign(body: bytes, secret: str) -> str:
    """X-WC-Webhook-Signature: base64 of the HMAC-SHA256 of the raw body with the secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class WPJSONResponse(Response):
    media_type = "application/json; charset=UTF-8"

    def render(self, content: Any) -> bytes:
        return php_json_encode(content).encode()


def wp_error(status: int, code: str, message: str, **data: Any) -> WPJSONResponse:
    """A WP_Error as the REST server renders it."""
    return WPJSONResponse(
        {"code": code, "message": message, "data": {"status": status, **data}},
        status_code=status,
    )


def _invalid_param(name: str, reason: str) -> WPJSONResponse:
    return wp_error(
        400, "rest_invalid_param", f"Invalid parameter(s): {name}", params={name: reason}
    )


class WcAuthError(Exception):
    """wc-auth refused: WooCommerce answers `wp_die("Error: <message>.")` with status 401."""


# --- state ---------------------------------------------------------------------------------------


@dataclass
class ApiKey:
    key_id: int
    consumer_key: str
    consumer_secret: str
    permissions: str  # read, write or read_write
    description: str = ""


@dataclass
class Delivery:
    """One outgoing request: a webhook delivery, a creation ping or a wc-auth callback."""

    kind: str  # "webhook", "ping" or "auth_callback"
    url: str
    headers: dict[str, str]
    body: bytes
    webhook_id: int | None = None
    status: int | None = None  # the receiver's answer, None when it could not be reached
    error: str | None = None


@dataclass
class StandinStore:
    """One store's state. Tests read and change it directly."""

    domain: str
    name: str
    currency: str
    language: str
    timezone: str
    address: dict[str, str]
    keys: dict[str, ApiKey] = field(default_factory=dict)  # consumer key → key
    webhooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    coupons: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    variations: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Every REST request: {"method", "path", "query", "json"}.
    requests: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def home_url(self) -> str:
        return f"https://{self.domain}"

    @property
    def credentials(self) -> StoreCredentials:
        """The first API key's credentials (add_store makes one)."""
        key = next(iter(self.keys.values()))
        return StoreCredentials(self.home_url, key.consumer_key, key.consumer_secret)


def _gmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _local(store_timezone: str, moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(store_timezone)).strftime("%Y-%m-%dT%H:%M:%S")


def _dates(prefix: str, store_timezone: str, moment: datetime | None) -> dict[str, str | None]:
    if moment is None:
        return {prefix: None, f"{prefix}_gmt": None}
    return {prefix: _local(store_timezone, moment), f"{prefix}_gmt": _gmt(moment)}


def _money(value: Decimal | str | int | float, places: int = 2) -> str:
    """wc_format_decimal($value, 2)."""
    return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places)))


def _links(base: str, path: str, item_id: int, up: str | None = None) -> dict[str, Any]:
    links: dict[str, Any] = {
        "self": [{"href": f"{base}{API_NAMESPACE}/{path}/{item_id}"}],
        "collection": [{"href": f"{base}{API_NAMESPACE}/{path}"}],
    }
    if up:
        links["up"] = [{"href": f"{base}{API_NAMESPACE}/{up}"}]
    return links


def _add_query_arg(url: str, args: dict[str, str]) -> str:
    """WordPress's add_query_arg(): set these query arguments, keep the others."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in args]
    return urlunsplit(parts._replace(query=urlencode(query + list(args.items()))))


# --- order payloads ------------------------------------------------------------------------------


def order_payload(
    *,
    order_id: int,
    store_url: str,
    status: str = "pending",
    currency: str = "USD",
    billing: dict[str, str] | None = None,
    shipping: dict[str, str] | None = None,
    line_items: Iterable[dict[str, Any]] = (),
    customer_id: int = 0,
    created_at: datetime | None = None,
    modified_at: datetime | None = None,
    timezone: str = "UTC",
    order_key: str | None = None,
    shipping_total: Decimal | str = "0",
    payment_method: str = "",
    payment_method_title: str = "",
    customer_note: str = "",
    meta_data: list[dict[str, Any]] | None = None,
    first_item_id: int | None = None,
) -> dict[str, Any]:
    """An order as `GET /wp-json/wc/v3/orders/<id>` (and so an order.* webhook) returns it.

    `line_items` entries take product_id, variation_id (0 for a simple product), name,
    quantity, price, and optionally sku, image_src, parent_name and meta_data. Totals are computed
    without tax or discounts. The fields of the docs' "Retrieve an order" example are all there,
    plus those newer WooCommerce adds (payment_url, is_editable, needs_payment, needs_processing,
    line item image and parent_name, taken from the wc/v3 orders controller)."""
    created = created_at or datetime.now(UTC)
    modified = modified_at or created
    key = order_key or f"wc_order_{secrets.token_hex(7)[:13]}"
    address_fields = (
        *("first_name", "last_name", "company", "address_1", "address_2", "city"),
        *("state", "postcode", "country"),
    )
    billing_out = {k: (billing or {}).get(k, "") for k in (*address_fields, "email", "phone")}
    shipping_out = {k: (shipping or {}).get(k, "") for k in (*address_fields, "phone")}
    item_ids = itertools.count(first_item_id or order_id * 10 + 1)
    items = []
    subtotal = Decimal(0)
    for item in line_items:
        quantity = int(item.get("quantity", 1))
        price = Decimal(str(item["price"]))
        line_total = price * quantity
        subtotal += line_total
        items.append(
            {
                "id": next(item_ids),
                "name": item["name"],
                "product_id": int(item["product_id"]),
                "variation_id": int(item.get("variation_id", 0)),
                "quantity": quantity,
                "tax_class": "",
                "subtotal": _money(line_total),
                "subtotal_tax": "0.00",
                "total": _money(line_total),
                "total_tax": "0.00",
                "taxes": [],
                "meta_data": list(item.get("meta_data") or []),
                "sku": item.get("sku") or "",
                "price": float(price),
                "image": {"id": item.get("image_id", 0), "src": item.get("image_src") or ""},
                "parent_name": item.get("parent_name"),
            }
        )
    total = subtotal + Decimal(str(shipping_total))
    paid = status in ("processing", "completed")
    return {
        "id": order_id,
        "parent_id": 0,
        "status": status,
        "currency": currency,
        "version": WC_VERSION,
        "prices_include_tax": False,
        **_dates("date_created", timezone, created),
        **_dates("date_modified", timezone, modified),
        "discount_total": "0.00",
        "discount_tax": "0.00",
        "shipping_total": _money(shipping_total),
        "shipping_tax": "0.00",
        "cart_tax": "0.00",
        "total": _money(total),
        "total_tax": "0.00",
        "customer_id": customer_id,
        "order_key": key,
        "billing": billing_out,
        "shipping": shipping_out,
        "payment_method": payment_method,
        "payment_method_title": payment_method_title,
        "transaction_id": "",
        "customer_ip_address": "",
        "customer_user_agent": "",
        "created_via": "checkout",
        "customer_note": customer_note,
        **_dates("date_completed", timezone, modified if status == "completed" else None),
        **_dates("date_paid", timezone, modified if paid else None),
        "cart_hash": "",
        "number": str(order_id),
        "meta_data": list(meta_data or []),
        "line_items": items,
        "tax_lines": [],
        "shipping_lines": [],
        "fee_lines": [],
        "coupon_lines": [],
        "refunds": [],
        "payment_url": (
            f"{store_url.rstrip('/')}/checkout/order-pay/{order_id}/?pay_for_order=true&key={key}"
        ),
        "is_editable": status in ("pending", "on-hold", "auto-draft"),
        "needs_payment": status in ("pending", "failed") and total > 0,
        "needs_processing": bool(items),
        "_links": _links(store_url.rstrip("/"), "orders", order_id),
    }


# --- webhook deliveries --------------------------------------------------------------------------


def hookshot_user_agent(wc_version: str = WC_VERSION, wp_version: str = WP_VERSION) -> str:
    return f"WooCommerce/{wc_version} Hookshot (WordPress/{wp_version})"


def webhook_headers(
    *,
    source: str,
    topic: str,
    webhook_id: int,
    secret: str,
    body: bytes,
    delivery_id: str | None = None,
    user_agent: str | None = None,
) -> dict[str, str]:
    """The headers `WC_Webhook::deliver()` sends. `source` is the site's home_url('/'), with the
    trailing slash. (The docs call the last one X-WC-Delivery-ID; the source sends
    X-WC-Webhook-Delivery-ID.)"""
    resource, _, event = topic.partition(".")
    return {
        "User-Agent": user_agent or hookshot_user_agent(),
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": source,
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-Signature": sign(body, secret),
        "X-WC-Webhook-ID": str(webhook_id),
        "X-WC-Webhook-Delivery-ID": delivery_id or secrets.token_hex(16),
    }


def webhook_body(topic: str, payload: dict[str, Any]) -> bytes:
    """The delivered body: the resource as the REST API returns it, or only `{"id": …}` for a
    deleted one (`WC_Webhook::build_payload()`)."""
    if topic.endswith(".deleted"):
        payload = {"id": payload.get("id")}
    return php_json_encode(payload).strip().encode()


def outbound_client(origin: str | None = None, *, timeout: float = 60.0) -> httpx.AsyncClient:
    """What the stand-in sends with: to the real URL, or to `origin` keeping the Host header."""
    if origin:
        return httpx.AsyncClient(timeout=timeout, transport=_OriginTransport(origin))
    return httpx.AsyncClient(timeout=timeout)


async def deliver(
    delivery_url: str,
    *,
    topic: str,
    payload: dict[str, Any],
    secret: str,
    webhook_id: int,
    source: str,
    origin: str | None = None,
) -> Delivery:
    """POST one signed delivery exactly as WooCommerce does (HTTP errors are recorded, not
    raised; redirects are not followed)."""
    body = webhook_body(topic, payload)
    headers = webhook_headers(
        source=source, topic=topic, webhook_id=webhook_id, secret=secret, body=body
    )
    delivery = Delivery("webhook", delivery_url, headers, body, webhook_id=webhook_id)
    async with outbound_client(origin) as client:
        await _send(client, delivery)
    return delivery


async def _send(client: httpx.AsyncClient, delivery: Delivery) -> None:
    try:
        response = await client.post(delivery.url, content=delivery.body, headers=delivery.headers)
    except httpx.HTTPError as error:
        delivery.error = f"{type(error).__name__}: {error}"
        return
    delivery.status = response.status_code


# --- the stand-in --------------------------------------------------------------------------------


class WooCommerceStandin:
    """In-memory WooCommerce stores: API keys, webhooks, coupons, products, orders, and every
    delivery sent."""

    def __init__(
        self,
        *,
        outbound_origin: str | None = None,
        wc_version: str = WC_VERSION,
        wp_version: str = WP_VERSION,
    ) -> None:
        self.outbound_origin = outbound_origin
        self.wc_version = wc_version
        self.wp_version = wp_version
        self.stores: dict[str, StandinStore] = {}
        self._ids = itertools.count(101)  # one sequence, like WordPress post IDs
        self._key_ids = itertools.count(1)
        self._nonces: set[str] = set()
        self._fail_next: list[int] = []
        self.app = Starlette(
            routes=[
                Route(
                    API_NAMESPACE + "/{path:path}",
                    self._api,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                ),
                Route("/wc-auth/v1/{route}", self._wc_auth, methods=["GET", "POST"]),
            ]
        )

    # --- set-up and inspection, for tests and the demo

    def add_store(
        self,
        domain: str,
        *,
        name: str = "Stand-in Store",
        currency: str = "USD",
        language: str = "en_US",
        timezone: str = "UTC",
        address_1: str = "60 29th Street #343",
        address_2: str = "",
        city: str = "San Francisco",
        state: str = "CA",
        postcode: str = "94110",
        country: str = "US",
        permissions: str = "read_write",
    ) -> StandinStore:
        """A store with one API key (`store.credentials`)."""
        store = StandinStore(
            domain=domain,
            name=name,
            currency=currency,
            language=language,
            timezone=timezone,
            address={
                "address_1": address_1,
                "address_2": address_2,
                "city": city,
                "state": state,
                "postcode": postcode,
                "country": country,
            },
        )
        self.stores[domain] = store
        self.add_key(domain, permissions=permissions)
        return store

    def add_key(
        self, domain: str, *, permissions: str = "read_write", description: str = ""
    ) -> StoreCredentials:
        key = ApiKey(
            key_id=next(self._key_ids),
            consumer_key=f"ck_{secrets.token_hex(20)}",
            consumer_secret=f"cs_{secrets.token_hex(20)}",
            permissions=permissions,
            description=description,
        )
        store = self.stores[domain]
        store.keys[key.consumer_key] = key
        return StoreCredentials(store.home_url, key.consumer_key, key.consumer_secret)

    def revoke_key(self, domain: str, consumer_key: str) -> None:
        """The merchant revoked the key: requests with it are anonymous from now on."""
        self.stores[domain].keys.pop(consumer_key, None)

    def fail_next(self, n: int, status: int = 503) -> None:
        """The next n REST requests (any store) fail with `status` and `Retry-After: 0`."""
        self._fail_next = [status] * n

    def add_product(
        self,
        domain: str,
        *,
        name: str,
        price: str,
        product_id: int | None = None,
        stock_status: str = "instock",
        stock_quantity: int | None = None,
        image_url: str | None = None,
        image_alt: str = "",
        sku: str = "",
        product_type: str = "simple",
    ) -> dict[str, Any]:
        store = self.stores[domain]
        pid = product_id or next(self._ids)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        now = datetime.now(UTC)
        images = [self._image(store, image_url, image_alt, now)] if image_url else []
        product = {
            "id": pid,
            "name": name,
            "slug": slug,
            "permalink": f"{store.home_url}/product/{slug}/",
            **_dates("date_created", store.timezone, now),
            **_dates("date_modified", store.timezone, now),
            "type": product_type,
            "status": "publish",
            "featured": False,
            "catalog_visibility": "visible",
            "description": "",
            "short_description": "",
            "sku": sku,
            "price": price,
            "regular_price": price,
            "sale_price": "",
            "on_sale": False,
            "purchasable": price != "",
            "total_sales": 0,
            "virtual": False,
            "downloadable": False,
            "tax_status": "taxable",
            "tax_class": "",
            "manage_stock": stock_quantity is not None,
            "stock_quantity": stock_quantity,
            "stock_status": stock_status,
            "backorders": "no",
            "backorders_allowed": False,
            "backordered": False,
            "categories": [],
            "tags": [],
            "images": images,
            "attributes": [],
            "variations": [],
            "meta_data": [],
            "_links": _links(store.home_url, "products", pid),
        }
        store.products[pid] = product
        return product

    def add_variation(
        self,
        domain: str,
        product_id: int,
        *,
        attributes: dict[str, str],
        price: str,
        variation_id: int | None = None,
        stock_status: str = "instock",
        stock_quantity: int | None = None,
        image_url: str | None = None,
        image_alt: str = "",
        sku: str = "",
    ) -> dict[str, Any]:
        store = self.stores[domain]
        parent = store.products[product_id]
        parent["type"] = "variable"
        vid = variation_id or next(self._ids)
        now = datetime.now(UTC)
        query = urlencode({f"attribute_{k.lower()}": v.lower() for k, v in attributes.items()})
        variation = {
            "id": vid,
            **_dates("date_created", store.timezone, now),
            **_dates("date_modified", store.timezone, now),
            "description": "",
            "permalink": f"{parent['permalink']}?{query}",
            "sku": sku,
            "price": price,
            "regular_price": price,
            "sale_price": "",
            "on_sale": False,
            "status": "publish",
            "purchasable": price != "",
            "virtual": False,
            "downloadable": False,
            "tax_status": "taxable",
            "tax_class": "",
            "manage_stock": stock_quantity is not None,
            "stock_quantity": stock_quantity,
            "stock_status": stock_status,
            "backorders": "no",
            "backorders_allowed": False,
            "backordered": False,
            "image": self._image(store, image_url, image_alt, now) if image_url else None,
            "attributes": [{"id": 0, "name": k, "option": v} for k, v in attributes.items()],
            "menu_order": 0,
            "meta_data": [],
            "_links": _links(
                store.home_url, f"products/{product_id}/variations", vid, f"products/{product_id}"
            ),
        }
        store.variations[vid] = {**variation, "parent_id": product_id}
        parent["variations"].append(vid)
        return variation

    def add_order(self, domain: str, **fields: Any) -> dict[str, Any]:
        """An order in the store (see `order_payload` for the fields); returns its REST shape."""
        store = self.stores[domain]
        order_id = int(fields.pop("order_id", 0)) or next(self._ids)
        fields.setdefault("currency", store.currency)
        fields.setdefault("timezone", store.timezone)
        order = order_payload(order_id=order_id, store_url=store.home_url, **fields)
        store.orders[order_id] = order
        return order

    def add_webhook(
        self,
        domain: str,
        *,
        topic: str,
        delivery_url: str,
        secret: str = "",
        status: str = "active",
        name: str = "",
    ) -> dict[str, Any]:
        """A webhook made earlier (e.g. by the merchant in the admin), without a ping."""
        now = datetime.now(UTC)
        hook_id = next(self._ids)
        resource, _, event = topic.partition(".")
        hook = {
            "id": hook_id,
            "name": name or f"Webhook created on {now:%b %d, %Y @ %I:%M %p}",
            "status": status,
            "topic": topic,
            "resource": resource,
            "event": event,
            "hooks": TOPIC_HOOKS.get(topic, [topic.removeprefix("action.")]),
            "delivery_url": delivery_url,
            "secret": secret or secrets.token_urlsafe(38)[:50],
            "failure_count": 0,
            "pending_delivery": False,
            "api_version": 3,
            "created": now,
            "modified": now,
        }
        self.stores[domain].webhooks[hook_id] = hook
        return hook

    def webhooks(self, domain: str) -> list[dict[str, Any]]:
        """Every webhook, including its secret and failure count (which the API never shows)."""
        return [dict(hook) for hook in self.stores[domain].webhooks.values()]

    def coupons(self, domain: str) -> list[dict[str, Any]]:
        return [dict(coupon) for coupon in self.stores[domain].coupons.values()]

    def requests(self, domain: str) -> list[dict[str, Any]]:
        return list(self.stores[domain].requests)

    def deliveries(self, domain: str) -> list[Delivery]:
        return list(self.stores[domain].deliveries)

    def _image(self, store: StandinStore, src: str, alt: str, moment: datetime) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            **_dates("date_created", store.timezone, moment),
            **_dates("date_modified", store.timezone, moment),
            "src": src,
            "name": src.rsplit("/", 1)[-1].rsplit(".", 1)[0],
            "alt": alt,
        }

    # --- webhooks going out

    @property
    def user_agent(self) -> str:
        return hookshot_user_agent(self.wc_version, self.wp_version)

    async def fire(self, domain: str, topic: str, payload: dict[str, Any]) -> list[Delivery]:
        """Deliver `payload` to every active webhook of the store on `topic`, signed with each
        one's secret, and count failures as WooCommerce does (a webhook that keeps failing is
        disabled). Returns the deliveries made."""
        store = self.stores[domain]
        hooks = [
            h for h in store.webhooks.values() if h["status"] == "active" and h["topic"] == topic
        ]
        made = []
        async with outbound_client(self.outbound_origin) as client:
            for hook in hooks:
                body = webhook_body(topic, payload)
                delivery_id = hmac.new(
                    b"standin-salt",
                    f"{hook['id']}{int(datetime.now(UTC).timestamp())}".encode(),
                    "md5",
                ).hexdigest()
                headers = webhook_headers(
                    source=f"{store.home_url}/",
                    topic=topic,
                    webhook_id=hook["id"],
                    secret=hook["secret"],
                    body=body,
                    delivery_id=delivery_id,
                    user_agent=self.user_agent,
                )
                delivery = Delivery("webhook", hook["delivery_url"], headers, body, hook["id"])
                await _send(client, delivery)
                self._count_delivery(hook, delivery)
                store.deliveries.append(delivery)
                made.append(delivery)
        return made

    def _count_delivery(self, hook: dict[str, Any], delivery: Delivery) -> None:
        # WC_Webhook::log_delivery(): 2xx, 301 and 302 are successes.
        if delivery.status is not None and 200 <= delivery.status < 303:
            hook["failure_count"] = 0
        elif hook["failure_count"] > MAX_DELIVERY_FAILURES:
            hook["status"] = "disabled"
        else:
            hook["failure_count"] += 1

    async def _ping(self, store: StandinStore, hook: dict[str, Any]) -> Delivery:
        """WC_Webhook::deliver_ping(): a form body `webhook_id=N` with only the User-Agent (no
        X-WC-Webhook-* headers, no signature). wp_safe_remote_post sends a string body through
        cURL, which labels it application/x-www-form-urlencoded."""
        delivery = Delivery(
            "ping",
            hook["delivery_url"],
            {"User-Agent": self.user_agent, "Content-Type": "application/x-www-form-urlencoded"},
            f"webhook_id={hook['id']}".encode(),
            webhook_id=hook["id"],
        )
        async with outbound_client(self.outbound_origin, timeout=10.0) as client:
            await _send(client, delivery)
        if delivery.status == 200:
            hook["pending_delivery"] = False
        store.deliveries.append(delivery)
        return delivery

    # --- REST API

    def _store(self, request: Request) -> StandinStore | None:
        host = request.headers.get("host", "").split(":")[0].lower()
        return self.stores.get(host)

    def _authenticate(
        self, store: StandinStore, request: Request
    ) -> ApiKey | WPJSONResponse | None:
        """WC_REST_Authentication::perform_basic_authentication(): an unknown key leaves the
        request anonymous (the route's permission check then answers 401); a wrong secret or a
        missing read/write permission is an authentication error."""
        key = secret = None
        header = request.headers.get("authorization", "")
        if request.query_params.get("consumer_key") and request.query_params.get("consumer_secret"):
            key = request.query_params["consumer_key"]
            secret = request.query_params["consumer_secret"]
        elif header.lower().startswith("basic "):
            try:
                key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                key = secret = None
        if not key or not secret or key not in store.keys:
            return None
        api_key = store.keys[key]
        if not hmac.compare_digest(api_key.consumer_secret, secret):
            return self._auth_error("Consumer secret is invalid.")
        needed = "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"
        if needed not in api_key.permissions:
            return self._auth_error(f"The API key provided does not have {needed} permissions.")
        return api_key

    def _auth_error(self, message: str) -> WPJSONResponse:
        response = wp_error(401, "woocommerce_rest_authentication_error", message)
        response.headers["WWW-Authenticate"] = BASIC_REALM
        return response

    async def _api(self, request: Request) -> Response:
        store = self._store(request)
        path = request.path_params["path"].strip("/")
        if store is None:
            return _no_route()
        try:
            body = await request.json() if await request.body() else None
        except json.JSONDecodeError:
            return wp_error(400, "rest_invalid_json", "Invalid JSON body passed.")
        store.requests.append(
            {
                "method": request.method,
                "path": "/" + path,
                "query": dict(request.query_params),
                "json": body,
            }
        )
        if self._fail_next:
            status = self._fail_next.pop(0)
            response = wp_error(status, "standin_unavailable", "Service temporarily unavailable.")
            response.headers["Retry-After"] = "0"
            return response
        key = self._authenticate(store, request)
        if isinstance(key, Response):
            return key
        parts = path.split("/")
        routes = {
            "webhooks": self._webhooks,
            "coupons": self._coupons,
            "products": self._products,
            "orders": self._orders,
            "settings": self._settings,
            "system_status": self._system_status,
        }
        handler = routes.get(parts[0])
        if handler is None:
            return _no_route()
        if key is None:
            return _cannot(request.method, listing=len(parts) == 1)
        if body is not None and not isinstance(body, dict):
            return wp_error(400, "rest_invalid_json", "Invalid JSON body passed.")
        return await handler(store, request, parts[1:], body or {})

    # webhooks

    async def _webhooks(
        self, store: StandinStore, request: Request, rest: list[str], body: dict[str, Any]
    ) -> Response:
        method = request.method
        if not rest:
            if method == "GET":
                status = request.query_params.get("status", "all")
                items = [
                    h for h in store.webhooks.values() if status == "all" or h["status"] == status
                ]
                items.sort(key=lambda h: h["id"], reverse=True)  # orderby date, desc
                return self._page(
                    request, store, "webhooks", [self._webhook_json(store, h) for h in items]
                )
            if method == "POST":
                return await self._create_webhook(store, body)
            return _no_route()
        if len(rest) != 1 or not rest[0].isdigit():
            return _no_route()
        hook = store.webhooks.get(int(rest[0]))
        if method == "GET":
            if hook is None:
                return wp_error(404, "woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.")
            return WPJSONResponse(self._webhook_json(store, hook))
        if method in ("PUT", "PATCH", "POST"):
            if hook is None:
                return wp_error(400, "woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.")
            return self._update_webhook(store, hook, body)
        if method == "DELETE":
            if str(request.query_params.get("force", "")).lower() not in ("true", "1"):
                return wp_error(
                    501, "woocommerce_rest_trash_not_supported", "Webhooks do not support trashing."
                )
            if hook is None:
                return wp_error(404, "woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.")
            answer = self._webhook_json(store, hook)
            del store.webhooks[hook["id"]]
            return WPJSONResponse(answer)
        return _no_route()

    async def _create_webhook(self, store: StandinStore, body: dict[str, Any]) -> Response:
        missing = [name for name in ("topic", "delivery_url") if not body.get(name)]
        if missing:
            return wp_error(
                400,
                "rest_missing_callback_param",
                f"Missing parameter(s): {', '.join(missing)}",
                params=missing,
            )
        topic = str(body["topic"]).lower()
        if topic not in TOPIC_HOOKS and not topic.startswith("action."):
            return wp_error(
                400,
                "woocommerce_rest_shop_webhook_invalid_topic",
                "Webhook topic is required and must be valid.",
            )
        url = str(body["delivery_url"])
        if not re.match(r"^https?://[^/\s]+", url):
            return wp_error(
                400,
                "woocommerce_rest_shop_webhook_invalid_delivery_url",
                "Webhook delivery URL must be a valid URL starting with http:// or https://.",
            )
        status = str(body.get("status") or "active")
        if status not in WEBHOOK_STATUSES:
            return _invalid_param("status", "status is not one of active, paused, and disabled.")
        # Without a secret WooCommerce generates one (wp_generate_password(50, true, true)).
        hook = self.add_webhook(
            store.domain,
            topic=topic,
            delivery_url=url,
            secret=str(body.get("secret") or ""),
            status=status,
            name=str(body.get("name") or ""),
        )
        hook["pending_delivery"] = True
        hook_id = hook["id"]
        answer = self._webhook_json(store, hook)
        await self._ping(store, hook)  # sent before the 201, its outcome ignored
        response = WPJSONResponse(answer, status_code=201)
        response.headers["Location"] = f"{store.home_url}{API_NAMESPACE}/webhooks/{hook_id}"
        return response

    def _update_webhook(
        self, store: StandinStore, hook: dict[str, Any], body: dict[str, Any]
    ) -> Response:
        if body.get("topic"):
            topic = str(body["topic"]).lower()
            if topic not in TOPIC_HOOKS:
                return wp_error(
                    400,
                    "woocommerce_rest_shop_webhook_invalid_topic",
                    "Webhook topic must be valid.",
                )
            hook["topic"] = topic
            hook["resource"], _, hook["event"] = topic.partition(".")
            hook["hooks"] = TOPIC_HOOKS[topic]
        if body.get("delivery_url"):
            hook["delivery_url"] = str(body["delivery_url"])
        if body.get("secret"):
            hook["secret"] = str(body["secret"])
        if body.get("status"):
            if body["status"] not in WEBHOOK_STATUSES:
                return wp_error(
                    400,
                    "woocommerce_rest_shop_webhook_invalid_status",
                    "Webhook status must be valid.",
                )
            hook["status"] = body["status"]
            if hook["status"] == "active":
                hook["failure_count"] = 0
        if body.get("name"):
            hook["name"] = str(body["name"])
        hook["modified"] = datetime.now(UTC)
        return WPJSONResponse(self._webhook_json(store, hook))

    def _webhook_json(self, store: StandinStore, hook: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": hook["id"],
            "name": hook["name"],
            "status": hook["status"],
            "topic": hook["topic"],
            "resource": hook["resource"],
            "event": hook["event"],
            "hooks": hook["hooks"],
            "delivery_url": hook["delivery_url"],
            **_dates("date_created", store.timezone, hook["created"]),
            **_dates("date_modified", store.timezone, hook["modified"]),
            "_links": _links(store.home_url, "webhooks", hook["id"]),
        }

    # coupons

    async def _coupons(
        self, store: StandinStore, request: Request, rest: list[str], body: dict[str, Any]
    ) -> Response:
        if rest:
            if len(rest) == 1 and rest[0].isdigit() and request.method == "GET":
                coupon = store.coupons.get(int(rest[0]))
                if coupon is None:
                    return wp_error(404, "woocommerce_rest_shop_coupon_invalid_id", "Invalid ID.")
                return WPJSONResponse(coupon)
            return _no_route()
        if request.method == "GET":
            items = sorted(store.coupons.values(), key=lambda c: c["id"], reverse=True)
            code = request.query_params.get("code")
            if code:
                items = [c for c in items if c["code"] == _coupon_code(code)]
            return self._page(request, store, "coupons", items)
        if request.method != "POST":
            return _no_route()
        return self._create_coupon(store, body)

    def _create_coupon(self, store: StandinStore, body: dict[str, Any]) -> Response:
        if not body.get("code"):
            return wp_error(
                400, "rest_missing_callback_param", "Missing parameter(s): code", params=["code"]
            )
        discount_type = body.get("discount_type", "fixed_cart")
        if discount_type not in COUPON_TYPES:
            return _invalid_param(
                "discount_type",
                "discount_type is not one of percent, fixed_cart, and fixed_product.",
            )
        code = _coupon_code(str(body["code"]))
        if any(c["code"] == code for c in store.coupons.values()):
            return wp_error(
                400, "woocommerce_rest_coupon_code_already_exists", "The coupon code already exists"
            )
        expires = None
        if body.get("date_expires"):
            try:
                expires = datetime.fromisoformat(str(body["date_expires"]))
            except ValueError:
                return _invalid_param("date_expires", "Invalid date.")
            if expires.tzinfo is None:  # no offset: the site's time zone
                expires = expires.replace(tzinfo=ZoneInfo(store.timezone))
        now = datetime.now(UTC)
        coupon_id = next(self._ids)

        def limit(name: str) -> int | None:
            return int(body[name]) if body.get(name) else None

        coupon = {
            "id": coupon_id,
            "code": code,
            "amount": _money(body.get("amount") or 0),
            "status": "publish",
            **_dates("date_created", store.timezone, now),
            **_dates("date_modified", store.timezone, now),
            "discount_type": discount_type,
            "description": str(body.get("description") or ""),
            **_dates("date_expires", store.timezone, expires),
            "usage_count": 0,
            "individual_use": bool(body.get("individual_use", False)),
            "product_ids": list(body.get("product_ids") or []),
            "excluded_product_ids": list(body.get("excluded_product_ids") or []),
            "usage_limit": limit("usage_limit"),
            "usage_limit_per_user": limit("usage_limit_per_user"),
            "limit_usage_to_x_items": limit("limit_usage_to_x_items"),
            "free_shipping": bool(body.get("free_shipping", False)),
            "product_categories": list(body.get("product_categories") or []),
            "excluded_product_categories": list(body.get("excluded_product_categories") or []),
            "exclude_sale_items": bool(body.get("exclude_sale_items", False)),
            "minimum_amount": _money(body.get("minimum_amount") or 0),
            "maximum_amount": _money(body.get("maximum_amount") or 0),
            "email_restrictions": [str(e).lower() for e in body.get("email_restrictions") or []],
            "used_by": [],
            "meta_data": list(body.get("meta_data") or []),
            "_links": _links(store.home_url, "coupons", coupon_id),
        }
        store.coupons[coupon_id] = coupon
        return WPJSONResponse(coupon, status_code=201)

    # products

    async def _products(
        self, store: StandinStore, request: Request, rest: list[str], body: dict[str, Any]
    ) -> Response:
        if request.method != "GET":
            return _no_route()
        if not rest:
            return self._collection(request, store, "products", list(store.products.values()))
        if not rest[0].isdigit() or int(rest[0]) not in store.products:
            return wp_error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        product_id = int(rest[0])
        if len(rest) == 1:
            return WPJSONResponse(store.products[product_id])
        if rest[1] != "variations":
            return _no_route()
        variations = [
            {k: v for k, v in item.items() if k != "parent_id"}
            for item in store.variations.values()
            if item["parent_id"] == product_id
        ]
        if len(rest) == 2:
            return self._collection(request, store, f"products/{product_id}/variations", variations)
        found = [v for v in variations if str(v["id"]) == rest[2]]
        if len(rest) != 3 or not found:
            return wp_error(404, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")
        return WPJSONResponse(found[0])

    def _collection(
        self, request: Request, store: StandinStore, path: str, items: list[dict[str, Any]]
    ) -> Response:
        include = _id_list(request, "include")
        if include is None:
            return _invalid_param("include", "include[0] is not of type integer.")
        if include:
            items = [item for item in items if item["id"] in include]
        items = sorted(items, key=lambda item: item["id"], reverse=True)
        return self._page(request, store, path, items)

    # orders

    async def _orders(
        self, store: StandinStore, request: Request, rest: list[str], body: dict[str, Any]
    ) -> Response:
        if not rest:
            if request.method != "GET":
                return _no_route()
            return self._collection(request, store, "orders", list(store.orders.values()))
        order = store.orders.get(int(rest[0])) if rest[0].isdigit() else None
        if order is None or len(rest) != 1:
            return wp_error(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        if request.method == "GET":
            return WPJSONResponse(order)
        if request.method not in ("POST", "PUT", "PATCH"):
            return _no_route()
        if "coupon_lines" in body:
            error = self._set_coupons(store, order, body["coupon_lines"])
            if error is not None:
                return error
        order["date_modified_gmt"] = _gmt(datetime.now(UTC))
        return WPJSONResponse(order)

    def _set_coupons(
        self, store: StandinStore, order: dict[str, Any], lines: Any
    ) -> WPJSONResponse | None:
        """WC_REST_Orders_Controller::calculate_coupons: validate each new code as
        WC_Discounts::is_coupon_valid does, then replace the order's coupons and totals."""
        if not isinstance(lines, list):
            return _invalid_param("coupon_lines", "coupon_lines is not of type array.")
        current = {line["code"] for line in order["coupon_lines"]}
        coupons = []
        for line in lines:
            if not isinstance(line, dict):
                return _invalid_param("coupon_lines[0]", "coupon_lines[0] is not of type object.")
            if line.get("id"):
                return wp_error(
                    400, "woocommerce_rest_coupon_item_id_readonly", "Coupon item ID is readonly."
                )
            code = _coupon_code(str(line.get("code") or ""))
            if not code:
                return wp_error(400, "woocommerce_rest_invalid_coupon", "Coupon code is required.")
            coupon = next((c for c in store.coupons.values() if c["code"] == code), None)
            problem = self._coupon_problem(order, code, coupon) if code not in current else None
            if problem is not None:
                return wp_error(400, "woocommerce_rest_invalid_coupon", problem)
            assert coupon is not None or code in current
            coupons.append(coupon or {"code": code, "discount_type": "fixed_cart", "amount": "0"})
        subtotal = sum((Decimal(item["subtotal"]) for item in order["line_items"]), Decimal(0))
        discounts = [_discount(coupon, subtotal) for coupon in coupons]
        order["coupon_lines"] = [
            {
                "id": next(self._ids),
                "code": coupon["code"],
                "discount": _money(amount),
                "discount_tax": "0.00",
                "meta_data": [],
            }
            for coupon, amount in zip(coupons, discounts, strict=True)
        ]
        discount = min(sum(discounts, Decimal(0)), subtotal)
        order["discount_total"] = _money(discount)
        order["total"] = _money(subtotal - discount + Decimal(order["shipping_total"]))
        return None

    def _coupon_problem(
        self, order: dict[str, Any], code: str, coupon: dict[str, Any] | None
    ) -> str | None:
        if coupon is None:
            return f'Coupon "{code}" does not exist!'
        expires = coupon.get("date_expires_gmt")
        if expires and datetime.fromisoformat(expires).replace(tzinfo=UTC) < datetime.now(UTC):
            return "This coupon has expired."
        if coupon["usage_limit"] and coupon["usage_count"] >= coupon["usage_limit"]:
            return "Coupon usage limit has been reached."
        email = str(order["billing"].get("email") or "").lower()
        if coupon["email_restrictions"] and email not in coupon["email_restrictions"]:
            return f'Sorry, it seems the coupon "{code}" is not yours.'
        subtotal = sum((Decimal(item["subtotal"]) for item in order["line_items"]), Decimal(0))
        minimum = Decimal(coupon["minimum_amount"])
        if minimum and subtotal < minimum:
            return f"The minimum spend for this coupon is {_money(minimum)}."
        return None

    # settings and system status

    async def _settings(
        self, store: StandinStore, request: Request, rest: list[str], body: dict[str, Any]
    ) -> Response:
        if request.method != "GET" or rest != ["general"]:
            return _no_route()
        a = store.address
        country = f"{a['country']}:{a['state']}" if a.get("state") else a["country"]
        options = [
            ("woocommerce_store_address", "Address line 1", "text", "", a["address_1"]),
            ("woocommerce_store_address_2", "Address line 2", "text", "", a["address_2"]),
            ("woocommerce_store_city", "City", "text", "", a["city"]),
            ("woocommerce_default_country", "Country / State", "select", "US:CA", country),
            ("woocommerce_store_postcode", "Postcode / ZIP", "text", "", a["postcode"]),
            ("woocommerce_allowed_countries", "Selling location(s)", "select", "all", "all"),
            ("woocommerce_currency", "Currency", "select", "USD", store.currency),
            ("woocommerce_currency_pos", "Currency position", "select", "left", "left"),
            ("woocommerce_price_thousand_sep", "Thousand separator", "text", ",", ","),
            ("woocommerce_price_decimal_sep", "Decimal separator", "text", ".", "."),
            ("woocommerce_price_num_decimals", "Number of decimals", "number", "2", "2"),
        ]
        base = f"{store.home_url}{API_NAMESPACE}/settings/general"
        return WPJSONResponse(
            [
                {
                    "id": option_id,
                    "label": label,
                    "description": "",
                    "type": kind,
                    "default": default,
                    "tip": "",
                    "value": value,
                    "_links": {
                        "self": [{"href": f"{base}/{option_id}"}],
                        "collection": [{"href": base}],
                    },
                }
                for option_id, label, kind, default, value in options
            ]
        )

    async def _system_status(
        self, store: StandinStore, request: Request, rest: list[str], body: dict[str, Any]
    ) -> Response:
        if request.method != "GET" or rest:
            return _no_route()
        status = {
            "environment": {
                "home_url": store.home_url,
                "site_url": store.home_url,
                "version": self.wc_version,
                "wp_version": self.wp_version,
                "wp_multisite": False,
                "wp_debug_mode": False,
                "wp_cron": True,
                "language": store.language,
                "default_timezone": "UTC",
            },
            "settings": {
                "api_enabled": True,
                "force_ssl": False,
                "currency": store.currency,
                "currency_position": "left",
                "thousand_separator": ",",
                "decimal_separator": ".",
                "number_of_decimals": 2,
                "geolocation_enabled": False,
            },
            "security": {"secure_connection": True, "hide_errors": True},
        }
        fields = request.query_params.get("_fields")
        return WPJSONResponse(_only_fields(status, fields) if fields else status)

    def _page(
        self, request: Request, store: StandinStore, path: str, items: list[dict[str, Any]]
    ) -> Response:
        """A WP REST collection page with X-WP-Total, X-WP-TotalPages and Link headers."""
        try:
            per_page = int(request.query_params.get("per_page", "10"))
        except ValueError:
            return _invalid_param("per_page", "per_page is not of type integer.")
        if not 1 <= per_page <= MAX_PER_PAGE:
            return _invalid_param(
                "per_page", f"per_page must be between 1 (inclusive) and {MAX_PER_PAGE} (inclusive)"
            )
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            return _invalid_param("page", "page is not of type integer.")
        if page < 1:
            return _invalid_param("page", "page must be greater than or equal to 1")
        total_pages = max(1, math.ceil(len(items) / per_page)) if items else 0
        window = items[(page - 1) * per_page : page * per_page]
        response = WPJSONResponse(window)
        response.headers["X-WP-Total"] = str(len(items))
        response.headers["X-WP-TotalPages"] = str(total_pages)
        base = f"{store.home_url}{API_NAMESPACE}/{path}"
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        links = []
        if page > 1:
            links.append(f'<{base}?{urlencode({**query, "page": page - 1})}>; rel="prev"')
        if total_pages > page:
            links.append(f'<{base}?{urlencode({**query, "page": page + 1})}>; rel="next"')
        if links:
            response.headers["Link"] = ", ".join(links)
        return response

    # --- wc-auth: the application authentication endpoint

    def _auth_params(self, query: dict[str, str]) -> dict[str, str]:
        """WC_Auth::make_validation()."""
        for name in ("app_name", "user_id", "return_url", "callback_url", "scope"):
            if not query.get(name):
                raise WcAuthError(f"Missing parameter {name}")
        if query["scope"] not in AUTH_SCOPES:
            raise WcAuthError(f"Invalid scope {query['scope']}")
        params = dict(query)
        for name in ("return_url", "callback_url"):
            url = _formatted_url(query[name])
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise WcAuthError(f"The {url} is not a valid URL")
            params[name] = url
        if not params["callback_url"].lower().startswith("https://"):
            raise WcAuthError("The callback_url needs to be over SSL")
        return params

    def _auth_store(self, url: str) -> tuple[StandinStore, dict[str, str]]:
        parts = urlsplit(url)
        store = self.stores.get((parts.hostname or "").lower())
        if store is None:
            raise WcAuthError(f"no stand-in store at {parts.hostname}")
        return store, dict(parse_qsl(parts.query, keep_blank_values=True))

    async def approve(self, authorize_url: str) -> str:
        """The logged-in merchant opens `authorize_url` (https://STORE/wc-auth/v1/authorize?…)
        and clicks Approve: WooCommerce creates a key, POSTs it as JSON to callback_url
        (`{"key_id", "user_id", "consumer_key", "consumer_secret", "key_permissions"}`; user_id is
        the app's, echoed as the string it was given) and, when that answers 200, redirects to
        return_url with success=1&user_id=…, which is returned. Raises WcAuthError as WooCommerce
        would `wp_die` (bad parameters, or a callback that did not answer 200)."""
        store, query = self._auth_store(authorize_url)
        return await self._grant(store, self._auth_params(query))

    async def deny(self, authorize_url: str) -> str:
        """The merchant clicks Deny: the page's link to return_url with success=0&user_id=…"""
        _store, query = self._auth_store(authorize_url)
        params = self._auth_params(query)
        return _add_query_arg(params["return_url"], {"success": "0", "user_id": params["user_id"]})

    async def _grant(self, store: StandinStore, params: dict[str, str]) -> str:
        scope = params["scope"]
        key = ApiKey(
            key_id=next(self._key_ids),
            consumer_key=f"ck_{secrets.token_hex(20)}",
            consumer_secret=f"cs_{secrets.token_hex(20)}",
            permissions=scope,
            description=f"{params['app_name'][:170]} - API ({datetime.now(UTC):%Y-%m-%d %H:%M:%S})",
        )
        store.keys[key.consumer_key] = key
        consumer_data = {
            "key_id": key.key_id,
            "user_id": params["user_id"],
            "consumer_key": key.consumer_key,
            "consumer_secret": key.consumer_secret,
            "key_permissions": scope,
        }
        delivery = Delivery(
            "auth_callback",
            params["callback_url"],
            {
                "User-Agent": f"WordPress/{self.wp_version}; {store.home_url}",
                "Content-Type": "application/json;charset=UTF-8",
            },
            php_json_encode(consumer_data).encode(),
        )
        async with outbound_client(self.outbound_origin) as client:
            await _send(client, delivery)
        store.deliveries.append(delivery)
        if delivery.status != 200:
            del store.keys[key.consumer_key]  # WC_Auth::maybe_delete_key()
            if delivery.error:
                raise WcAuthError(delivery.error)
            raise WcAuthError(
                "An error occurred in the request and at the time were unable to send the "
                "consumer data"
            )
        return _add_query_arg(params["return_url"], {"success": "1", "user_id": params["user_id"]})

    async def _wc_auth(self, request: Request) -> Response:
        """GET /wc-auth/v1/{login,authorize,access_granted} for a merchant who is logged in."""
        store = self._store(request)
        route = request.path_params["route"].lower()
        try:
            if store is None:
                raise WcAuthError("You do not have permission to access this page")
            params = self._auth_params(dict(request.query_params))
            if route == "login":
                return RedirectResponse(_auth_url(store, "authorize", params), status_code=302)
            if route == "authorize":
                nonce = secrets.token_hex(5)
                self._nonces.add(nonce)
                granted = _add_query_arg(
                    _auth_url(store, "access_granted", params), {"wc_auth_nonce": nonce}
                )
                denied = _add_query_arg(
                    params["return_url"], {"success": "0", "user_id": params["user_id"]}
                )
                app_name = html.escape(params["app_name"])
                return HTMLResponse(
                    f"<h1>{app_name} would like to connect to your store</h1>"
                    f'<a class="wc-auth-approve" href="{html.escape(granted)}">Approve</a> '
                    f'<a class="wc-auth-deny" href="{html.escape(denied)}">Deny</a>'
                )
            if route == "access_granted":
                nonce = request.query_params.get("wc_auth_nonce", "")
                if nonce not in self._nonces:
                    raise WcAuthError("Invalid nonce verification")
                self._nonces.discard(nonce)
                return RedirectResponse(await self._grant(store, params), status_code=302)
            raise WcAuthError("You do not have permission to access this page")
        except WcAuthError as error:
            return HTMLResponse(f"<p>Error: {html.escape(str(error))}.</p>", status_code=401)


def _discount(coupon: dict[str, Any], subtotal: Decimal) -> Decimal:
    amount = Decimal(coupon["amount"])
    if coupon["discount_type"] == "percent":
        return (subtotal * amount / 100).quantize(Decimal("0.01"))
    return min(amount, subtotal)


def _coupon_code(code: str) -> str:
    """wc_format_coupon_code() and the lower-casing WooCommerce applies to coupon codes."""
    return html.unescape(code).strip().lower()


def _formatted_url(url: str) -> str:
    """WC_Auth::get_formatted_url(): decoded, and https:// when it has no scheme."""
    url = unquote(url)
    return url if "://" in url else f"https://{url}"


def _auth_url(store: StandinStore, route: str, params: dict[str, str]) -> str:
    query = {k: params[k] for k in ("app_name", "user_id", "return_url", "callback_url", "scope")}
    return f"{store.home_url}/wc-auth/v1/{route}?{urlencode(query)}"


def _id_list(request: Request, name: str) -> set[int] | None:
    raw = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    values = [v.strip() for item in raw for v in item.split(",") if v.strip()]
    if not all(v.isdigit() for v in values):
        return None
    return {int(v) for v in values}


def _only_fields(value: dict[str, Any], fields: str) -> dict[str, Any]:
    """WordPress's `_fields`: keep only these (dotted paths reach into nested objects)."""
    kept: dict[str, Any] = {}
    for path in (p.strip() for p in fields.split(",") if p.strip()):
        source: Any = value
        target = kept
        names = path.split(".")
        for name in names[:-1]:
            if not isinstance(source, dict) or name not in source:
                break
            source = source[name]
            target = target.setdefault(name, {})
        else:
            if isinstance(source, dict) and names[-1] in source:
                target[names[-1]] = source[names[-1]]
    return kept


def _no_route() -> WPJSONResponse:
    return wp_error(404, "rest_no_route", "No route was found matching the URL and request method.")


def _cannot(method: str, *, listing: bool) -> WPJSONResponse:
    """The permission-check errors a request without a valid key gets (401: not logged in)."""
    if method == "GET":
        message = (
            "Sorry, you cannot list resources."
            if listing
            else "Sorry, you cannot view this resource."
        )
        return wp_error(401, "woocommerce_rest_cannot_view", message)
    if method == "POST":
        return wp_error(
            401, "woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."
        )
    if method == "DELETE":
        return wp_error(
            401,
            "woocommerce_rest_cannot_delete",
            "Sorry, you are not allowed to delete this resource.",
        )
    return wp_error(
        401, "woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."
    )


# --- running it ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(standin: WooCommerceStandin, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run the stand-in on a free port of `host`; yields its origin URL."""
    async with serve_app(standin.app, host) as origin:
        yield origin
