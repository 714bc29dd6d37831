"""The WooCommerce REST client against the local WooCommerce stand-in on a real socket, with a
receiver on another socket for what the stand-in sends (webhooks, pings, wc-auth callbacks)."""

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.settings import get_settings
from integrations.woocommerce import api
from integrations.woocommerce.standin import (
    StandinStore,
    WcAuthError,
    WooCommerceStandin,
    order_payload,
    serve,
    serve_app,
)

DOMAIN = "woo-rebound-test.example"
DELIVERY_URL = "https://rebound.test/webhooks/woocommerce"
SECRET = "rebound-webhook-secret"
FIXTURES = Path(__file__).parent / "fixtures" / "woocommerce"


@dataclass
class Received:
    method: str
    path: str
    host: str
    headers: httpx.Headers
    body: bytes


@dataclass
class Receiver:
    """A server that records every request and answers `status`."""

    status: int = 200
    requests: list[Received] = field(default_factory=list)

    async def handle(self, request: Request) -> PlainTextResponse:
        self.requests.append(
            Received(
                request.method,
                request.url.path,
                request.headers.get("host", ""),
                httpx.Headers(request.headers.raw),
                await request.body(),
            )
        )
        return PlainTextResponse("ok", status_code=self.status)

    def of(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    recorder = Receiver()
    app = Starlette(routes=[Route("/{path:path}", recorder.handle, methods=["GET", "POST"])])
    async with serve_app(app) as origin:
        yield recorder, origin


@pytest.fixture
async def standin(receiver: tuple[Receiver, str]) -> AsyncIterator[WooCommerceStandin]:
    """The stand-in on a free port with WOOCOMMERCE_API_ORIGIN pointed at it (the cached settings
    object is changed and restored); what it sends lands on the receiver."""
    standin = WooCommerceStandin(outbound_origin=receiver[1])
    settings = get_settings()
    saved = settings.woocommerce_api_origin
    async with serve(standin) as origin:
        settings.woocommerce_api_origin = origin
        try:
            yield standin
        finally:
            settings.woocommerce_api_origin = saved


@pytest.fixture
def store(standin: WooCommerceStandin) -> StandinStore:
    return standin.add_store(
        DOMAIN,
        name="Nordic Wool",
        currency="SEK",
        language="sv_SE",
        timezone="Europe/Stockholm",
        address_1="Drottninggatan 1",
        city="Stockholm",
        state="",
        postcode="111 51",
        country="SE",
    )


def expected_signature(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- webhooks


async def test_ensure_webhooks_twice_creates_each_once(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    first = await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, api.WEBHOOK_TOPICS)
    second = await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, api.WEBHOOK_TOPICS)

    assert first == list(api.WEBHOOK_TOPICS)
    assert second == []
    hooks = standin.webhooks(DOMAIN)
    assert sorted(h["topic"] for h in hooks) == sorted(api.WEBHOOK_TOPICS)
    assert {(h["delivery_url"], h["secret"], h["status"]) for h in hooks} == {
        (DELIVERY_URL, SECRET, "active")
    }
    creates = [r for r in standin.requests(DOMAIN) if r["method"] == "POST"]
    assert len(creates) == 5
    assert creates[0]["json"] == {
        "name": "Rebound order.created",
        "topic": "order.created",
        "delivery_url": DELIVERY_URL,
        "secret": SECRET,
        "status": "active",
    }


async def test_reconnecting_with_a_new_secret_sets_it_on_the_webhooks_kept(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    await api.ensure_webhooks(store.credentials, DELIVERY_URL, "old-secret", api.WEBHOOK_TOPICS)
    again = await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, api.WEBHOOK_TOPICS)

    assert again == []
    hooks = standin.webhooks(DOMAIN)
    assert len(hooks) == len(api.WEBHOOK_TOPICS)
    assert {h["secret"] for h in hooks} == {SECRET}


async def test_ensure_webhooks_reads_every_page(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    # Oldest first, so the list (newest first, 100 a page) shows it on page 2.
    standin.add_webhook(DOMAIN, topic="order.created", delivery_url=DELIVERY_URL, secret=SECRET)
    for _ in range(100):
        standin.add_webhook(DOMAIN, topic="order.created", delivery_url="https://other.example/h")

    created = await api.ensure_webhooks(
        store.credentials, DELIVERY_URL, SECRET, ["order.created", "order.updated"]
    )

    assert created == ["order.updated"]
    pages = [r["query"] for r in standin.requests(DOMAIN) if r["method"] == "GET"]
    assert pages == [{"per_page": "100", "page": "1"}, {"per_page": "100", "page": "2"}]


async def test_a_webhook_to_another_address_does_not_count(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    standin.add_webhook(DOMAIN, topic="order.created", delivery_url="https://old.example/hooks")

    created = await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["order.created"])

    assert created == ["order.created"]
    assert sorted(h["delivery_url"] for h in standin.webhooks(DOMAIN)) == [
        "https://old.example/hooks",
        DELIVERY_URL,
    ]


async def test_a_disabled_webhook_is_switched_back_on(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    old = standin.add_webhook(
        DOMAIN, topic="order.updated", delivery_url=DELIVERY_URL, secret="old", status="disabled"
    )

    created = await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["order.updated"])

    assert created == []
    [hook] = standin.webhooks(DOMAIN)
    assert hook["id"] == old["id"]
    assert (hook["status"], hook["secret"]) == ("active", SECRET)


async def test_unknown_topics_are_refused(store: StandinStore) -> None:
    with pytest.raises(ValueError, match="topic"):
        await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["orders/create"])


async def test_the_creation_ping_is_unsigned_and_form_encoded(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver

    await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["order.created"])

    [hook] = standin.webhooks(DOMAIN)
    [ping] = recorder.of("/webhooks/woocommerce")
    assert ping.method == "POST"
    assert ping.host == "rebound.test"
    assert ping.body == f"webhook_id={hook['id']}".encode()
    assert ping.headers["content-type"] == "application/x-www-form-urlencoded"
    assert ping.headers["user-agent"].startswith("WooCommerce/")
    assert "Hookshot (WordPress/" in ping.headers["user-agent"]
    assert "x-wc-webhook-signature" not in ping.headers
    assert not [name for name in ping.headers if name.lower().startswith("x-wc-")]
    assert hook["pending_delivery"] is False


async def test_fired_deliveries_are_signed_like_woocommerce(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver
    await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["order.created"])
    recorder.requests.clear()
    order = standin.add_order(
        DOMAIN,
        billing={"first_name": "Åsa", "email": "asa@example.com"},
        line_items=[{"product_id": 93, "name": "Wool Sweater", "quantity": 2, "price": "899.00"}],
    )

    [delivery] = await standin.fire(DOMAIN, "order.created", order)

    [received] = recorder.requests
    [hook] = standin.webhooks(DOMAIN)
    assert delivery.status == 200
    assert received.body == delivery.body
    assert received.headers["x-wc-webhook-signature"] == expected_signature(received.body, SECRET)
    assert received.headers["x-wc-webhook-signature"] != expected_signature(received.body, "x")
    assert received.headers["x-wc-webhook-source"] == f"https://{DOMAIN}/"
    assert received.headers["x-wc-webhook-topic"] == "order.created"
    assert received.headers["x-wc-webhook-resource"] == "order"
    assert received.headers["x-wc-webhook-event"] == "created"
    assert received.headers["x-wc-webhook-id"] == str(hook["id"])
    assert len(received.headers["x-wc-webhook-delivery-id"]) == 32
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"].startswith("WooCommerce/")
    # PHP's wp_json_encode: slashes and non-ASCII escaped, which the signature covers.
    assert b"https:\\/\\/" in received.body and b"\\u00c5sa" in received.body
    assert json.loads(received.body) == order


async def test_a_deleted_resource_sends_only_its_id(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver
    await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["order.deleted"])
    recorder.requests.clear()

    await standin.fire(DOMAIN, "order.deleted", standin.add_order(DOMAIN, order_id=4242))

    [received] = recorder.requests
    assert received.body == b'{"id":4242}'
    assert received.headers["x-wc-webhook-signature"] == expected_signature(b'{"id":4242}', SECRET)


async def test_a_webhook_that_keeps_failing_is_disabled(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver
    await api.ensure_webhooks(store.credentials, DELIVERY_URL, SECRET, ["order.updated"])
    recorder.status = 500

    for _ in range(7):
        await standin.fire(DOMAIN, "order.updated", standin.add_order(DOMAIN))

    [hook] = standin.webhooks(DOMAIN)
    assert hook["status"] == "disabled"
    assert await standin.fire(DOMAIN, "order.updated", standin.add_order(DOMAIN)) == []


# --- coupons


async def test_coupon_is_created_once(standin: WooCommerceStandin, store: StandinStore) -> None:
    expires = datetime(2031, 5, 1, 10, 0, tzinfo=UTC)
    arguments = {
        "kind": "percentage",
        "amount": Decimal("15"),
        "email": "ada@example.com",
        "expires_at": expires,
        "minimum_amount": Decimal("50"),
    }

    first = await api.create_coupon(store.credentials, code="COMEBACK-7Q2K", **arguments)  # type: ignore[arg-type]
    second = await api.create_coupon(store.credentials, code="COMEBACK-7Q2K", **arguments)  # type: ignore[arg-type]

    assert first == second
    [coupon] = standin.coupons(DOMAIN)
    assert coupon["id"] == first
    assert coupon["code"] == "comeback-7q2k"
    assert (coupon["discount_type"], coupon["amount"]) == ("percent", "15.00")
    assert (coupon["usage_limit"], coupon["usage_limit_per_user"]) == (1, 1)
    assert coupon["individual_use"] is True and coupon["free_shipping"] is False
    assert coupon["email_restrictions"] == ["ada@example.com"]
    assert coupon["minimum_amount"] == "50.00"
    assert coupon["date_expires_gmt"] == "2031-05-01T10:00:00"
    assert coupon["date_expires"] == "2031-05-01T12:00:00"  # Stockholm, summer time
    calls = [(r["method"], r["path"]) for r in standin.requests(DOMAIN)]
    assert calls == [("POST", "/coupons"), ("POST", "/coupons"), ("GET", "/coupons")]


async def test_fixed_and_free_shipping_coupons(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    await api.create_coupon(
        store.credentials,
        code="FIVE",
        kind="fixed_amount",
        amount=Decimal("5"),
        email=None,
        expires_at=None,
        minimum_amount=None,
    )
    await api.create_coupon(
        store.credentials,
        code="SHIPFREE",
        kind="free_shipping",
        amount=Decimal("0"),
        email=None,
        expires_at=None,
        minimum_amount=Decimal("300"),
    )

    five, ship = sorted(standin.coupons(DOMAIN), key=lambda c: c["id"])
    assert (five["discount_type"], five["amount"], five["free_shipping"]) == (
        "fixed_cart",
        "5.00",
        False,
    )
    assert five["email_restrictions"] == [] and five["date_expires"] is None
    assert (ship["discount_type"], ship["amount"], ship["free_shipping"]) == (
        "fixed_cart",
        "0.00",
        True,
    )


async def test_coupon_arguments_are_checked(store: StandinStore) -> None:
    with pytest.raises(ValueError, match="percentage"):
        await api.create_coupon(
            store.credentials,
            code="X",
            kind="percentage",
            amount=Decimal("0"),
            email=None,
            expires_at=None,
            minimum_amount=None,
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        await api.create_coupon(
            store.credentials,
            code="X",
            kind="percentage",
            amount=Decimal("10"),
            email=None,
            expires_at=datetime(2031, 1, 1),  # noqa: DTZ001 - the point of the test
            minimum_amount=None,
        )


# --- products


async def test_products_are_fetched_in_batches_of_100(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    products = [
        standin.add_product(DOMAIN, name=f"Product {n}", price=f"{n}.50") for n in range(130)
    ]
    sweater = standin.add_product(
        DOMAIN,
        name="Wool Sweater",
        price="899.00",
        stock_status="outofstock",
        stock_quantity=0,
        image_url="https://woo-rebound-test.example/wp-content/uploads/sweater.jpg",
        image_alt="Grey sweater",
    )
    wanted = [str(p["id"]) for p in products[:120]] + [str(sweater["id"]), "999999"]

    found = await api.fetch_products(store.credentials, wanted)

    requests = [r for r in standin.requests(DOMAIN) if r["path"] == "/products"]
    assert [len(r["query"]["include"].split(",")) for r in requests] == [100, 22]
    assert all(r["query"]["per_page"] == "100" for r in requests)
    assert set(found) == set(wanted) - {"999999"}
    info = found[str(sweater["id"])]
    assert info.name == "Wool Sweater"
    assert info.price == Decimal("899.00")
    assert info.stock_status == "outofstock" and not info.available
    assert info.stock_quantity == 0
    assert info.image_url == "https://woo-rebound-test.example/wp-content/uploads/sweater.jpg"
    assert info.image_alt == "Grey sweater"
    assert info.permalink == f"https://{DOMAIN}/product/wool-sweater/"
    assert found[str(products[3]["id"])].price == Decimal("3.50")


async def test_variations_of_a_variable_product(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    shirt = standin.add_product(DOMAIN, name="Ship Your Idea", price="9.00")
    black = standin.add_variation(
        DOMAIN,
        shirt["id"],
        attributes={"pa_color": "Black"},
        price="9.00",
        image_url="https://woo-rebound-test.example/wp-content/uploads/black.jpg",
    )
    standin.add_variation(DOMAIN, shirt["id"], attributes={"pa_color": "Green"}, price="10.00")

    found = await api.fetch_variations(store.credentials, shirt["id"], [black["id"]])

    [info] = found.values()
    assert info.id == str(black["id"]) and info.parent_id == str(shirt["id"])
    assert info.name == "Black"
    assert info.price == Decimal("9.00")
    assert info.image_url == "https://woo-rebound-test.example/wp-content/uploads/black.jpg"
    assert info.permalink.endswith("?attribute_pa_color=black")  # type: ignore[union-attr]


async def test_transient_errors_are_retried(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    product = standin.add_product(DOMAIN, name="Mug", price="12.00")
    standin.fail_next(2, status=503)

    found = await api.fetch_products(store.credentials, [str(product["id"])])

    assert found[str(product["id"])].name == "Mug"
    assert len(standin.requests(DOMAIN)) == 3


# --- authentication and errors


async def test_a_bad_key_is_unauthorized(standin: WooCommerceStandin, store: StandinStore) -> None:
    good = store.credentials
    wrong_secret = api.StoreCredentials(good.base_url, good.consumer_key, "cs_wrong")
    unknown_key = api.StoreCredentials(good.base_url, "ck_unknown", good.consumer_secret)

    with pytest.raises(api.WooCommerceUnauthorized) as bad_secret:
        await api.fetch_products(wrong_secret, ["1"])
    with pytest.raises(api.WooCommerceUnauthorized) as anonymous:
        await api.ensure_webhooks(unknown_key, DELIVERY_URL, SECRET, ["order.created"])
    standin.revoke_key(DOMAIN, good.consumer_key)
    with pytest.raises(api.WooCommerceUnauthorized) as revoked:
        await api.fetch_store_settings(good)

    assert (bad_secret.value.status, bad_secret.value.code) == (
        401,
        "woocommerce_rest_authentication_error",
    )
    assert bad_secret.value.message == "Consumer secret is invalid."
    assert anonymous.value.code == "woocommerce_rest_cannot_view"
    assert revoked.value.code == "woocommerce_rest_cannot_view"


async def test_a_read_only_key_cannot_create(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    read_only = standin.add_key(DOMAIN, permissions="read")

    with pytest.raises(api.WooCommerceUnauthorized, match="does not have write permissions"):
        await api.create_coupon(
            read_only,
            code="NOPE",
            kind="fixed_amount",
            amount=Decimal("5"),
            email=None,
            expires_at=None,
            minimum_amount=None,
        )
    assert standin.coupons(DOMAIN) == []


async def test_only_https_stores_get_the_key(store: StandinStore) -> None:
    plain = api.StoreCredentials(f"http://{DOMAIN}", "ck_x", "cs_x")

    with pytest.raises(ValueError, match="https"):
        await api.fetch_store_settings(plain)
    assert "cs_x" not in repr(plain)


async def test_standin_answers_in_woocommerce_shapes(
    standin: WooCommerceStandin, store: StandinStore
) -> None:
    origin = get_settings().woocommerce_api_origin
    url = f"{origin}/wp-json/wc/v3/webhooks"
    auth = (store.credentials.consumer_key, store.credentials.consumer_secret)
    async with httpx.AsyncClient() as client:
        listed = await client.get(url, headers={"Host": DOMAIN}, auth=auth)
        too_many = await client.get(
            url, params={"per_page": 101}, headers={"Host": DOMAIN}, auth=auth
        )
        anonymous = await client.get(url, headers={"Host": DOMAIN})
        no_route = await client.get(f"{origin}/wp-json/wc/v3/nothing", headers={"Host": DOMAIN})
        not_trashable = await client.delete(f"{url}/1", headers={"Host": DOMAIN}, auth=auth)

    assert listed.status_code == 200 and listed.json() == []
    assert (listed.headers["x-wp-total"], listed.headers["x-wp-totalpages"]) == ("0", "0")
    assert too_many.status_code == 400 and too_many.json()["code"] == "rest_invalid_param"
    assert anonymous.status_code == 401
    assert anonymous.json() == {
        "code": "woocommerce_rest_cannot_view",
        "message": "Sorry, you cannot list resources.",
        "data": {"status": 401},
    }
    assert no_route.json()["code"] == "rest_no_route"
    assert not_trashable.status_code == 501


# --- store settings


async def test_fetch_store_settings(store: StandinStore) -> None:
    settings = await api.fetch_store_settings(store.credentials)

    assert settings.currency == "SEK"
    assert (settings.country, settings.state) == ("SE", None)
    assert settings.city == "Stockholm" and settings.postcode == "111 51"
    assert settings.address_lines == ("Drottninggatan 1", "111 51 Stockholm", "SE")
    assert settings.language == "sv_SE"
    assert settings.home_url == f"https://{DOMAIN}"
    assert settings.price_decimals == 2


# --- wc-auth


def authorize_url(callback_url: str = "https://rebound.test/auth/woocommerce/callback") -> str:
    """As the docs build it: /wc-auth/v1/authorize with the five parameters."""
    params = {
        "app_name": "Rebound",
        "scope": "read_write",
        "user_id": 123,
        "return_url": "https://rebound.test/auth/woocommerce/return",
        "callback_url": callback_url,
    }
    return f"https://{DOMAIN}/wc-auth/v1/authorize?{urlencode(params)}"


async def test_approving_posts_the_documented_keys(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver

    redirect = await standin.approve(authorize_url())

    [callback] = recorder.of("/auth/woocommerce/callback")
    assert callback.method == "POST" and callback.host == "rebound.test"
    assert callback.headers["content-type"].startswith("application/json")
    posted = json.loads(callback.body)
    assert set(posted) == {
        "key_id",
        "user_id",
        "consumer_key",
        "consumer_secret",
        "key_permissions",
    }
    assert posted["user_id"] == "123"  # echoed as given in the query string
    assert posted["key_permissions"] == "read_write"
    assert posted["consumer_key"].startswith("ck_") and posted["consumer_secret"].startswith("cs_")
    assert isinstance(posted["key_id"], int)
    parts = urlsplit(redirect)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://rebound.test/auth/woocommerce/return"
    )
    assert parse_qs(parts.query) == {"success": ["1"], "user_id": ["123"]}
    # The key works.
    granted = api.StoreCredentials(
        f"https://{DOMAIN}", posted["consumer_key"], posted["consumer_secret"]
    )
    assert (await api.fetch_store_settings(granted)).currency == "SEK"


async def test_denying_sends_no_keys(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver
    keys_before = set(store.keys)

    redirect = await standin.deny(authorize_url())

    assert parse_qs(urlsplit(redirect).query) == {"success": ["0"], "user_id": ["123"]}
    assert recorder.requests == [] and set(store.keys) == keys_before


async def test_a_failed_callback_keeps_no_key(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    recorder, _ = receiver
    recorder.status = 500
    keys_before = set(store.keys)

    with pytest.raises(WcAuthError, match="unable to send the consumer data"):
        await standin.approve(authorize_url())
    with pytest.raises(WcAuthError, match="needs to be over SSL"):
        await standin.approve(authorize_url(callback_url="http://rebound.test/callback"))
    assert set(store.keys) == keys_before


async def test_the_authorize_page_over_http(
    standin: WooCommerceStandin, store: StandinStore, receiver: tuple[Receiver, str]
) -> None:
    origin = get_settings().woocommerce_api_origin
    path = urlsplit(authorize_url())
    async with httpx.AsyncClient(headers={"Host": DOMAIN}) as client:
        page = await client.get(f"{origin}{path.path}?{path.query}")
        approve_href = page.text.split('class="wc-auth-approve" href="')[1].split('"')[0]
        approve = urlsplit(approve_href.replace("&amp;", "&"))
        granted = await client.get(f"{origin}{approve.path}?{approve.query}")
        refused = await client.get(f"{origin}/wc-auth/v1/authorize?app_name=Rebound")

    assert page.status_code == 200
    assert granted.status_code == 302
    assert granted.headers["location"].startswith("https://rebound.test/auth/woocommerce/return?")
    assert len(receiver[0].of("/auth/woocommerce/callback")) == 1
    assert refused.status_code == 401 and "Error: Missing parameter user_id." in refused.text


# --- order payloads


def test_order_payload_has_the_documented_shape() -> None:
    documented = json.loads((FIXTURES / "order.json").read_text())
    created = datetime(2017, 3, 22, 19, 28, 2, tzinfo=UTC)

    order = order_payload(
        order_id=727,
        store_url="https://example.com",
        status="pending",
        billing=documented["billing"],
        shipping=documented["shipping"],
        line_items=[
            {"product_id": 93, "name": "Woo Single #1", "quantity": 2, "price": "3.00"},
            {
                "product_id": 22,
                "variation_id": 23,
                "name": "Ship Your Idea",
                "quantity": 1,
                "price": "12.00",
                "sku": "Bar3",
                "image_src": "https://example.com/wp-content/uploads/shirt.jpg",
            },
        ],
        shipping_total="10.00",
        created_at=created,
        modified_at=created + timedelta(seconds=6),
        timezone="America/Sao_Paulo",
    )

    assert set(documented) <= set(order)
    assert set(documented["billing"]) == set(order["billing"])
    assert set(documented["shipping"]) <= set(order["shipping"])
    for item in order["line_items"]:
        assert set(documented["line_items"][0]) <= set(item)
    assert order["date_created"] == documented["date_created"]
    assert order["date_created_gmt"] == documented["date_created_gmt"]
    assert (order["total"], order["shipping_total"]) == ("28.00", "10.00")
    assert order["line_items"][1]["image"]["src"].endswith("shirt.jpg")
    assert order["needs_payment"] is True and order["date_paid"] is None
    assert order["payment_url"] == (
        f"https://example.com/checkout/order-pay/727/?pay_for_order=true&key={order['order_key']}"
    )
    assert order["_links"] == documented["_links"]
