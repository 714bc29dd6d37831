"""A faithful local Shopify for tests and the demo: the OAuth token endpoint and the part of the
Admin GraphQL API that `integrations.shopify.admin` calls, with Shopify's documented shapes.

GraphQL runs for real (graphql-core) against an SDL subset of the Admin schema for API_VERSION, so
a misspelled field or a wrong variable type is refused with an `errors` array as Shopify would.
The shop is the request's Host header (`STORE.myshopify.com`); point the client at the stand-in
with SHOPIFY_API_ORIGIN (see `admin.shopify_http_client`).

    standin = ShopifyStandin()
    token = standin.add_shop("demo.myshopify.com").access_token
    async with serve(standin) as origin:  # "http://127.0.0.1:PORT"
        ...
"""

import base64
import contextlib
import itertools
import json
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    VariableNode,
    build_schema,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)
from graphql.utilities import value_from_ast_untyped
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integrations.local_server import serve_app
from integrations.shopify.admin import API_VERSION

# Shopify's 401 body for a missing, unknown or revoked X-Shopify-Access-Token.
INVALID_TOKEN_BODY = {
    "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
}
# What public apps get for a non-expiring offline token from January 1, 2027
# (https://shopify.dev/changelog/expiring-offline-access-tokens-required-for-all-public-apps-as-of-january-1-2027).
NON_EXPIRING_REFUSED_BODY = {
    "errors": "[API] Non-expiring access tokens are no longer accepted for the Admin API. "
    "Start using expiring offline tokens"
}
ACCESS_TOKEN_TTL = 3600  # seconds: expiring offline tokens last an hour
REFRESH_TOKEN_TTL = 7_776_000  # 90 days
CLIENT_CREDENTIALS_TTL = 86_399  # a client credentials grant's token: 24 hours
# OAuth 2.0 token-exchange identifiers (RFC 8693 names, not secrets).
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"  # noqa: S105
DEFAULT_SCOPES = (
    "read_orders",
    "read_customers",
    "read_products",
    "read_inventory",
    "read_locales",
    "write_discounts",
)
RATE_LIMITS_DOC = "https://shopify.dev/api/usage/rate-limits"
MAX_PAGE = 250
Resolver = Callable[..., Any]

# The subset of the Admin GraphQL schema (2026-07) that Rebound uses. Types keep Shopify's names,
# nullability and argument defaults; objects list only the fields Rebound may select.
SCHEMA_SDL = """
schema { query: QueryRoot mutation: Mutation }

"An ISO-8601 date and time string, e.g. 2026-09-14T10:00:00Z."
scalar DateTime
"A signed decimal number serialized as a string, e.g. \\"29.99\\"."
scalar Decimal
"A monetary value string without a currency symbol or code, e.g. \\"100.57\\"."
scalar Money
scalar URL
scalar UnsignedInt64

interface Node { id: ID! }

type PageInfo {
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
  endCursor: String
}

type QueryRoot {
  shop: Shop!
  shopLocales(published: Boolean = false): [ShopLocale!]!
  webhookSubscriptions(
    first: Int, after: String, last: Int, before: String, reverse: Boolean = false,
    sortKey: WebhookSubscriptionSortKeys = CREATED_AT, query: String,
    topics: [WebhookSubscriptionTopic!], format: WebhookSubscriptionFormat, uri: String
  ): WebhookSubscriptionConnection!
  codeDiscountNodeByCode(code: String!): DiscountCodeNode
  customers(
    first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String
  ): CustomerConnection!
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
}

type Mutation {
  webhookSubscriptionCreate(
    topic: WebhookSubscriptionTopic!, webhookSubscription: WebhookSubscriptionInput!
  ): WebhookSubscriptionCreatePayload
  discountCodeBasicCreate(
    basicCodeDiscount: DiscountCodeBasicInput!
  ): DiscountCodeBasicCreatePayload
  discountCodeFreeShippingCreate(
    freeShippingCodeDiscount: DiscountCodeFreeShippingInput!
  ): DiscountCodeFreeShippingCreatePayload
}

type UserError { field: [String!] message: String! }

# --- shop
type Shop implements Node {
  id: ID!
  name: String!
  email: String!
  contactEmail: String!
  currencyCode: CurrencyCode!
  ianaTimezone: String!
  myshopifyDomain: String!
  primaryDomain: Domain!
  billingAddress: ShopAddress!
}
type Domain implements Node { id: ID! host: String! url: URL! }
type ShopAddress implements Node {
  id: ID!
  address1: String
  address2: String
  city: String
  company: String
  coordinatesValidated: Boolean!
  country: String
  countryCodeV2: CountryCode
  formatted(withCompany: Boolean = true): [String!]!
  formattedArea: String
  latitude: Float
  longitude: Float
  phone: String
  province: String
  provinceCode: String
  zip: String
}
type ShopLocale { locale: String! name: String! primary: Boolean! published: Boolean! }
enum CurrencyCode { AUD CAD CHF DKK EUR GBP ISK JPY NOK NZD RUB SEK USD }
enum CountryCode { AT AU BE CA CH DE DK ES FI FR GB IE IS IT JP NL NO NZ PL RU SE US }

# --- webhook subscriptions
enum WebhookSubscriptionTopic {
  APP_UNINSTALLED CARTS_CREATE CARTS_UPDATE CHECKOUTS_CREATE CHECKOUTS_DELETE CHECKOUTS_UPDATE
  CUSTOMERS_CREATE CUSTOMERS_UPDATE FULFILLMENTS_CREATE FULFILLMENTS_UPDATE ORDERS_CANCELLED
  ORDERS_CREATE ORDERS_FULFILLED ORDERS_PAID ORDERS_UPDATED PRODUCTS_UPDATE REFUNDS_CREATE
  SHOP_UPDATE
}
enum WebhookSubscriptionFormat { JSON XML }
enum WebhookSubscriptionSortKeys { CREATED_AT ID }
type ApiVersion { displayName: String! handle: String! supported: Boolean! }
type WebhookSubscription implements Node {
  id: ID!
  apiVersion: ApiVersion!
  createdAt: DateTime!
  updatedAt: DateTime!
  filter: String
  format: WebhookSubscriptionFormat!
  includeFields: [String!]!
  legacyResourceId: UnsignedInt64!
  metafieldNamespaces: [String!]!
  topic: WebhookSubscriptionTopic!
  uri: String!
  callbackUrl: URL! @deprecated(reason: "Use `uri` instead.")
}
type WebhookSubscriptionEdge { cursor: String! node: WebhookSubscription! }
type WebhookSubscriptionConnection {
  edges: [WebhookSubscriptionEdge!]!
  nodes: [WebhookSubscription!]!
  pageInfo: PageInfo!
}
input WebhookSubscriptionInput {
  filter: String
  format: WebhookSubscriptionFormat
  includeFields: [String!]
  metafieldNamespaces: [String!]
  uri: String
  callbackUrl: URL @deprecated(reason: "Use `uri` instead.")
}
type WebhookSubscriptionCreatePayload {
  userErrors: [UserError!]!
  webhookSubscription: WebhookSubscription
}

# --- discounts
enum DiscountStatus { ACTIVE EXPIRED SCHEDULED }
enum DiscountBuyerSelection { ALL }
enum DiscountErrorCode {
  BLANK CONFLICT DUPLICATE END_DATE_BEFORE_START_DATE GREATER_THAN INTERNAL_ERROR INVALID
  LESS_THAN_OR_EQUAL_TO MISSING_ARGUMENT TAKEN TOO_LONG VALUE_OUTSIDE_RANGE
}
type DiscountUserError {
  code: DiscountErrorCode
  extraInfo: String
  field: [String!]
  message: String!
}
type DiscountRedeemCode { id: ID! code: String! asyncUsageCount: Int! }
type DiscountRedeemCodeEdge { cursor: String! node: DiscountRedeemCode! }
type DiscountRedeemCodeConnection {
  edges: [DiscountRedeemCodeEdge!]!
  nodes: [DiscountRedeemCode!]!
  pageInfo: PageInfo!
}
type DiscountCodeBasic {
  title: String!
  status: DiscountStatus!
  startsAt: DateTime!
  endsAt: DateTime
  usageLimit: Int
  appliesOncePerCustomer: Boolean!
  asyncUsageCount: Int!
  createdAt: DateTime!
  codes(
    first: Int, after: String, last: Int, before: String, reverse: Boolean = false
  ): DiscountRedeemCodeConnection!
}
type DiscountCodeFreeShipping {
  title: String!
  status: DiscountStatus!
  startsAt: DateTime!
  endsAt: DateTime
  usageLimit: Int
  appliesOncePerCustomer: Boolean!
  asyncUsageCount: Int!
  createdAt: DateTime!
  maximumShippingPrice: MoneyV2
  codes(
    first: Int, after: String, last: Int, before: String, reverse: Boolean = false
  ): DiscountRedeemCodeConnection!
}
type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
union DiscountCode = DiscountCodeBasic | DiscountCodeFreeShipping
type DiscountCodeNode implements Node { id: ID! codeDiscount: DiscountCode! }
type DiscountCodeBasicCreatePayload {
  codeDiscountNode: DiscountCodeNode
  userErrors: [DiscountUserError!]!
}
type DiscountCodeFreeShippingCreatePayload {
  codeDiscountNode: DiscountCodeNode
  userErrors: [DiscountUserError!]!
}
input DiscountContextInput {
  all: DiscountBuyerSelection
  customers: DiscountCustomersInput
  customerSegments: DiscountCustomerSegmentsInput
}
input DiscountCustomersInput { add: [ID!] remove: [ID!] }
input DiscountCustomerSegmentsInput { add: [ID!] remove: [ID!] }
input DiscountCustomerSelectionInput {
  all: Boolean
  customers: DiscountCustomersInput
  customerSegments: DiscountCustomerSegmentsInput
}
input DiscountCombinesWithInput {
  orderDiscounts: Boolean
  productDiscounts: Boolean
  shippingDiscounts: Boolean
}
input DiscountAmountInput { amount: Decimal appliesOnEachItem: Boolean }
input DiscountCustomerGetsValueInput { percentage: Float discountAmount: DiscountAmountInput }
input DiscountItemsInput { all: Boolean }
input DiscountCustomerGetsInput {
  value: DiscountCustomerGetsValueInput
  items: DiscountItemsInput
  appliesOnOneTimePurchase: Boolean
  appliesOnSubscription: Boolean
}
input DiscountMinimumSubtotalInput { greaterThanOrEqualToSubtotal: Decimal }
input DiscountMinimumQuantityInput { greaterThanOrEqualToQuantity: UnsignedInt64 }
input DiscountMinimumRequirementInput {
  quantity: DiscountMinimumQuantityInput
  subtotal: DiscountMinimumSubtotalInput
}
input DiscountShippingDestinationSelectionInput { all: Boolean }
input DiscountCodeBasicInput {
  appliesOncePerCustomer: Boolean
  code: String
  combinesWith: DiscountCombinesWithInput
  context: DiscountContextInput
  customerGets: DiscountCustomerGetsInput
  endsAt: DateTime
  minimumRequirement: DiscountMinimumRequirementInput
  recurringCycleLimit: Int
  startsAt: DateTime
  tags: [String!]
  title: String
  usageLimit: Int
  customerSelection: DiscountCustomerSelectionInput @deprecated(reason: "Use `context` instead.")
}
input DiscountCodeFreeShippingInput {
  appliesOncePerCustomer: Boolean
  appliesOnOneTimePurchase: Boolean
  appliesOnSubscription: Boolean
  code: String
  combinesWith: DiscountCombinesWithInput
  context: DiscountContextInput
  destination: DiscountShippingDestinationSelectionInput
  endsAt: DateTime
  maximumShippingPrice: Decimal
  minimumRequirement: DiscountMinimumRequirementInput
  recurringCycleLimit: Int
  startsAt: DateTime
  title: String
  usageLimit: Int
  customerSelection: DiscountCustomerSelectionInput @deprecated(reason: "Use `context` instead.")
}

# --- customers
type Customer implements Node { id: ID! displayName: String! }
type CustomerEdge { cursor: String! node: Customer! }
type CustomerConnection { edges: [CustomerEdge!]! nodes: [Customer!]! pageInfo: PageInfo! }

# --- products
type Image { id: ID altText: String url: URL! width: Int height: Int }
enum MediaPreviewImageStatus { FAILED PROCESSING READY UPLOADED }
type MediaPreviewImage { image: Image status: MediaPreviewImageStatus! }
interface Media { id: ID! alt: String preview: MediaPreviewImage }
type MediaImage implements Media & Node {
  id: ID!
  alt: String
  image: Image
  preview: MediaPreviewImage
}
type Product implements Node {
  id: ID!
  title: String!
  handle: String!
  onlineStoreUrl: URL
  featuredMedia: Media
}
type ProductVariant implements Node {
  id: ID!
  title: String!
  displayName: String!
  sku: String
  price: Money!
  compareAtPrice: Money
  availableForSale: Boolean!
  inventoryQuantity: Int
  image: Image
  product: Product!
}
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _moment(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError as error:
        raise GraphQLError(f"Invalid DateTime: {value}") from error


def _cursor(index: int) -> str:
    return base64.b64encode(json.dumps({"last_index": index}).encode()).decode()


def _cursor_index(cursor: str | None) -> int:
    if cursor is None:
        return -1
    try:
        return int(json.loads(base64.b64decode(cursor))["last_index"])
    except (ValueError, KeyError, TypeError) as error:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from error


def _access_denied(field_name: str, scope: str) -> GraphQLError:
    return GraphQLError(
        f"Access denied for {field_name} field. Required access: `{scope}` access scope.",
        extensions={
            "code": "ACCESS_DENIED",
            "documentation": "https://shopify.dev/api/usage/access-scopes",
            "requiredAccess": f"`{scope}` access scope.",
        },
    )


@dataclass
class StandinShop:
    """One store's state. Tests read and change it directly."""

    domain: str
    name: str
    email: str
    currency: str
    locale: str
    iana_timezone: str
    country_code: str
    scopes: set[str]
    restore_rate: float
    maximum_available: float = 2000.0
    address: dict[str, Any] = field(default_factory=dict)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    discounts: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every GraphQL request the shop received, as {"query", "variables", "operationName"}.
    requests: list[dict[str, Any]] = field(default_factory=list)


class ShopifyStandin:
    """In-memory Shopify: shops, the app's client credentials, tokens, and what was created."""

    def __init__(
        self,
        *,
        client_id: str = "standin-client-id",
        client_secret: str = "standin-client-secret-0123456789abcdef",  # noqa: S107 - a test stand-in's own app
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.shops: dict[str, StandinShop] = {}
        self._tokens: dict[str, str] = {}  # access token → shop domain
        self._expires: dict[str, float] = {}  # expiring access token → when (epoch seconds)
        self._refresh: dict[str, tuple[str, float]] = {}  # refresh token → (domain, expiry)
        # Shopify keeps the refresh token a refresh used until the app uses what replaced it
        # (changelog 2026-08-28): new access token → the refresh token it retires when used.
        self._retiring: dict[str, str] = {}
        # A non-expiring token migrated to an expiring pair → that pair: a retry of the same
        # exchange (its answer lost) gets the same pair until the pair is refreshed.
        self._migrated: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, str] = {}  # unused authorization code → shop domain
        # Apps a store's own organization made in the Dev Dashboard and installed on it:
        # client id → (client secret, shop domain), for the client credentials grant.
        self._own_apps: dict[str, tuple[str, str]] = {}
        # Every POST to /admin/oauth/access_token: its grant_type (None: the code grant) and
        # subject_token_type, for tests counting refreshes.
        self.token_requests: list[dict[str, Any]] = []
        # From January 1, 2027 Shopify answers public apps' non-expiring tokens with 403.
        self.refuse_non_expiring = False
        self._throttle_next = 0
        self._ids = itertools.count(1_000_001)
        self.schema = _build_schema(self)
        self.app = Starlette(
            routes=[
                Route("/admin/oauth/access_token", self._access_token, methods=["POST"]),
                Route("/admin/api/{version}/graphql.json", self._graphql, methods=["POST"]),
            ]
        )

    # --- set-up and inspection, for tests and the demo

    def add_shop(
        self,
        domain: str,
        *,
        access_token: str | None = None,
        name: str = "Stand-in Store",
        email: str = "owner@example.com",
        currency: str = "USD",
        locale: str = "en",
        iana_timezone: str = "America/New_York",
        country_code: str = "US",
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        restore_rate: float = 100.0,
    ) -> StandinShop:
        shop = StandinShop(
            domain=domain,
            name=name,
            email=email,
            currency=currency,
            locale=locale,
            iana_timezone=iana_timezone,
            country_code=country_code,
            scopes=set(scopes),
            restore_rate=restore_rate,
            address={
                "id": self._gid("ShopAddress"),
                "address1": "150 Elgin Street",
                "address2": "8th Floor",
                "city": "Ottawa",
                "company": name,
                "coordinatesValidated": True,
                "country": "United States" if country_code == "US" else country_code,
                "countryCodeV2": country_code,
                "formattedArea": "Ottawa, ON",
                "latitude": 45.42,
                "longitude": -75.69,
                "phone": "+16135551111",
                "province": "Ontario",
                "provinceCode": "ON",
                "zip": "K2P 1L4",
            },
        )
        self.shops[domain] = shop
        if access_token:
            self._tokens[access_token] = domain
        return shop

    def token_for(self, domain: str) -> str:
        """A fresh offline access token for the shop, as an install would issue."""
        token = f"shpat_{secrets.token_hex(16)}"
        self._tokens[token] = domain
        return token

    def revoke(self, token: str) -> None:
        """The merchant uninstalled the app: the token answers 401 from now on."""
        self._tokens.pop(token, None)

    def add_own_app(self, domain: str) -> tuple[str, str]:
        """An app of the store's own organization, installed on it: its client id and secret,
        which get 24-hour tokens by the client credentials grant."""
        client_id, secret = secrets.token_hex(16), f"shpss_{secrets.token_hex(16)}"
        self._own_apps[client_id] = (secret, domain)
        return client_id, secret

    def expire_tokens(self, domain: str) -> None:
        """Every expiring access token of the shop is past its hour (its refresh tokens stay)."""
        for token, expires in list(self._expires.items()):
            if self._tokens.get(token) == domain:
                self._expires[token] = min(expires, time.time() - 1)

    def expire_refresh_tokens(self, domain: str) -> None:
        """The shop's refresh tokens are past their 90 days: only a new install helps."""
        for refresh, (owner, _) in list(self._refresh.items()):
            if owner == domain:
                self._refresh[refresh] = (owner, time.time() - 1)

    def token_expiry(self, token: str) -> float | None:
        """When an access token expires (epoch seconds); None for one that does not."""
        return self._expires.get(token)

    def issue_code(self, domain: str) -> str:
        """The `code` Shopify sends to the app's redirect URI after the merchant approves."""
        code = secrets.token_hex(16)
        self._codes[code] = domain
        return code

    def id_token(self, domain: str, *, lifetime: int = 60, secret: str | None = None) -> str:
        """A session token as App Bridge issues it (HS256, signed with the app's secret)."""
        now = int(datetime.now(UTC).timestamp())
        claims = {
            "iss": f"https://{domain}/admin",
            "dest": f"https://{domain}",
            "aud": self.client_id,
            "sub": "42",
            "exp": now + lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "sid": secrets.token_hex(8),
        }
        return jwt.encode(claims, secret or self.client_secret, algorithm="HS256")

    def throttle_next(self, n: int) -> None:
        """The next n GraphQL requests (any shop) are answered THROTTLED, as Shopify does."""
        self._throttle_next = n

    def add_customer(self, domain: str, email: str, display_name: str = "Shopper") -> str:
        gid = self._gid("Customer")
        self.shops[domain].customers.append(
            {"__typename": "Customer", "id": gid, "email": email, "displayName": display_name}
        )
        return gid

    def add_variant(
        self,
        domain: str,
        *,
        variant_id: int,
        title: str,
        price: str,
        product_title: str,
        handle: str,
        available: bool = True,
        inventory: int | None = 10,
        image_url: str | None = None,
        image_alt: str | None = None,
        product_image_url: str | None = None,
        online_store_url: str | None = None,
    ) -> str:
        gid = f"gid://shopify/ProductVariant/{variant_id}"
        featured = None
        if product_image_url:
            image = {
                "id": self._gid("ImageSource"),
                "url": product_image_url,
                "altText": product_title,
            }
            featured = {
                "__typename": "MediaImage",
                "id": self._gid("MediaImage"),
                "alt": product_title,
                "image": image,
                "preview": {"image": image, "status": "READY"},
            }
        self.shops[domain].variants[gid] = {
            "__typename": "ProductVariant",
            "id": gid,
            "title": title,
            "displayName": f"{product_title} - {title}",
            "sku": None,
            "price": price,
            "compareAtPrice": None,
            "availableForSale": available,
            "inventoryQuantity": inventory,
            "image": {"id": None, "url": image_url, "altText": image_alt} if image_url else None,
            "product": {
                "__typename": "Product",
                "id": self._gid("Product"),
                "title": product_title,
                "handle": handle,
                "onlineStoreUrl": online_store_url or f"https://{domain}/products/{handle}",
                "featuredMedia": featured,
            },
        }
        return gid

    def subscriptions(self, domain: str) -> list[dict[str, Any]]:
        return list(self.shops[domain].subscriptions)

    def discounts(self, domain: str) -> list[dict[str, Any]]:
        """Each created code discount: {"id", "kind", "code", "input"} (`input` as sent)."""
        return [
            {
                "id": d["id"],
                "kind": d["codeDiscount"]["__typename"],
                "code": d["code"],
                "input": d["input"],
            }
            for d in self.shops[domain].discounts
        ]

    def requests(self, domain: str) -> list[dict[str, Any]]:
        return list(self.shops[domain].requests)

    def _gid(self, kind: str) -> str:
        return f"gid://shopify/{kind}/{next(self._ids)}"

    # --- HTTP

    def _shop(self, request: Request) -> StandinShop | None:
        host = request.headers.get("host", "").split(":")[0].lower()
        return self.shops.get(host)

    async def _access_token(self, request: Request) -> JSONResponse:
        """POST /admin/oauth/access_token: authorization-code grant and token exchange."""
        shop = self._shop(request)
        if shop is None:
            return JSONResponse({"errors": "Not Found"}, status_code=404)
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                params = await request.json()
            except json.JSONDecodeError:
                params = None
        else:
            params = dict(await request.form())
        if not isinstance(params, dict):
            return _oauth_error(400, "invalid_request", "The request body is not valid.")
        grant = params.get("grant_type")
        self.token_requests.append(
            {"grant_type": grant, "subject_token_type": params.get("subject_token_type")}
        )
        if grant == "client_credentials":
            return self._client_credentials(shop, params)
        if (
            params.get("client_id") != self.client_id
            or params.get("client_secret") != self.client_secret
        ):
            return _oauth_error(401, "invalid_client", "Client credentials are invalid.")

        if grant == "refresh_token":
            return self._refreshed(shop, str(params.get("refresh_token", "")))
        if grant == TOKEN_EXCHANGE_GRANT:
            if params.get("requested_token_type") != OFFLINE_TOKEN_TYPE or params.get(
                "subject_token_type"
            ) not in (ID_TOKEN_TYPE, OFFLINE_TOKEN_TYPE):
                return _oauth_error(400, "invalid_request", "Unsupported token types.")
            if params["subject_token_type"] == OFFLINE_TOKEN_TYPE:
                if str(params.get("expiring", "0")) != "1":
                    return _oauth_error(400, "invalid_request", "expiring must be 1.")
                return self._migrate(shop, str(params.get("subject_token", "")))
            if not self._valid_id_token(str(params.get("subject_token", "")), shop.domain):
                return _oauth_error(
                    400,
                    "invalid_subject_token",
                    "Token exchange cannot be performed due to an invalid subject token.",
                )
        elif grant is None or grant == "authorization_code":
            if self._codes.get(str(params.get("code"))) != shop.domain:
                return _oauth_error(
                    400,
                    "invalid_request",
                    "The authorization code was not found or was already used",
                )
            del self._codes[str(params["code"])]
        else:
            return _oauth_error(400, "unsupported_grant_type", f"{grant} is not supported.")

        if str(params.get("expiring", "0")) == "1":
            return JSONResponse(self._expiring_pair(shop))
        return JSONResponse(
            {"access_token": self.token_for(shop.domain), "scope": ",".join(sorted(shop.scopes))}
        )

    def _expiring_pair(self, shop: StandinShop) -> dict[str, Any]:
        """An expiring offline access token and its refresh token, as Shopify answers them."""
        token = self.token_for(shop.domain)
        self._expires[token] = time.time() + ACCESS_TOKEN_TTL
        refresh = f"shprt_{secrets.token_hex(16)}"
        self._refresh[refresh] = (shop.domain, time.time() + REFRESH_TOKEN_TTL)
        return {
            "access_token": token,
            "scope": ",".join(sorted(shop.scopes)),
            "expires_in": ACCESS_TOKEN_TTL,
            "refresh_token": refresh,
            "refresh_token_expires_in": REFRESH_TOKEN_TTL,
        }

    def _client_credentials(self, shop: StandinShop, params: dict[str, Any]) -> JSONResponse:
        """grant_type=client_credentials: only an app of the store's own organization, installed
        on it, gets a token (24 hours, no refresh token)."""
        own = self._own_apps.get(str(params.get("client_id")))
        if own is None or own != (params.get("client_secret"), shop.domain):
            return _oauth_error(401, "invalid_client", "Client credentials are invalid.")
        token = self.token_for(shop.domain)
        self._expires[token] = time.time() + CLIENT_CREDENTIALS_TTL
        return JSONResponse(
            {
                "access_token": token,
                "scope": ",".join(sorted(shop.scopes)),
                "expires_in": CLIENT_CREDENTIALS_TTL,
            }
        )

    def _refreshed(self, shop: StandinShop, refresh: str) -> JSONResponse:
        """grant_type=refresh_token: a new pair. The used refresh token keeps working until the
        new access token is first used, so an app that lost the answer can ask again."""
        owner, expires = self._refresh.get(refresh, ("", 0.0))
        if owner != shop.domain or expires <= time.time():
            return _oauth_error(
                400, "invalid_grant", "The refresh token is invalid, expired or revoked."
            )
        pair = self._expiring_pair(shop)
        self._retiring[pair["access_token"]] = refresh
        for original, migrated in list(self._migrated.items()):
            if migrated["refresh_token"] == refresh:
                del self._migrated[original]  # refreshed: the migration can't be retried now
        return JSONResponse(pair)

    def _migrate(self, shop: StandinShop, subject: str) -> JSONResponse:
        """Token exchange of a non-expiring offline token for an expiring pair; the original
        is refused by the Admin API from then on."""
        if subject in self._migrated:
            return JSONResponse(self._migrated[subject])
        if self._tokens.get(subject) != shop.domain or subject in self._expires:
            return _oauth_error(
                400,
                "invalid_subject_token",
                "Token exchange cannot be performed due to an invalid subject token.",
            )
        del self._tokens[subject]
        self._migrated[subject] = self._expiring_pair(shop)
        return JSONResponse(self._migrated[subject])

    def _valid_id_token(self, token: str, domain: str) -> bool:
        try:
            claims = jwt.decode(
                token,
                self.client_secret,
                algorithms=["HS256"],
                audience=self.client_id,
                leeway=10,
                options={"require": ["exp", "nbf", "dest", "aud"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("dest") == f"https://{domain}")

    async def _graphql(self, request: Request) -> JSONResponse:
        """POST /admin/api/{version}/graphql.json."""
        shop = self._shop(request)
        if shop is None or request.path_params["version"] != API_VERSION:
            # Shopify would fall forward to a supported version; the stand-in serves only the
            # pinned one so that a drifted version is caught in tests.
            return JSONResponse({"errors": "Not Found"}, status_code=404)
        token = request.headers.get("x-shopify-access-token")
        if not token or self._tokens.get(token) != shop.domain:
            return JSONResponse(INVALID_TOKEN_BODY, status_code=401)
        if token in self._expires and self._expires[token] <= time.time():
            return JSONResponse(INVALID_TOKEN_BODY, status_code=401)
        if token not in self._expires and self.refuse_non_expiring:
            return JSONResponse(NON_EXPIRING_REFUSED_BODY, status_code=403)
        self._refresh.pop(self._retiring.pop(token, ""), None)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return JSONResponse(
                {"errors": {"query": "Required parameter missing or invalid"}}, status_code=400
            )
        shop.requests.append(
            {
                "query": body["query"],
                "variables": body.get("variables") or {},
                "operationName": body.get("operationName"),
            }
        )
        return JSONResponse(self._run(shop, body))

    def _run(self, shop: StandinShop, body: dict[str, Any]) -> dict[str, Any]:
        variables = body.get("variables") or {}
        try:
            document = parse(body["query"])
        except GraphQLError as error:
            return {"errors": [error.formatted], "extensions": {"cost": self._cost(shop, 0, 0)}}
        errors = validate(self.schema, document)
        if errors:
            return {
                "errors": [e.formatted for e in errors],
                "extensions": {"cost": self._cost(shop, 0, 0)},
            }
        requested = _requested_cost(document, body.get("operationName"), variables)
        if self._throttle_next > 0:
            self._throttle_next -= 1
            # Shopify's THROTTLED answer: HTTP 200, no data, the bucket as it stands.
            return {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {"code": "THROTTLED", "documentation": RATE_LIMITS_DOC},
                    }
                ],
                "extensions": {"cost": self._cost(shop, requested, None, available=0.0)},
            }
        result = execute_sync(
            self.schema,
            document,
            context_value=shop,
            variable_values=variables,
            operation_name=body.get("operationName"),
        )
        answer: dict[str, Any] = {}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
        answer["data"] = result.data
        answer["extensions"] = {"cost": self._cost(shop, requested, requested)}
        return answer

    def _cost(
        self,
        shop: StandinShop,
        requested: int,
        actual: int | None,
        *,
        available: float | None = None,
    ) -> dict[str, Any]:
        if available is None:
            available = shop.maximum_available - (actual or 0)
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": shop.maximum_available,
                "currentlyAvailable": available,
                "restoreRate": shop.restore_rate,
            },
        }


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _requested_cost(
    document: DocumentNode, operation_name: str | None, variables: dict[str, Any]
) -> int:
    """Shopify's calculated cost, simplified: objects cost 1, a connection 2 plus its page size
    times its children, nodes(ids:) the number of ids times its children, a mutation 10."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    fragments = {
        d.name.value: d.selection_set
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }

    def argument(node: FieldNode, name: str) -> Any:
        for arg in node.arguments or ():
            if arg.name.value == name:
                if isinstance(arg.value, VariableNode):
                    return variables.get(arg.value.name.value)
                return value_from_ast_untyped(arg.value, variables)
        return None

    def cost(selection_set: SelectionSetNode | None) -> int:
        total = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, InlineFragmentNode):
                total += cost(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += cost(fragments.get(selection.name.value))
            elif isinstance(selection, FieldNode) and selection.selection_set:
                children = cost(selection.selection_set)
                page = argument(selection, "first") or argument(selection, "last")
                ids = argument(selection, "ids")
                if isinstance(ids, list):
                    total += len(ids) * max(children, 1)
                elif isinstance(page, int):
                    total += 2 + page * children
                else:
                    total += 1 + children
        return total

    if operation.operation.value == "mutation":
        return 10 * len(operation.selection_set.selections) + cost(operation.selection_set)
    return max(cost(operation.selection_set), 1)


# --- resolvers -----------------------------------------------------------------------------------


def _page(
    items: list[dict[str, Any]],
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> dict[str, Any]:
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last")
    if (first is not None and first > MAX_PAGE) or (last is not None and last > MAX_PAGE):
        raise GraphQLError(f"The first/last argument must not exceed {MAX_PAGE}.")
    start = _cursor_index(after) + 1
    end = _cursor_index(before) if before else len(items)
    window = list(enumerate(items))[start:end]
    if first is not None:
        has_next = len(window) > first
        window = window[:first]
    else:
        has_next = False
    has_previous = start > 0
    if last is not None and len(window) > last:
        window, has_previous = window[-last:], True
    return {
        "edges": [{"cursor": _cursor(i), "node": item} for i, item in window],
        "nodes": [item for _, item in window],
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": _cursor(window[0][0]) if window else None,
            "endCursor": _cursor(window[-1][0]) if window else None,
        },
    }


def _shop_object(shop: StandinShop) -> dict[str, Any]:
    return {
        "__typename": "Shop",
        "id": f"gid://shopify/Shop/{zlib.crc32(shop.domain.encode())}",
        "name": shop.name,
        "email": shop.email,
        "contactEmail": shop.email,
        "currencyCode": shop.currency,
        "ianaTimezone": shop.iana_timezone,
        "myshopifyDomain": shop.domain,
        "primaryDomain": {
            "id": "gid://shopify/Domain/1",
            "host": shop.domain,
            "url": f"https://{shop.domain}",
        },
        "billingAddress": shop.address,
    }


def _formatted_address(address: dict[str, Any], _info: Any, withCompany: bool = True) -> list[str]:  # noqa: N803
    lines = [address["company"]] if withCompany and address.get("company") else []
    lines += [address[key] for key in ("address1", "address2") if address.get(key)]
    lines.append(
        " ".join(
            p for p in (address.get("city"), address.get("provinceCode"), address.get("zip")) if p
        )
    )
    lines.append(address.get("country") or "")
    return [line for line in lines if line]


def _build_schema(standin: ShopifyStandin) -> GraphQLSchema:
    schema = build_schema(SCHEMA_SDL)

    def resolve(type_name: str, field_name: str) -> Callable[[Resolver], Resolver]:
        def register(fn: Resolver) -> Resolver:
            schema.get_type(type_name).fields[field_name].resolve = fn  # type: ignore[union-attr]
            return fn

        return register

    for name in ("Node", "Media", "DiscountCode"):
        schema.get_type(name).resolve_type = lambda obj, _info, _type: obj["__typename"]  # type: ignore[union-attr]

    schema.get_type("ShopAddress").fields["formatted"].resolve = _formatted_address  # type: ignore[union-attr]

    @resolve("QueryRoot", "shop")
    def _shop(_root: Any, info: Any) -> dict[str, Any]:
        return _shop_object(info.context)

    @resolve("QueryRoot", "shopLocales")
    def _locales(_root: Any, info: Any, published: bool = False) -> list[dict[str, Any]]:
        shop: StandinShop = info.context
        if "read_locales" not in shop.scopes:
            raise _access_denied("shopLocales", "read_locales")
        return [{"locale": shop.locale, "name": shop.locale, "primary": True, "published": True}]

    @resolve("QueryRoot", "webhookSubscriptions")
    def _subscriptions(_root: Any, info: Any, **args: Any) -> dict[str, Any]:
        shop: StandinShop = info.context
        items = [
            s
            for s in shop.subscriptions
            if (not args.get("topics") or s["topic"] in args["topics"])
            and (not args.get("format") or s["format"] == args["format"])
            and (not args.get("uri") or s["uri"] == args["uri"])
        ]
        if args.get("reverse"):
            items.reverse()
        return _page(
            items, args.get("first"), args.get("after"), args.get("last"), args.get("before")
        )

    @resolve("QueryRoot", "codeDiscountNodeByCode")
    def _by_code(_root: Any, info: Any, code: str) -> dict[str, Any] | None:
        shop: StandinShop = info.context
        return next((d for d in shop.discounts if d["code"].lower() == code.lower()), None)

    @resolve("QueryRoot", "customers")
    def _customers(_root: Any, info: Any, **args: Any) -> dict[str, Any]:
        shop: StandinShop = info.context
        if "read_customers" not in shop.scopes:
            raise _access_denied("customers", "read_customers")
        query = (args.get("query") or "").strip()
        items = shop.customers
        if query.startswith("email:"):
            email = query.removeprefix("email:").strip().strip('"').replace('\\"', '"').lower()
            items = [c for c in items if c["email"].lower() == email]
        return _page(
            items, args.get("first"), args.get("after"), args.get("last"), args.get("before")
        )

    def find(shop: StandinShop, gid: str) -> dict[str, Any] | None:
        if not gid.startswith("gid://shopify/"):
            raise GraphQLError(
                f"Invalid global id '{gid}'", extensions={"code": "argumentLiteralsIncompatible"}
            )
        if gid in shop.variants:
            return shop.variants[gid]
        pool = shop.subscriptions + shop.discounts + shop.customers
        return next((item for item in pool if item["id"] == gid), None)

    @resolve("QueryRoot", "nodes")
    def _nodes(_root: Any, info: Any, ids: list[str]) -> list[dict[str, Any] | None]:
        if len(ids) > MAX_PAGE:
            raise GraphQLError(f"The ids argument must not exceed {MAX_PAGE} ids.")
        return [find(info.context, gid) for gid in ids]

    @resolve("QueryRoot", "node")
    def _node(_root: Any, info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002
        return find(info.context, id)

    @resolve("ProductVariant", "inventoryQuantity")
    def _inventory(variant: dict[str, Any], info: Any) -> int | None:
        if "read_inventory" not in info.context.scopes:
            raise _access_denied("inventoryQuantity", "read_inventory")
        return variant["inventoryQuantity"]

    @resolve("Mutation", "webhookSubscriptionCreate")
    def _subscribe(
        _root: Any, info: Any, topic: str, webhookSubscription: dict[str, Any]
    ) -> dict[str, Any]:  # noqa: N803
        shop: StandinShop = info.context
        uri = webhookSubscription.get("uri") or webhookSubscription.get("callbackUrl")
        error_field = [
            "webhookSubscription",
            "uri" if "uri" in webhookSubscription else "callbackUrl",
        ]
        message = None
        if not uri:
            message = "Address can't be blank"
        elif not str(uri).startswith(("https://", "pubsub://", "arn:aws:events:")):
            message = "Address protocol http:// is not supported"
        elif any(s["topic"] == topic and s["uri"] == uri for s in shop.subscriptions):
            message = "Address for this topic has already been taken"
        if message:
            return {
                "webhookSubscription": None,
                "userErrors": [{"field": error_field, "message": message}],
            }
        gid = standin._gid("WebhookSubscription")
        now = _now()
        subscription = {
            "__typename": "WebhookSubscription",
            "id": gid,
            "apiVersion": {"displayName": API_VERSION, "handle": API_VERSION, "supported": True},
            "createdAt": now,
            "updatedAt": now,
            "filter": webhookSubscription.get("filter"),
            "format": webhookSubscription.get("format") or "JSON",
            "includeFields": webhookSubscription.get("includeFields") or [],
            "legacyResourceId": gid.rsplit("/", 1)[1],
            "metafieldNamespaces": webhookSubscription.get("metafieldNamespaces") or [],
            "topic": topic,
            "uri": uri,
            "callbackUrl": uri,
        }
        shop.subscriptions.append(subscription)
        return {"webhookSubscription": subscription, "userErrors": []}

    def create_discount(
        shop: StandinShop, argument: str, kind: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        if "write_discounts" not in shop.scopes:
            raise _access_denied(argument, "write_discounts")
        errors = _discount_errors(shop, argument, kind, fields)
        if errors:
            return {"codeDiscountNode": None, "userErrors": errors}
        now = _now()
        starts_at = fields.get("startsAt") or now
        ends_at = fields.get("endsAt")
        moment = _moment(now)
        status = (
            "SCHEDULED"
            if _moment(starts_at) > moment
            else "EXPIRED"
            if ends_at and _moment(ends_at) <= moment
            else "ACTIVE"
        )
        redeem = {
            "id": standin._gid("DiscountRedeemCode"),
            "code": fields["code"],
            "asyncUsageCount": 0,
        }
        node = {
            "__typename": "DiscountCodeNode",
            "id": standin._gid("DiscountCodeNode"),
            "code": fields["code"],
            "input": fields,
            "codeDiscount": {
                "__typename": kind,
                "title": fields["title"],
                "status": status,
                "startsAt": starts_at,
                "endsAt": ends_at,
                "usageLimit": fields.get("usageLimit"),
                "appliesOncePerCustomer": bool(fields.get("appliesOncePerCustomer")),
                "asyncUsageCount": 0,
                "createdAt": now,
                "maximumShippingPrice": None,
                "codes": _page([redeem], 1, None, None, None),
            },
        }
        shop.discounts.append(node)
        return {"codeDiscountNode": node, "userErrors": []}

    @resolve("Mutation", "discountCodeBasicCreate")
    def _basic(_root: Any, info: Any, basicCodeDiscount: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        return create_discount(
            info.context, "basicCodeDiscount", "DiscountCodeBasic", basicCodeDiscount
        )

    @resolve("Mutation", "discountCodeFreeShippingCreate")
    def _free_shipping(
        _root: Any, info: Any, freeShippingCodeDiscount: dict[str, Any]
    ) -> dict[str, Any]:  # noqa: N803
        return create_discount(
            info.context,
            "freeShippingCodeDiscount",
            "DiscountCodeFreeShipping",
            freeShippingCodeDiscount,
        )

    return schema


def _discount_errors(
    shop: StandinShop, argument: str, kind: str, fields: dict[str, Any]
) -> list[dict[str, Any]]:
    """The DiscountUserErrors Shopify gives for the inputs Rebound could get wrong."""

    def error(path: str, message: str, code: str) -> dict[str, Any]:
        return {
            "field": [argument, *path.split(".")],
            "message": message,
            "code": code,
            "extraInfo": None,
        }

    errors = []
    code = (fields.get("code") or "").strip()
    if not code:
        errors.append(error("code", "Code can't be blank", "BLANK"))
    elif len(code) > 255:
        errors.append(error("code", "Code is too long (maximum is 255 characters)", "TOO_LONG"))
    elif any(d["code"].lower() == code.lower() for d in shop.discounts):
        errors.append(error("code", "Code must be unique. Please try a different code.", "TAKEN"))
    if not (fields.get("title") or "").strip():
        errors.append(error("title", "Title can't be blank", "BLANK"))
    if not fields.get("context") and not fields.get("customerSelection"):
        errors.append(error("context", "Context can't be blank", "BLANK"))
    if fields.get("endsAt") and _moment(fields["endsAt"]) <= _moment(
        fields.get("startsAt") or _now()
    ):
        errors.append(
            error("endsAt", "Ends at needs to be after starts_at", "END_DATE_BEFORE_START_DATE")
        )
    if kind == "DiscountCodeBasic":
        value = (fields.get("customerGets") or {}).get("value") or {}
        percentage = value.get("percentage")
        amount = (value.get("discountAmount") or {}).get("amount")
        if percentage is None and amount is None:
            errors.append(error("customerGets.value", "Value can't be blank", "BLANK"))
        if percentage is not None and not 0 < percentage <= 1:
            errors.append(
                error(
                    "customerGets.value.percentage",
                    "Value must be between 0.0 and 1.0",
                    "VALUE_OUTSIDE_RANGE",
                )
            )
        if amount is not None:
            try:
                valid = Decimal(str(amount)) > 0
            except InvalidOperation:
                valid = False
            if not valid:
                errors.append(
                    error(
                        "customerGets.value.discountAmount.amount",
                        "Value must be greater than 0",
                        "GREATER_THAN",
                    )
                )
    return errors


# --- running it ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(standin: ShopifyStandin, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run the stand-in on a free port of `host`; yields its origin URL."""
    async with serve_app(standin.app, host) as origin:
        yield origin
