"""Rebound's WooCommerce REST API client (`/wp-json/wc/v3`): webhooks, coupons, products and the
store's settings.

Shapes follow the WooCommerce REST API docs (woocommerce.github.io/woocommerce-rest-api-docs,
"wp-api-v3") and, where the docs are silent, WooCommerce's own source:

- Authentication: HTTP Basic with the consumer key and secret, which the docs allow over HTTPS
  only (plain HTTP needs OAuth 1.0a signatures, which Rebound does not implement). A store URL
  that is not https:// is refused so that the secret never travels in clear.
- Errors: `{"code": ..., "message": ..., "data": {"status": ...}}` with the HTTP status.
- Collections: `per_page` (at most 100) and `page`, with `X-WP-Total` / `X-WP-TotalPages`.

Point the client at a local stand-in with WOOCOMMERCE_API_ORIGIN (see `woocommerce_http_client`).
"""

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from app.settings import get_settings
from integrations.shopify.admin import _OriginTransport

API_NAMESPACE = "/wp-json/wc/v3"
MAX_PER_PAGE = 100  # WordPress REST collections refuse per_page above 100.
WEBHOOK_TOPICS = (
    "order.created",
    "order.updated",
    "order.deleted",
    "customer.created",
    "customer.updated",
)
# Transient refusals (rate limits, a busy PHP pool) are retried with bounded waits.
MAX_RETRIES = 3
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_WAIT = 10.0

# WooCommerce's core topics are resource.event (wc_is_webhook_valid_topic); custom ones action.*.
_TOPIC = re.compile(r"^(coupon|customer|order|product)\.(created|updated|deleted|restored)$")
_COUPON_EXISTS = "woocommerce_rest_coupon_code_already_exists"

DiscountKind = Literal["percentage", "fixed_amount", "free_shipping"]
StockStatus = Literal["instock", "outofstock", "onbackorder"]


@dataclass(frozen=True)
class StoreCredentials:
    """A store's address and REST API key. `base_url` is the WordPress home URL, e.g.
    "https://store.example" (a sub-folder install keeps its path: "https://example.com/shop")."""

    base_url: str
    consumer_key: str
    consumer_secret: str = field(repr=False)


class WooCommerceApiError(Exception):
    """WooCommerce refused or failed a request. `code` and `message` are WooCommerce's (or
    WordPress's) error code and text when the body had them, `data` the error's `data` object."""

    def __init__(
        self, status: int, code: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.data = data or {}


class WooCommerceUnauthorized(WooCommerceApiError):
    """401: the key is unknown or revoked (`woocommerce_rest_cannot_view` and friends, as the
    request is then anonymous), its secret is wrong, or it lacks read/write permission
    (`woocommerce_rest_authentication_error`)."""


# --- HTTP ----------------------------------------------------------------------------------------


def woocommerce_http_client() -> httpx.AsyncClient:
    """An HTTP client for stores: direct, or to WOOCOMMERCE_API_ORIGIN when it is set (every
    request's scheme, host and port move there; the Host header keeps the store's host)."""
    origin = get_settings().woocommerce_api_origin
    if origin:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WOOCOMMERCE_API_ORIGIN must be an http(s) origin, got {origin!r}")
        return httpx.AsyncClient(timeout=30.0, transport=_OriginTransport(origin))
    return httpx.AsyncClient(timeout=30.0)


def api_url(store: StoreCredentials, path: str) -> str:
    """The absolute URL of a wc/v3 route, e.g. api_url(store, "/webhooks")."""
    parts = urlsplit(store.base_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(
            f"not an https:// store URL: {store.base_url!r} (Basic auth is only safe over HTTPS)"
        )
    return f"{store.base_url.rstrip('/')}{API_NAMESPACE}/{path.lstrip('/')}"


def _error(response: httpx.Response) -> WooCommerceApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code, message = body["code"], str(body.get("message") or "")
        data = body.get("data") if isinstance(body.get("data"), dict) else None
    else:
        code, message, data = f"http_{response.status_code}", response.text[:200], None
    kind = WooCommerceUnauthorized if response.status_code == 401 else WooCommerceApiError
    return kind(response.status_code, code, message, data)


def _retry_wait(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("Retry-After", ""))
    except ValueError:
        wait = 0.25 * 2**attempt
    return min(max(wait, 0.0), MAX_RETRY_WAIT)


async def _request(
    client: httpx.AsyncClient,
    store: StoreCredentials,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json: dict[str, Any] | None = None,
) -> httpx.Response:
    url = api_url(store, path)
    auth = httpx.BasicAuth(store.consumer_key, store.consumer_secret)
    for attempt in range(MAX_RETRIES + 1):
        response = await client.request(
            method, url, params=params, json=json, auth=auth, headers={"Accept": "application/json"}
        )
        if response.status_code in RETRY_STATUSES and attempt < MAX_RETRIES:
            await asyncio.sleep(_retry_wait(response, attempt))
            continue
        if response.status_code >= 400:
            raise _error(response)
        return response
    raise AssertionError("unreachable: the last attempt returns or raises")


def _json_list(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    if not isinstance(body, list):
        raise WooCommerceApiError(response.status_code, "unexpected_body", "expected a JSON list")
    return [item for item in body if isinstance(item, dict)]


async def _get_all(
    client: httpx.AsyncClient, store: StoreCredentials, path: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every page of a collection, following X-WP-TotalPages."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await _request(
            client, store, "GET", path, params={**params, "per_page": MAX_PER_PAGE, "page": page}
        )
        batch = _json_list(response)
        items += batch
        try:
            total_pages = int(response.headers.get("X-WP-TotalPages", "1"))
        except ValueError:
            total_pages = 1
        if not batch or page >= total_pages:
            return items
        page += 1


# --- Webhooks ------------------------------------------------------------------------------------


async def ensure_webhooks(
    store: StoreCredentials,
    delivery_url: str,
    secret: str,
    topics: Iterable[str] = WEBHOOK_TOPICS,
) -> list[str]:
    """Make sure an active webhook delivers each topic to `delivery_url`; safe to repeat.

    Creates the missing ones (signed with `secret`) and returns their topics. One that exists,
    paused, disabled by WooCommerce after repeated failed deliveries or active, is set to active
    with `secret`: WooCommerce never returns a webhook's secret, so an old one cannot be told."""
    wanted = list(dict.fromkeys(topics))
    for topic in wanted:
        if not _TOPIC.match(topic):
            raise ValueError(f"not a WooCommerce webhook topic: {topic!r}")
    async with woocommerce_http_client() as client:
        existing: dict[str, dict[str, Any]] = {}
        for hook in await _get_all(client, store, "/webhooks", {}):
            if hook.get("delivery_url") != delivery_url or hook.get("topic") not in wanted:
                continue
            # Prefer an active one when the same topic and URL appear more than once.
            if hook["topic"] not in existing or hook.get("status") == "active":
                existing[hook["topic"]] = hook

        created: list[str] = []
        for topic in wanted:
            found = existing.get(topic)
            if found is None:
                await _request(
                    client,
                    store,
                    "POST",
                    "/webhooks",
                    json={
                        "name": f"Rebound {topic}",
                        "topic": topic,
                        "delivery_url": delivery_url,
                        "secret": secret,
                        "status": "active",
                    },
                )
                created.append(topic)
            else:
                # A reconnect makes a new secret, and the store cannot show the old one (it is
                # write-only): set it on every webhook kept, or their deliveries would be refused.
                await _request(
                    client,
                    store,
                    "PUT",
                    f"/webhooks/{int(found['id'])}",
                    json={"status": "active", "secret": secret},
                )
    return created


# --- Coupons -------------------------------------------------------------------------------------


def _decimal_string(value: Decimal) -> str:
    return format(value, "f")


def _wc_datetime(moment: datetime) -> str:
    """ISO 8601 with an explicit UTC offset: WooCommerce reads a date without one in the site's
    time zone, and ignores `date_expires_gmt` on write (the coupon has no setter for it)."""
    if moment.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


async def create_coupon(
    store: StoreCredentials,
    *,
    code: str,
    kind: DiscountKind,
    amount: Decimal,
    email: str | None,
    expires_at: datetime | None,
    minimum_amount: Decimal | None,
) -> int:
    """Create a single-use coupon and return its id. `amount` is percent off (0-100] for
    "percentage", an amount in the store's currency for "fixed_amount" (off the cart), and
    ignored for "free_shipping" (which enables free shipping where the store's free-shipping
    method accepts a coupon). With `email`, only that billing address may use it.

    WooCommerce refuses a code it already has (`woocommerce_rest_coupon_code_already_exists`);
    the existing coupon's id is then returned, so a retried job never fails on its own success.
    WooCommerce stores codes in lower case."""
    if not code.strip():
        raise ValueError("coupon code must not be blank")
    if kind == "percentage" and not Decimal(0) < amount <= Decimal(100):
        raise ValueError(f"percentage must be in (0, 100], got {amount}")
    if kind == "fixed_amount" and amount <= 0:
        raise ValueError(f"fixed amount must be positive, got {amount}")

    body: dict[str, Any] = {
        "code": code,
        "discount_type": "percent" if kind == "percentage" else "fixed_cart",
        "amount": "0" if kind == "free_shipping" else _decimal_string(amount),
        "individual_use": True,
        "usage_limit": 1,
        "usage_limit_per_user": 1,
        "free_shipping": kind == "free_shipping",
        "description": "Rebound",
    }
    if email:
        body["email_restrictions"] = [email]
    if expires_at is not None:
        body["date_expires"] = _wc_datetime(expires_at)
    if minimum_amount is not None:
        body["minimum_amount"] = _decimal_string(minimum_amount)

    async with woocommerce_http_client() as client:
        try:
            response = await _request(client, store, "POST", "/coupons", json=body)
        except WooCommerceApiError as error:
            if error.code != _COUPON_EXISTS:
                raise
            found = await _request(client, store, "GET", "/coupons", params={"code": code})
            match = [c for c in _json_list(found) if str(c.get("code", "")).lower() == code.lower()]
            if not match:
                raise
            return int(match[0]["id"])
    return int(response.json()["id"])


PAYABLE_STATUSES = frozenset({"pending", "failed"})


async def apply_coupon(store: StoreCredentials, order_id: str, code: str) -> bool:
    """Apply a coupon to an order still awaiting payment, so its order-pay page shows the
    discounted total. `PUT /orders/<id>` with `coupon_lines` replaces the order's coupons, so
    those already on it are sent again. True when the order now carries the code; False when the
    order is no longer payable. WooCommerce validates the coupon (expiry, usage, email) and
    answers 400 `woocommerce_rest_invalid_coupon` (or similar) when it does not apply."""
    async with woocommerce_http_client() as client:
        order = (await _request(client, store, "GET", f"/orders/{int(order_id)}")).json()
        if not isinstance(order, dict) or order.get("status") not in PAYABLE_STATUSES:
            return False
        codes = [
            str(line.get("code"))
            for line in order.get("coupon_lines") or []
            if isinstance(line, dict) and line.get("code")
        ]
        if code.lower() in (c.lower() for c in codes):
            return True
        lines = [{"code": c} for c in [*codes, code]]
        await _request(
            client, store, "PUT", f"/orders/{int(order_id)}", json={"coupon_lines": lines}
        )
    return True


# --- Products ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductInfo:
    id: str
    name: str
    price: Decimal | None  # None when the product has no price (not purchasable)
    stock_status: str  # "instock", "outofstock" or "onbackorder"
    stock_quantity: int | None  # None unless the store manages stock for it
    image_url: str | None
    image_alt: str | None
    permalink: str | None
    parent_id: str | None = None  # the product of a variation

    @property
    def available(self) -> bool:
        return self.stock_status != "outofstock"


def _price(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _numeric_ids(ids: Iterable[str | int]) -> dict[int, str]:
    wanted: dict[int, str] = {}
    for raw in ids:
        text = str(raw).strip()
        if not text.isdigit():
            raise ValueError(f"not a WooCommerce id: {raw!r}")
        wanted.setdefault(int(text), str(raw))
    return wanted


def _product_info(item: dict[str, Any], *, parent_id: str | None = None) -> ProductInfo:
    image = item.get("image") or next(iter(item.get("images") or []), None) or {}
    name = item.get("name")
    if not name:  # older variation responses have no name: describe it by its options
        name = " / ".join(str(a.get("option")) for a in item.get("attributes") or [])
    return ProductInfo(
        id=str(item["id"]),
        name=str(name),
        price=_price(item.get("price")),
        stock_status=str(item.get("stock_status") or "instock"),
        stock_quantity=item.get("stock_quantity"),
        image_url=image.get("src") or None,
        image_alt=image.get("alt") or None,
        permalink=item.get("permalink"),
        parent_id=parent_id,
    )


async def fetch_products(
    store: StoreCredentials, product_ids: Iterable[str | int]
) -> dict[str, ProductInfo]:
    """Current data for each product still in the store, keyed by the id as given. Up to 100 ids
    cost one request (`GET /products?include=…&per_page=100`)."""
    return await _fetch_included(store, "/products", product_ids, parent_id=None)


async def fetch_variations(
    store: StoreCredentials, product_id: str | int, variation_ids: Iterable[str | int]
) -> dict[str, ProductInfo]:
    """Current data for variations of one variable product (an order line item's product_id and
    variation_id), keyed by the variation id as given."""
    parent = str(next(iter(_numeric_ids([product_id]))))
    return await _fetch_included(
        store, f"/products/{parent}/variations", variation_ids, parent_id=parent
    )


async def _fetch_included(
    store: StoreCredentials,
    path: str,
    ids_as_given: Iterable[str | int],
    *,
    parent_id: str | None,
) -> dict[str, ProductInfo]:
    """Items of a collection by id, `include=` up to 100 at a time, keyed by the id as given."""
    wanted = _numeric_ids(ids_as_given)
    ids = sorted(wanted)
    found: dict[str, ProductInfo] = {}
    async with woocommerce_http_client() as client:
        for start in range(0, len(ids), MAX_PER_PAGE):
            batch = ids[start : start + MAX_PER_PAGE]
            response = await _request(
                client,
                store,
                "GET",
                path,
                params={"include": ",".join(map(str, batch)), "per_page": MAX_PER_PAGE},
            )
            for item in _json_list(response):
                key = wanted.get(int(item["id"]))
                if key is not None:
                    found[key] = _product_info(item, parent_id=parent_id)
    return found


# --- Store settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSettings:
    currency: str  # woocommerce_currency, ISO 4217
    currency_position: str | None  # left, right, left_space, right_space
    thousand_separator: str | None
    decimal_separator: str | None
    price_decimals: int | None
    address_1: str | None
    address_2: str | None
    city: str | None
    postcode: str | None
    country: str | None  # from woocommerce_default_country "US:CA"
    state: str | None
    language: str | None  # system_status environment.language, a WordPress locale: "en_US"
    home_url: str | None

    @property
    def address_lines(self) -> tuple[str, ...]:
        place = " ".join(p for p in (self.postcode, self.city, self.state) if p)
        return tuple(p for p in (self.address_1, self.address_2, place, self.country) if p)


def _setting(values: dict[str, Any], key: str) -> str | None:
    value = values.get(key)
    return str(value) if value not in (None, "") else None


async def fetch_store_settings(store: StoreCredentials) -> StoreSettings:
    """The store's currency and address (`GET /settings/general`) and WordPress language
    (`GET /system_status`, only its environment's language and home URL)."""
    async with woocommerce_http_client() as client:
        response = await _request(client, store, "GET", "/settings/general")
        values = {str(item.get("id")): item.get("value") for item in _json_list(response)}
        status = (
            await _request(
                client,
                store,
                "GET",
                "/system_status",
                params={"_fields": "environment.language,environment.home_url"},
            )
        ).json()
    environment = (status.get("environment") or {}) if isinstance(status, dict) else {}
    currency = _setting(values, "woocommerce_currency")
    if currency is None:
        raise WooCommerceApiError(200, "missing_setting", "woocommerce_currency is not set")
    country, _, state = (_setting(values, "woocommerce_default_country") or "").partition(":")
    decimals = _setting(values, "woocommerce_price_num_decimals")
    return StoreSettings(
        currency=currency,
        currency_position=_setting(values, "woocommerce_currency_pos"),
        thousand_separator=_setting(values, "woocommerce_price_thousand_sep"),
        decimal_separator=_setting(values, "woocommerce_price_decimal_sep"),
        price_decimals=int(decimals) if decimals and decimals.isdigit() else None,
        address_1=_setting(values, "woocommerce_store_address"),
        address_2=_setting(values, "woocommerce_store_address_2"),
        city=_setting(values, "woocommerce_store_city"),
        postcode=_setting(values, "woocommerce_store_postcode"),
        country=country or None,
        state=state or None,
        language=environment.get("language") or None,
        home_url=environment.get("home_url") or None,
    )
