"""Rebound's Shopify Admin API client: access tokens, GraphQL with cost-based throttling, and the
few typed operations Rebound needs (shop details, webhook subscriptions, discount codes, variants).

Built on `shopify_app` (the `shopifyapp` package), which already retries HTTP 429 (Retry-After)
and 502/503/504 (exponential backoff). What it does not do is GraphQL's own throttling: Shopify
answers an over-budget query with HTTP 200 and an error whose `extensions.code` is `THROTTLED`,
which `shopify_app` reports as a plain GraphQL error. That retry lives here.

The GraphQL documents follow the Admin GraphQL reference for API_VERSION
(https://shopify.dev/docs/api/admin-graphql/2026-07).
"""

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import shopify_app
from babel.numbers import get_currency_precision

from app.settings import get_settings

# The one place the Admin API version is chosen; webhooks are serialized with it too.
API_VERSION = "2026-07"

# Throttling: Shopify refills the bucket at `restoreRate` points per second, so waiting
# (requested - available) / restoreRate seconds is exactly enough. The bounds keep a wrong or
# missing cost report from stalling a worker job.
MAX_THROTTLE_RETRIES = 4
MIN_THROTTLE_WAIT = 0.05
MAX_THROTTLE_WAIT = 10.0

_SHOP_DOMAIN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]*\.myshopify\.com$")
_REST_TOPIC = re.compile(r"^[a-z_]+/[a-z_]+$")
_NODES_LIMIT = 250  # Shopify's maximum for nodes(ids:) and for a connection page.


class ShopifyApiError(Exception):
    """Shopify refused or failed a request; `errors` holds Shopify's error objects when it sent
    any, `data` any partial data that came with them."""

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        data: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.data = data
        self.status = status

    @property
    def codes(self) -> set[str]:
        return {
            str(error.get("extensions", {}).get("code"))
            for error in self.errors
            if isinstance(error.get("extensions"), dict)
        }


class ShopifyTokenRevoked(ShopifyApiError):
    """401: the access token is unknown or revoked (usually the app was uninstalled)."""


class ShopifyThrottled(ShopifyApiError):
    """Still throttled after every retry."""


class ShopifyUserErrors(ShopifyApiError):
    """A mutation ran but Shopify rejected its input; `user_errors` is its userErrors list."""

    def __init__(self, message: str, user_errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.user_errors = user_errors


# --- HTTP ----------------------------------------------------------------------------------------


class _OriginTransport(httpx.AsyncBaseTransport):
    """Sends every request to one origin (the local stand-in) while the Host header keeps the
    shop's domain, because `shopify_app` hard-codes https://{shop}.myshopify.com."""

    def __init__(self, origin: str) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"SHOPIFY_API_ORIGIN must be an http(s) origin, got {origin!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The Host header was fixed when the request was built, so only the socket moves.
        request.url = request.url.copy_with(scheme=self._scheme, host=self._host, port=self._port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def shopify_http_client() -> httpx.AsyncClient:
    """An HTTP client for Shopify: direct, or to SHOPIFY_API_ORIGIN when it is set."""
    origin = get_settings().shopify_api_origin
    if origin:
        return httpx.AsyncClient(timeout=30.0, transport=_OriginTransport(origin))
    return httpx.AsyncClient(timeout=30.0)


def _shop_name(shop_domain: str) -> str:
    """`shopify_app` wants the bare store name; refusing anything but *.myshopify.com also keeps
    credentials from being posted to an arbitrary host."""
    if not _SHOP_DOMAIN.match(shop_domain):
        raise ValueError(f"not a *.myshopify.com domain: {shop_domain!r}")
    return shop_domain.removesuffix(".myshopify.com")


def _app_config() -> shopify_app.AppConfig:
    settings = get_settings()
    if not settings.shopify_api_key or settings.shopify_api_secret is None:
        raise ShopifyApiError("SHOPIFY_API_KEY and SHOPIFY_API_SECRET must be set")
    return {
        "client_id": settings.shopify_api_key,
        "client_secret": settings.shopify_api_secret.get_secret_value(),
        "old_client_secret": None,
    }


# --- GraphQL -------------------------------------------------------------------------------------


def throttle_wait(cost: dict[str, Any] | None) -> float:
    """Seconds until the bucket holds the requested cost, from a THROTTLED answer's
    `extensions.cost`, bounded to [MIN_THROTTLE_WAIT, MAX_THROTTLE_WAIT]."""
    try:
        cost = cost or {}
        status = cost["throttleStatus"]
        deficit = float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])
        wait = deficit / float(status["restoreRate"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        wait = 1.0  # no usable cost report: a second restores a plan's worth of points
    return min(max(wait, MIN_THROTTLE_WAIT), MAX_THROTTLE_WAIT)


def _body(result: shopify_app.GQLResult) -> dict[str, Any]:
    try:
        body = json.loads(result.response.body or "{}")
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _raise_user_errors(data: dict[str, Any]) -> None:
    for name, payload in data.items():
        if isinstance(payload, dict) and payload.get("userErrors"):
            raise ShopifyUserErrors(
                f"{name} rejected: {payload['userErrors']}", payload["userErrors"]
            )


async def graphql(
    shop_domain: str,
    access_token: str,
    query: str,
    variables: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one Admin GraphQL document and return its `data`.

    Raises ShopifyTokenRevoked (401), ShopifyThrottled (still THROTTLED after retries, or 429 after
    shopify_app's own retries), ShopifyUserErrors (a mutation's userErrors) or ShopifyApiError.
    """
    shop = _shop_name(shop_domain)
    async with shopify_http_client() as client:
        for attempt in range(MAX_THROTTLE_RETRIES + 1):
            result = await shopify_app.admin_graphql_request_async(
                query,
                shop=shop,
                access_token=access_token,
                api_version=API_VERSION,
                variables=variables,
                http_client=client,
            )
            if result.ok:
                data = result.data or {}
                _raise_user_errors(data)
                return data
            code = result.log.code
            if code == "unauthorized":
                raise ShopifyTokenRevoked(
                    f"{shop_domain}: access token invalid or revoked", status=401
                )
            if code == "rate_limited":
                raise ShopifyThrottled(f"{shop_domain}: HTTP 429 after retries", status=429)
            if code != "graphql_errors":
                raise ShopifyApiError(
                    f"{shop_domain}: {result.log.detail}", status=result.response.status or None
                )
            body = _body(result)
            errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
            error = ShopifyApiError(
                f"{shop_domain}: {[e.get('message') for e in errors]}",
                errors=errors,
                data=body.get("data"),
                status=result.response.status,
            )
            if "THROTTLED" not in error.codes:
                raise error
            if attempt == MAX_THROTTLE_RETRIES:
                raise ShopifyThrottled(
                    f"{shop_domain}: still throttled after {attempt} retries", errors=errors
                )
            await asyncio.sleep(throttle_wait((body.get("extensions") or {}).get("cost")))
    raise AssertionError("unreachable: the last attempt returns or raises")


# --- Shop ----------------------------------------------------------------------------------------

SHOP_QUERY = """
query ReboundShop {
  shop {
    name
    email
    contactEmail
    currencyCode
    ianaTimezone
    myshopifyDomain
    primaryDomain { url }
    billingAddress {
      company
      address1
      address2
      city
      province
      provinceCode
      zip
      country
      countryCodeV2
      phone
      formatted(withCompany: true)
    }
  }
}
"""

SHOP_LOCALES_QUERY = """
query ReboundShopLocales {
  shopLocales {
    locale
    primary
  }
}
"""


@dataclass(frozen=True)
class ShopInfo:
    name: str
    email: str
    contact_email: str
    currency_code: str
    primary_locale: str | None
    iana_timezone: str
    country_code: str | None
    address_lines: tuple[str, ...]
    phone: str | None
    primary_url: str | None


async def fetch_shop(shop_domain: str, token: str) -> ShopInfo:
    shop = (await graphql(shop_domain, token, SHOP_QUERY))["shop"]
    address = shop.get("billingAddress") or {}
    return ShopInfo(
        name=shop["name"],
        email=shop["email"],
        contact_email=shop.get("contactEmail") or shop["email"],
        currency_code=shop["currencyCode"],
        primary_locale=await _primary_locale(shop_domain, token),
        iana_timezone=shop["ianaTimezone"],
        country_code=address.get("countryCodeV2"),
        address_lines=tuple(address.get("formatted") or ()),
        phone=address.get("phone"),
        primary_url=(shop.get("primaryDomain") or {}).get("url"),
    )


async def _primary_locale(shop_domain: str, token: str) -> str | None:
    # shopLocales needs the read_locales scope. It is a separate request because, being a
    # non-null root field, its ACCESS_DENIED would null the whole shop answer with it.
    try:
        locales = (await graphql(shop_domain, token, SHOP_LOCALES_QUERY))["shopLocales"]
    except ShopifyApiError as error:
        if "ACCESS_DENIED" in error.codes:
            return None
        raise
    return next((entry["locale"] for entry in locales if entry.get("primary")), None)


# --- Webhook subscriptions -----------------------------------------------------------------------

WEBHOOK_SUBSCRIPTIONS_QUERY = """
query ReboundWebhookSubscriptions($topics: [WebhookSubscriptionTopic!], $after: String) {
  webhookSubscriptions(first: 250, after: $after, topics: $topics) {
    nodes {
      id
      topic
      uri
      format
    }
    pageInfo {
      hasNextPage
      endCursor
    }
  }
}
"""

WEBHOOK_SUBSCRIPTION_CREATE = """
mutation ReboundWebhookSubscriptionCreate(
  $topic: WebhookSubscriptionTopic!
  $webhookSubscription: WebhookSubscriptionInput!
) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription {
      id
      topic
      uri
    }
    userErrors {
      field
      message
    }
  }
}
"""


def topic_enum(topic: str) -> str:
    """'checkouts/create' → 'CHECKOUTS_CREATE' (WebhookSubscriptionTopic)."""
    if not _REST_TOPIC.match(topic):
        raise ValueError(f"not a webhook topic: {topic!r}")
    return topic.replace("/", "_").upper()


async def ensure_webhook_subscriptions(
    shop_domain: str, token: str, callback_url: str, topics: list[str]
) -> list[str]:
    """Subscribe `callback_url` (JSON) to each topic not yet subscribed to it; safe to repeat.
    Returns the topics it created a subscription for."""
    wanted = {topic_enum(topic): topic for topic in topics}
    existing: set[str] = set()
    after: str | None = None
    while True:
        page = (
            await graphql(
                shop_domain,
                token,
                WEBHOOK_SUBSCRIPTIONS_QUERY,
                {"topics": sorted(wanted), "after": after},
            )
        )["webhookSubscriptions"]
        existing |= {node["topic"] for node in page["nodes"] if node["uri"] == callback_url}
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    created = []
    for topic_value, topic in wanted.items():
        if topic_value in existing:
            continue
        await graphql(
            shop_domain,
            token,
            WEBHOOK_SUBSCRIPTION_CREATE,
            {"topic": topic_value, "webhookSubscription": {"uri": callback_url, "format": "JSON"}},
        )
        created.append(topic)
    return created


# --- Discount codes ------------------------------------------------------------------------------

DISCOUNT_CODE_BASIC_CREATE = """
mutation ReboundDiscountCodeBasicCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode {
      id
    }
    userErrors {
      field
      code
      message
    }
  }
}
"""

DISCOUNT_CODE_FREE_SHIPPING_CREATE = """
mutation ReboundDiscountCodeFreeShippingCreate(
  $freeShippingCodeDiscount: DiscountCodeFreeShippingInput!
) {
  discountCodeFreeShippingCreate(freeShippingCodeDiscount: $freeShippingCodeDiscount) {
    codeDiscountNode {
      id
    }
    userErrors {
      field
      code
      message
    }
  }
}
"""

DISCOUNT_BY_CODE_QUERY = """
query ReboundDiscountByCode($code: String!) {
  codeDiscountNodeByCode(code: $code) {
    id
  }
}
"""

CUSTOMER_BY_EMAIL_QUERY = """
query ReboundCustomerByEmail($query: String!) {
  customers(first: 1, query: $query) {
    nodes {
      id
    }
  }
}
"""

DiscountKind = Literal["percentage", "fixed_amount", "free_shipping"]


def _money(amount: Decimal, currency: str) -> str:
    """A Decimal string in the currency's minor unit: Shopify takes amounts in the shop's
    currency, and e.g. JPY has no cents."""
    exponent = Decimal(1).scaleb(-get_currency_precision(currency))
    return str(amount.quantize(exponent, rounding=ROUND_HALF_UP))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create_discount_code(
    shop_domain: str,
    token: str,
    *,
    code: str,
    title: str,
    kind: DiscountKind,
    value: Decimal,
    currency: str,
    minimum_subtotal: Decimal | None,
    ends_at: datetime | None,
    customer_email: str | None = None,
) -> str:
    """Create a single-use code and return its DiscountCodeNode id. `value` is percent off
    (0-100] for "percentage", an amount in `currency` (the shop's) for "fixed_amount", and
    ignored for "free_shipping". Creating an existing code again returns the existing id, so a
    retried job never fails on its own earlier success."""
    if kind == "percentage" and not Decimal(0) < value <= Decimal(100):
        raise ValueError(f"percentage must be in (0, 100], got {value}")
    if kind == "fixed_amount" and value <= 0:
        raise ValueError(f"fixed amount must be positive, got {value}")

    fields: dict[str, Any] = {
        "title": title,
        "code": code,
        "startsAt": _iso(datetime.now(UTC)),
        "endsAt": _iso(ends_at) if ends_at else None,
        "usageLimit": 1,
        "appliesOncePerCustomer": True,
        "context": await _buyer_context(shop_domain, token, customer_email),
    }
    if minimum_subtotal is not None:
        fields["minimumRequirement"] = {
            "subtotal": {"greaterThanOrEqualToSubtotal": _money(minimum_subtotal, currency)}
        }

    if kind == "free_shipping":
        mutation = DISCOUNT_CODE_FREE_SHIPPING_CREATE
        name, argument = "discountCodeFreeShippingCreate", "freeShippingCodeDiscount"
        fields["destination"] = {"all": True}
    else:
        mutation = DISCOUNT_CODE_BASIC_CREATE
        name, argument = "discountCodeBasicCreate", "basicCodeDiscount"
        amount = (
            {"percentage": float(value / 100)}
            if kind == "percentage"
            else {"discountAmount": {"amount": _money(value, currency), "appliesOnEachItem": False}}
        )
        fields["customerGets"] = {"value": amount, "items": {"all": True}}

    try:
        data = await graphql(shop_domain, token, mutation, {argument: fields})
    except ShopifyUserErrors as error:
        if not any(e.get("code") == "TAKEN" for e in error.user_errors):
            raise
        existing = (await graphql(shop_domain, token, DISCOUNT_BY_CODE_QUERY, {"code": code}))[
            "codeDiscountNodeByCode"
        ]
        if existing is None:
            raise
        return str(existing["id"])
    return str(data[name]["codeDiscountNode"]["id"])


async def _buyer_context(shop_domain: str, token: str, email: str | None) -> dict[str, Any]:
    """Limit the code to the shopper's customer record when Shopify has one; otherwise any buyer
    may use it once (usageLimit 1), because a guest checkout leaves no customer to target."""
    if email:
        escaped = email.replace("\\", "\\\\").replace('"', '\\"')
        try:
            found = (
                await graphql(
                    shop_domain, token, CUSTOMER_BY_EMAIL_QUERY, {"query": f'email:"{escaped}"'}
                )
            )["customers"]["nodes"]
        except ShopifyApiError as error:
            if "ACCESS_DENIED" not in error.codes:  # no read_customers scope
                raise
            found = []
        if found:
            return {"customers": {"add": [found[0]["id"]]}}
    return {"all": "ALL"}


# --- Variants ------------------------------------------------------------------------------------

VARIANTS_QUERY = """
query ReboundVariants($ids: [ID!]!) {
  nodes(ids: $ids) {
    __typename
    ... on ProductVariant {
      id
      title
      price
      availableForSale
      inventoryQuantity
      image {
        url
        altText
      }
      product {
        title
        handle
        onlineStoreUrl
        featuredMedia {
          preview {
            image {
              url
              altText
            }
          }
        }
      }
    }
  }
}
"""


@dataclass(frozen=True)
class VariantInfo:
    id: str
    title: str
    product_title: str
    price: Decimal
    available_for_sale: bool
    inventory_quantity: int | None
    image_url: str | None
    image_alt: str | None
    product_url: str | None
    product_handle: str


def variant_gid(variant_id: str | int) -> str:
    text = str(variant_id)
    return text if text.startswith("gid://") else f"gid://shopify/ProductVariant/{text}"


async def fetch_variants(
    shop_domain: str, token: str, variant_ids: list[str] | list[int]
) -> dict[str, VariantInfo]:
    """Current data for each variant still in the store, keyed by the id as given (numeric
    webhook ids or GIDs). Up to 250 ids cost one request."""
    wanted = {variant_gid(vid): str(vid) for vid in variant_ids}
    gids = list(wanted)
    found: dict[str, VariantInfo] = {}
    for start in range(0, len(gids), _NODES_LIMIT):
        for node in await _variant_nodes(shop_domain, token, gids[start : start + _NODES_LIMIT]):
            if node and node.get("__typename") == "ProductVariant":
                found[wanted[node["id"]]] = _variant_info(node)
    return found


async def _variant_nodes(shop_domain: str, token: str, gids: list[str]) -> list[Any]:
    try:
        data = await graphql(shop_domain, token, VARIANTS_QUERY, {"ids": gids})
    except ShopifyApiError as error:
        # Without inventory access Shopify still answers, with inventoryQuantity null and an
        # ACCESS_DENIED error for it; the rest of the answer is good.
        denied_only = error.errors and all(
            (e.get("extensions") or {}).get("code") == "ACCESS_DENIED"
            and (e.get("path") or [None])[-1] == "inventoryQuantity"
            for e in error.errors
        )
        if not denied_only or not error.data:
            raise
        data = error.data
    return list(data.get("nodes") or [])


def _variant_info(node: dict[str, Any]) -> VariantInfo:
    product = node["product"]
    image = node.get("image") or (
        ((product.get("featuredMedia") or {}).get("preview") or {}).get("image") or {}
    )
    return VariantInfo(
        id=node["id"],
        title=node["title"],
        product_title=product["title"],
        price=Decimal(str(node["price"])),
        available_for_sale=bool(node["availableForSale"]),
        inventory_quantity=node.get("inventoryQuantity"),
        image_url=image.get("url"),
        image_alt=image.get("altText"),
        product_url=product.get("onlineStoreUrl"),
        product_handle=product["handle"],
    )
