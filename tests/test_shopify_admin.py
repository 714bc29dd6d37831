"""The Shopify Admin API client against the local Shopify stand-in on a real socket."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import jwt
import pytest
import shopify_app

from app.db import utcnow
from app.settings import get_settings
from integrations.shopify import admin, tokens
from integrations.shopify.standin import ShopifyStandin

SHOP = "rebound-admin-test.myshopify.com"
CALLBACK = "https://rebound.test/webhooks/shopify"
TOPICS = ["checkouts/create", "checkouts/update", "orders/create", "orders/paid"]


@pytest.fixture
def token(standin: ShopifyStandin) -> str:
    # A huge restore rate keeps THROTTLED waits (requested / restoreRate) to milliseconds.
    standin.add_shop(
        SHOP,
        name="Nordic Wool",
        email="owner@nordicwool.example",
        currency="SEK",
        locale="sv",
        iana_timezone="Europe/Stockholm",
        country_code="SE",
        restore_rate=1_000_000.0,
    )
    return standin.token_for(SHOP)


# --- shop


async def test_fetch_shop_reads_the_stores_settings(token: str) -> None:
    shop = await admin.fetch_shop(SHOP, token)

    assert shop.name == "Nordic Wool"
    assert shop.email == "owner@nordicwool.example"
    assert shop.currency_code == "SEK"
    assert shop.primary_locale == "sv"
    assert shop.iana_timezone == "Europe/Stockholm"
    assert shop.country_code == "SE"
    assert shop.address_lines[0] == "Nordic Wool"
    assert "Ottawa ON K2P 1L4" in shop.address_lines
    assert shop.primary_url == f"https://{SHOP}"


async def test_fetch_shop_without_read_locales_has_no_locale(standin: ShopifyStandin) -> None:
    standin.add_shop(SHOP, scopes=("read_orders",), currency="EUR")
    shop = await admin.fetch_shop(SHOP, standin.token_for(SHOP))

    assert shop.primary_locale is None
    assert shop.currency_code == "EUR"


# --- webhook subscriptions


async def test_ensure_webhook_subscriptions_twice_creates_each_once(
    standin: ShopifyStandin, token: str
) -> None:
    first = await admin.ensure_webhook_subscriptions(SHOP, token, CALLBACK, TOPICS)
    second = await admin.ensure_webhook_subscriptions(SHOP, token, CALLBACK, TOPICS)

    assert sorted(first) == sorted(TOPICS)
    assert second == []
    subscriptions = standin.subscriptions(SHOP)
    assert sorted(s["topic"] for s in subscriptions) == [
        "CHECKOUTS_CREATE",
        "CHECKOUTS_UPDATE",
        "ORDERS_CREATE",
        "ORDERS_PAID",
    ]
    assert {(s["uri"], s["format"]) for s in subscriptions} == {(CALLBACK, "JSON")}


async def test_a_subscription_to_another_address_does_not_count(
    standin: ShopifyStandin, token: str
) -> None:
    await admin.ensure_webhook_subscriptions(SHOP, token, "https://old.example/hooks", TOPICS[:1])

    created = await admin.ensure_webhook_subscriptions(SHOP, token, CALLBACK, TOPICS[:1])

    assert created == TOPICS[:1]
    assert len(standin.subscriptions(SHOP)) == 2


def test_topics_map_to_graphql_enum_values() -> None:
    assert admin.topic_enum("checkouts/create") == "CHECKOUTS_CREATE"
    assert admin.topic_enum("app/uninstalled") == "APP_UNINSTALLED"
    with pytest.raises(ValueError, match="not a webhook topic"):
        admin.topic_enum("CHECKOUTS_CREATE")


# --- throttling and errors


async def test_throttled_twice_then_answered(standin: ShopifyStandin, token: str) -> None:
    standin.throttle_next(2)
    started = time.monotonic()

    data = await admin.graphql(SHOP, token, "query { shop { name } }")

    assert data == {"shop": {"name": "Nordic Wool"}}
    assert len(standin.requests(SHOP)) == 3
    assert time.monotonic() - started < 2  # waits came from the reported cost, not a fixed delay


async def test_still_throttled_after_retries_raises(standin: ShopifyStandin, token: str) -> None:
    standin.throttle_next(100)

    with pytest.raises(admin.ShopifyThrottled):
        await admin.graphql(SHOP, token, "query { shop { name } }")

    assert len(standin.requests(SHOP)) == admin.MAX_THROTTLE_RETRIES + 1


def test_throttle_wait_follows_the_cost_report_within_bounds() -> None:
    def cost(requested: float, available: float, rate: float) -> dict[str, object]:
        status = {"maximumAvailable": 2000.0, "currentlyAvailable": available, "restoreRate": rate}
        return {"requestedQueryCost": requested, "actualQueryCost": None, "throttleStatus": status}

    assert admin.throttle_wait(cost(752, 666, 50.0)) == pytest.approx(1.72)
    assert admin.throttle_wait(cost(100_000, 0, 50.0)) == admin.MAX_THROTTLE_WAIT
    assert admin.throttle_wait(cost(10, 500, 50.0)) == admin.MIN_THROTTLE_WAIT
    assert admin.throttle_wait(cost(10, 0, 0.0)) == 1.0
    assert admin.throttle_wait(None) == 1.0


async def test_revoked_token_raises_token_revoked(standin: ShopifyStandin, token: str) -> None:
    await admin.fetch_shop(SHOP, token)
    standin.revoke(token)

    with pytest.raises(admin.ShopifyTokenRevoked):
        await admin.fetch_shop(SHOP, token)
    with pytest.raises(admin.ShopifyTokenRevoked):
        await admin.graphql(SHOP, "shpat_never_issued", "query { shop { name } }")


async def test_malformed_graphql_is_refused_with_shopifys_errors(token: str) -> None:
    with pytest.raises(admin.ShopifyApiError) as misspelled:
        await admin.graphql(SHOP, token, "query { shop { nme } }")
    assert "nme" in misspelled.value.errors[0]["message"]
    assert not isinstance(misspelled.value, admin.ShopifyThrottled)

    with pytest.raises(admin.ShopifyApiError) as unparsable:
        await admin.graphql(SHOP, token, "query { shop { name }")
    assert unparsable.value.errors[0]["locations"]

    with pytest.raises(admin.ShopifyApiError) as wrong_type:
        await admin.graphql(
            SHOP,
            token,
            "query($code: String!) { codeDiscountNodeByCode(code: $code) { id } }",
            {"code": 42},
        )
    assert "$code" in wrong_type.value.errors[0]["message"]


async def test_standin_answers_in_shopifys_shapes(standin: ShopifyStandin, token: str) -> None:
    url = f"{get_settings().shopify_api_origin}/admin/api/{admin.API_VERSION}/graphql.json"
    headers = {"Host": SHOP, "X-Shopify-Access-Token": token}
    async with httpx.AsyncClient() as client:
        ok = await client.post(url, headers=headers, json={"query": "{ shop { name } }"})
        bad = await client.post(url, headers=headers, json={"query": "{ shop { nme } }"})
        unauthorized = await client.post(
            url, headers={"Host": SHOP}, json={"query": "{ shop { id } }"}
        )
        old_version = await client.post(
            url.replace(admin.API_VERSION, "2023-01"),
            headers=headers,
            json={"query": "{ shop { id } }"},
        )

    assert ok.status_code == 200
    assert set(ok.json()["extensions"]["cost"]["throttleStatus"]) == {
        "maximumAvailable",
        "currentlyAvailable",
        "restoreRate",
    }
    assert (
        bad.status_code == 200 and "data" not in bad.json() and "cost" in bad.json()["extensions"]
    )
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }
    assert old_version.status_code == 404


# --- discount codes


async def test_discount_code_is_created_once(standin: ShopifyStandin, token: str) -> None:
    ends_at = datetime.now(UTC) + timedelta(days=7)
    arguments = {
        "code": "COMEBACK-7Q2K",
        "title": "Rebound: come back 15%",
        "kind": "percentage",
        "value": Decimal("15"),
        "currency": "SEK",
        "minimum_subtotal": Decimal("500"),
        "ends_at": ends_at,
    }

    first = await admin.create_discount_code(SHOP, token, **arguments)  # type: ignore[arg-type]
    second = await admin.create_discount_code(SHOP, token, **arguments)  # type: ignore[arg-type]

    assert first == second
    assert first.startswith("gid://shopify/DiscountCodeNode/")
    [discount] = standin.discounts(SHOP)
    sent = discount["input"]
    assert discount["kind"] == "DiscountCodeBasic"
    assert sent["usageLimit"] == 1 and sent["appliesOncePerCustomer"] is True
    assert sent["customerGets"]["value"] == {"percentage": 0.15}
    assert sent["minimumRequirement"]["subtotal"]["greaterThanOrEqualToSubtotal"] == "500.00"
    assert sent["context"] == {"all": "ALL"}


async def test_discount_code_for_a_known_customer_is_theirs_alone(
    standin: ShopifyStandin, token: str
) -> None:
    customer = standin.add_customer(SHOP, "Ada@Example.com")

    await admin.create_discount_code(
        SHOP,
        token,
        code="ADA-5",
        title="Rebound",
        kind="fixed_amount",
        value=Decimal("5"),
        currency="SEK",
        minimum_subtotal=None,
        ends_at=None,
        customer_email="ada@example.com",
    )

    [discount] = standin.discounts(SHOP)
    assert discount["input"]["context"] == {"customers": {"add": [customer]}}
    assert discount["input"]["customerGets"]["value"]["discountAmount"]["amount"] == "5.00"


async def test_fixed_amounts_use_the_currencys_minor_unit(
    standin: ShopifyStandin, token: str
) -> None:
    await admin.create_discount_code(
        SHOP,
        token,
        code="YEN",
        title="Rebound",
        kind="fixed_amount",
        value=Decimal("500.4"),
        currency="JPY",
        minimum_subtotal=None,
        ends_at=None,
    )

    [discount] = standin.discounts(SHOP)
    assert discount["input"]["customerGets"]["value"]["discountAmount"]["amount"] == "500"


async def test_free_shipping_code(standin: ShopifyStandin, token: str) -> None:
    await admin.create_discount_code(
        SHOP,
        token,
        code="SHIPFREE",
        title="Rebound: free shipping",
        kind="free_shipping",
        value=Decimal("0"),
        currency="SEK",
        minimum_subtotal=Decimal("300"),
        ends_at=None,
    )

    [discount] = standin.discounts(SHOP)
    assert discount["kind"] == "DiscountCodeFreeShipping"
    assert discount["input"]["destination"] == {"all": True}
    assert "customerGets" not in discount["input"]


async def test_rejected_discount_raises_user_errors(standin: ShopifyStandin, token: str) -> None:
    with pytest.raises(admin.ShopifyUserErrors) as rejected:
        await admin.create_discount_code(
            SHOP,
            token,
            code="LATE",
            title="Rebound",
            kind="percentage",
            value=Decimal("10"),
            currency="SEK",
            minimum_subtotal=None,
            ends_at=datetime.now(UTC) - timedelta(days=1),
        )

    assert [e["code"] for e in rejected.value.user_errors] == ["END_DATE_BEFORE_START_DATE"]
    assert standin.discounts(SHOP) == []


# --- variants


async def test_fetch_variants_in_one_request(standin: ShopifyStandin, token: str) -> None:
    standin.add_variant(
        SHOP,
        variant_id=101,
        title="Grey / M",
        price="899.00",
        product_title="Wool Sweater",
        handle="wool-sweater",
        image_url="https://cdn.example/sweater-grey.jpg",
        image_alt="Grey sweater",
    )
    standin.add_variant(
        SHOP,
        variant_id=102,
        title="Default Title",
        price="149.50",
        product_title="Socks",
        handle="socks",
        available=False,
        inventory=0,
        product_image_url="https://cdn.example/socks.jpg",
    )
    requests_before = len(standin.requests(SHOP))

    variants = await admin.fetch_variants(
        SHOP, token, ["101", "gid://shopify/ProductVariant/102", "999"]
    )

    assert len(standin.requests(SHOP)) == requests_before + 1
    assert set(variants) == {"101", "gid://shopify/ProductVariant/102"}
    sweater = variants["101"]
    assert sweater.price == Decimal("899.00")
    assert sweater.product_title == "Wool Sweater"
    assert sweater.image_url == "https://cdn.example/sweater-grey.jpg"
    assert sweater.product_url == f"https://{SHOP}/products/wool-sweater"
    socks = variants["gid://shopify/ProductVariant/102"]
    assert socks.available_for_sale is False and socks.inventory_quantity == 0
    assert socks.image_url == "https://cdn.example/socks.jpg"  # the product's featured image


async def test_fetch_variants_without_inventory_access(standin: ShopifyStandin) -> None:
    standin.add_shop(SHOP, scopes=("read_products",))
    standin.add_variant(
        SHOP, variant_id=7, title="One", price="10.00", product_title="Mug", handle="mug"
    )

    variants = await admin.fetch_variants(SHOP, standin.token_for(SHOP), [7])

    assert variants["7"].title == "One"
    assert variants["7"].inventory_quantity is None


# --- access tokens


async def test_authorization_code_grant(standin: ShopifyStandin, token: str) -> None:
    code = standin.issue_code(SHOP)

    grant = await tokens.exchange_code(SHOP, code)

    assert (await admin.fetch_shop(SHOP, grant.access_token)).name == "Nordic Wool"
    # Expiring, as public apps must use: an hour, and a refresh token for 90 days.
    assert grant.refresh_token and grant.expires_at and grant.refresh_expires_at
    assert timedelta(minutes=59) < grant.expires_at - utcnow() <= timedelta(hours=1)
    assert grant.refresh_expires_at - utcnow() > timedelta(days=89)
    with pytest.raises(admin.ShopifyApiError) as reused:
        await tokens.exchange_code(SHOP, code)
    assert reused.value.status == 400


async def test_code_grant_refuses_a_domain_outside_myshopify(standin: ShopifyStandin) -> None:
    with pytest.raises(ValueError, match="myshopify"):
        await tokens.exchange_code("attacker.example", "code")


async def test_token_exchange_for_an_offline_token(standin: ShopifyStandin, token: str) -> None:
    session_token = standin.id_token(SHOP)
    details = shopify_app.IdTokenDetails(
        exchangeable=True,
        token=session_token,
        claims=jwt.decode(session_token, options={"verify_signature": False}),
    )

    grant = await tokens.exchange_id_token(SHOP, details)

    assert (await admin.fetch_shop(SHOP, grant.access_token)).name == "Nordic Wool"
    assert grant.refresh_token and grant.expires_at and grant.expires_at > utcnow()


async def test_token_exchange_refuses_a_forged_session_token(
    standin: ShopifyStandin, token: str
) -> None:
    forged = standin.id_token(SHOP, secret="not-the-app-secret-but-long-enough-for-hs256")
    details = {
        "exchangeable": True,
        "token": forged,
        "claims": jwt.decode(forged, options={"verify_signature": False}),
    }

    with pytest.raises(admin.ShopifyApiError, match="invalid_subject_token"):
        await tokens.exchange_id_token(SHOP, details)
    with pytest.raises(ValueError, match="not 'other.myshopify.com'"):
        await tokens.exchange_id_token("other.myshopify.com", details)
