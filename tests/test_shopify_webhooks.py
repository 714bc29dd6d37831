"""Shopify's documented payloads become domain events; anything else is a clear InvalidPayload."""

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from shopify_app import AppConfig, RequestInput, verify_webhook_req
from sqlmodel import col, select

from app.commerce import repository as commerce
from app.commerce.events import (
    CheckoutChanged,
    InvalidPayload,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
    Tracking,
)
from app.db import sessionmaker
from app.inbox.models import InboxEntry, InboxStatus
from app.shops.models import Shop
from integrations.shopify import webhooks
from tests.conftest import SHOP_DOMAIN, SHOP_SECRET, wait_for
from tests.shopify import fixture, post, signature

DOC_ORDER_ID = "820982911946154508"  # above 2**53: a float would round it
DOC_MOMENT = datetime(2022, 1, 1, 0, 0, tzinfo=UTC)  # the samples' 2021-12-31T19:00:00-05:00
UPS_URL = "https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums=1z827wk74630"


def test_documented_checkout_becomes_a_checkout_event() -> None:
    (event,) = webhooks.events("checkouts/create", fixture("checkouts_create"))

    assert isinstance(event, CheckoutChanged)
    assert event.token == "7c2f0d9e8b1a4c3d5e6f7a8b9c0d1e2f"
    assert event.email == "jane.doe@example.com"
    assert (event.first_name, event.last_name) == ("Jane", "Doe")
    assert event.phone == "555-555-0142"  # the billing address's: no checkout or customer phone
    assert event.currency == "USD"
    assert event.total_price == "146.28"
    assert event.restore_url and event.restore_url.endswith("/recover?key=5d2b8e1f0c9a7364e2d1")
    assert event.started_at == datetime(2025, 3, 14, 14, 21, 7, tzinfo=UTC)  # -04:00 → UTC
    assert event.completed_at is None
    assert [(i.title, i.variant_title, i.quantity, i.price) for i in event.line_items] == [
        ("Merino Crew Sweater", "Charcoal / M", 1, "89.00"),
        ("Wool Beanie", "Oatmeal", 2, "24.50"),
    ]


def test_checkout_without_id_as_sent_since_2026_04_is_read_the_same() -> None:
    with_id = webhooks.events("checkouts/update", fixture("checkouts_create"))
    without_id = webhooks.events("checkouts/update", fixture("checkouts_create_no_id"))

    assert with_id == without_id


def test_shopifys_own_sample_with_ids_above_2_to_the_53_is_read() -> None:
    (event,) = webhooks.events("checkouts/create", fixture("checkouts_create_doc_sample_bigid"))

    assert isinstance(event, CheckoutChanged)
    assert event.token


def test_the_name_comes_whole_from_one_place_and_the_checkouts_own_phone_comes_first() -> None:
    # Shopify's sample: customer John Smith, billed to Bob Biller, shipped to Steve Shipper.
    sample = fixture("checkouts_create_doc_sample_bigid")
    first_name_only = copy.deepcopy(sample)
    first_name_only["customer"]["last_name"] = None
    no_customer = sample | {"customer": None, "phone": "+1 613 555 0100"}

    (documented,) = webhooks.events("checkouts/create", sample)
    (half_named,) = webhooks.events("checkouts/create", first_name_only)
    (guest,) = webhooks.events("checkouts/create", no_customer)

    assert isinstance(documented, CheckoutChanged)
    assert (documented.first_name, documented.last_name) == ("John", "Smith")
    assert documented.phone == "555-555-BILL"
    assert isinstance(half_named, CheckoutChanged)
    assert (half_named.first_name, half_named.last_name) == ("John", None)  # never "John Biller"
    assert isinstance(guest, CheckoutChanged)
    assert (guest.first_name, guest.last_name, guest.phone) == ("Bob", "Biller", "+1 613 555 0100")


def test_prices_are_in_the_currency_the_shopper_saw() -> None:
    payload = fixture("checkouts_create") | {"currency": "USD", "presentment_currency": "SEK"}

    (event,) = webhooks.events("checkouts/create", payload)

    assert isinstance(event, CheckoutChanged) and event.currency == "SEK"


def test_documented_order_keeps_its_id_exact_and_uses_presentment_money() -> None:
    payload = fixture("orders_create")
    payload["id"] = 2**63 - 1
    payload["total_price_set"]["presentment_money"] = {"amount": "1499.00", "currency_code": "SEK"}

    (event,) = webhooks.events("orders/paid", payload)

    assert isinstance(event, OrderPlaced)
    assert event.platform_id == "9223372036854775807"
    assert (event.currency, Decimal(event.total_price)) == ("SEK", Decimal("1499.00"))
    assert event.checkout_token == "7c2f0d9e8b1a4c3d5e6f7a8b9c0d1e2f"
    assert event.name == "#1042"


def test_topics_rebound_does_not_use_carry_no_events() -> None:
    assert webhooks.events("products/update", {"id": 1}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": None}, "token is missing"),
        ({"token": 12}, "token must be a string"),
        ({"line_items": "none"}, "line_items must be a list"),
        ({"line_items": [{"title": "x", "quantity": "2", "price": "1"}]}, "quantity"),
        ({"line_items": [{"title": "x", "quantity": 1, "price": "abc"}]}, "price"),
        ({"total_price": 1.5}, "total_price must be a decimal string"),
        ({"total_price": "NaN"}, "finite"),
        ({"created_at": "yesterday"}, "not an ISO 8601 timestamp"),
        ({"updated_at": "2025-03-14T10:21:07"}, "no UTC offset"),
        ({"customer": "jane"}, "customer must be an object"),
    ],
)
def test_malformed_checkouts_are_refused_with_the_reason(change: dict, message: str) -> None:
    payload = fixture("checkouts_create") | change

    with pytest.raises(InvalidPayload, match=message):
        webhooks.events("checkouts/create", payload)


@pytest.mark.parametrize("bad_id", [1.0e20, "12ab", -5, True, None])
def test_order_ids_must_be_exact_integers(bad_id: object) -> None:
    with pytest.raises(InvalidPayload, match="id must be a positive integer"):
        webhooks.events("orders/create", fixture("orders_create") | {"id": bad_id})


def test_payload_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="must be a JSON object"):
        webhooks.events("checkouts/create", [1, 2])


def test_signature_is_checked_on_the_raw_bytes() -> None:
    body = b'{"token":"abc", "note": "caf\xc3\xa9"}'
    headers = {"x-shopify-hmac-sha256": signature("secret", body)}

    assert webhooks.is_genuine("secret", headers, body)
    assert not webhooks.is_genuine("other", headers, body)
    assert not webhooks.is_genuine("secret", headers, body + b" ")
    assert not webhooks.is_genuine("secret", {}, body)
    assert not webhooks.is_genuine("secret", headers, b"\xff\xfe")


@pytest.mark.parametrize(
    ("secret", "headers", "body"),
    [
        ("secret", {"x-shopify-hmac-sha256": signature("secret", b"{}")}, b"{}"),
        ("secret", {"shopify-hmac-sha256": signature("secret", b"{}")}, b"{}"),
        ("other", {"x-shopify-hmac-sha256": signature("secret", b"{}")}, b"{}"),
        ("secret", {"x-shopify-hmac-sha256": signature("secret", b"{}")}, b"{} "),
        ("secret", {"x-shopify-hmac-sha256": ""}, b"{}"),
        ("secret", {"x-shopify-hmac-sha256": "", "shopify-hmac-sha256": signature("secret", b"{}")},
         b"{}"),
        ("secret", {"x-shopify-hmac-sha256": "caf\u00e9"}, b"{}"),
        ("secret", {"x-shopify-hmac-sha256": signature("secret", b"[1]")[:-1]}, b"[1]"),
        ("secret", {"x-shopify-hmac-sha256": signature("secret", b"not json")}, b"not json"),
        ("s\u00e9cret", {"x-shopify-hmac-sha256": signature("s\u00e9cret", "\u00e9".encode())},
         "\u00e9".encode()),
        ("secret", {}, b"{}"),
    ],
)  # fmt: skip
def test_the_signature_check_agrees_with_shopify_app(
    secret: str, headers: dict[str, str], body: bytes
) -> None:
    # is_genuine does shopify_app's comparison without the library's log redaction.
    request = RequestInput(method="POST", headers=headers, url="", body=body.decode())
    config = AppConfig(client_id="shopify", client_secret=secret, old_client_secret=None)
    try:
        theirs = verify_webhook_req(request, config).ok
    except TypeError:  # compare_digest refuses non-ASCII text
        theirs = False
    assert webhooks.is_genuine(secret, headers, body) is theirs


def test_event_id_identifies_a_delivery_together_with_its_topic() -> None:
    create = {"x-shopify-topic": "orders/create", "x-shopify-event-id": "e1"}
    paid = {"x-shopify-topic": "orders/paid", "x-shopify-event-id": "e1"}
    only_webhook_id = {"x-shopify-topic": "orders/paid", "x-shopify-webhook-id": "w1"}

    assert webhooks.delivery_id(create) != webhooks.delivery_id(paid)
    assert webhooks.delivery_id(create) == webhooks.delivery_id(dict(create))
    assert webhooks.delivery_id(only_webhook_id) == "webhook:w1"
    assert webhooks.delivery_id({}) is None


def test_documented_order_keeps_its_items_shipping_country_and_locale() -> None:
    (event,) = webhooks.events("orders/create", fixture("orders_create"))

    assert isinstance(event, OrderPlaced)
    assert [(i.title, i.variant_title, i.quantity, i.price) for i in event.line_items] == [
        ("Merino Crew Sweater", "Charcoal / M", 1, "89.00"),
        ("Wool Beanie", "Oatmeal", 2, "24.50"),
    ]
    assert [(i.variant_id, i.product_id) for i in event.line_items] == [
        ("44123456789012", "8012345678901"),
        ("44123456789013", "8012345678902"),
    ]
    assert event.shipping_country == "US"
    assert event.locale == "en"
    assert event.first_name == "Jane"  # the customer's, to greet her after the purchase


def test_order_line_prices_are_in_the_currency_the_shopper_saw() -> None:
    payload = fixture("orders_create")
    payload["line_items"][0]["price_set"]["presentment_money"] = {
        "amount": "949.00",
        "currency_code": "SEK",
    }

    (event,) = webhooks.events("orders/paid", payload)

    assert isinstance(event, OrderPlaced)
    assert [item.price for item in event.line_items] == ["949.00", "24.50"]


def test_order_without_a_shipping_address_has_no_shipping_country() -> None:
    payload = fixture("orders_create") | {"shipping_address": None, "customer_locale": None}

    (event,) = webhooks.events("orders/create", payload)

    assert isinstance(event, OrderPlaced)
    assert (event.shipping_country, event.locale) == (None, None)


def test_documented_cancelled_order_is_recorded_before_its_cancellation() -> None:
    placed, cancelled = webhooks.events("orders/cancelled", fixture("orders_cancelled"))

    assert isinstance(placed, OrderPlaced)
    assert placed.platform_id == DOC_ORDER_ID
    assert (placed.name, placed.currency, placed.total_price) == ("#9999", "USD", "404.95")
    assert (placed.shipping_country, placed.locale) == ("US", "en")
    # Custom items in the sample have neither product nor variant.
    assert [(i.title, i.price, i.product_id, i.variant_id) for i in placed.line_items] == [
        ("Aviator sunglasses", "89.99", "788032119674292922", None),
        ("Lens Protection Plan (2 Year)", "19.99", None, None),
        ("Premium Leather Case", "24.99", None, None),
        ("Mid-century lounger", "159.99", "788032119674292922", None),
        ("Coffee table", "119.99", "788032119674292922", None),
    ]
    assert cancelled == OrderCancelled(order_id=DOC_ORDER_ID, cancelled_at=DOC_MOMENT)


def test_documented_refund_returns_the_sum_of_its_refund_transactions() -> None:
    (event,) = webhooks.events("refunds/create", fixture("refunds_create"))

    # 75.00 + 10.00 left the store; the line items' 414.95 subtotal is not what was paid back.
    assert event == OrderRefunded(
        order_id=DOC_ORDER_ID,
        refund_id="890088186047892319",
        amount="85.00",
        refunded_at=DOC_MOMENT,
    )


def test_refund_amount_counts_only_successful_refund_transactions() -> None:
    payload = fixture("refunds_create")
    paid_back, _ = payload["transactions"]
    payload["transactions"] = [
        paid_back,  # 75.00
        paid_back | {"status": "pending", "amount": "1.00"},
        paid_back | {"status": "failure", "amount": "2.00"},
        paid_back | {"status": "error", "amount": "4.00"},
        paid_back | {"kind": "sale", "amount": "8.00"},
        paid_back | {"kind": "void", "amount": "16.00"},
        paid_back | {"amount": "0.50"},
    ]

    (event,) = webhooks.events("refunds/create", payload)

    assert isinstance(event, OrderRefunded) and event.amount == "75.50"


def test_refund_that_returned_no_money_carries_no_event() -> None:
    payload = fixture("refunds_create")
    restock_only = payload | {"transactions": [], "restock": True}
    only_pending = payload | {
        "transactions": [t | {"status": "pending"} for t in payload["transactions"]]
    }

    assert webhooks.events("refunds/create", restock_only) == []
    assert webhooks.events("refunds/create", only_pending) == []


def test_refund_not_yet_processed_counts_from_its_creation() -> None:
    payload = fixture("refunds_create") | {
        "created_at": "2026-03-02T09:15:00+01:00",
        "processed_at": None,
    }

    (event,) = webhooks.events("refunds/create", payload)

    assert isinstance(event, OrderRefunded)
    assert event.refunded_at == datetime(2026, 3, 2, 8, 15, tzinfo=UTC)


@pytest.mark.parametrize("topic", ["fulfillments/create", "fulfillments/update"])
def test_documented_fulfillment_is_a_shipment_with_its_tracking(topic: str) -> None:
    (event,) = webhooks.events(topic, fixture("fulfillments_create"))

    assert event == OrderShipped(
        order_id=DOC_ORDER_ID,
        shipment_id="123456",
        shipped_at=DOC_MOMENT,
        tracking=(Tracking(company="UPS", number="1z827wk74630", url=UPS_URL),),
        delivered_at=None,
        changed_at=DOC_MOMENT,  # its updated_at: orders late deliveries of the same fulfilment
    )


def test_delivered_fulfillment_says_when_it_was_delivered() -> None:
    payload = fixture("fulfillments_create") | {
        "status": "success",
        "shipment_status": "delivered",
        "updated_at": "2022-01-04T14:30:00-05:00",
    }
    in_transit = payload | {"shipment_status": "in_transit"}

    (delivered,) = webhooks.events("fulfillments/update", payload)
    (travelling,) = webhooks.events("fulfillments/update", in_transit)

    assert isinstance(delivered, OrderShipped) and isinstance(travelling, OrderShipped)
    assert delivered.delivered_at == datetime(2022, 1, 4, 19, 30, tzinfo=UTC)
    assert delivered.shipped_at == DOC_MOMENT
    assert travelling.delivered_at is None


def test_fulfillment_with_several_parcels_pairs_numbers_with_urls_in_order() -> None:
    payload = fixture("fulfillments_create") | {
        "tracking_company": "PostNord",
        "tracking_number": "00370712345678901",
        "tracking_numbers": ["00370712345678901", "00370712345678902", "00370712345678903"],
        "tracking_url": "https://tracking.postnord.com/?id=00370712345678901",
        "tracking_urls": [
            "https://tracking.postnord.com/?id=00370712345678901",
            "https://tracking.postnord.com/?id=00370712345678902",
        ],
    }

    (event,) = webhooks.events("fulfillments/create", payload)

    assert isinstance(event, OrderShipped)
    assert event.tracking == (
        Tracking(
            "PostNord", "00370712345678901", "https://tracking.postnord.com/?id=00370712345678901"
        ),
        Tracking(
            "PostNord", "00370712345678902", "https://tracking.postnord.com/?id=00370712345678902"
        ),
        Tracking("PostNord", "00370712345678903", None),
    )


def test_blank_tracking_number_keeps_the_others_paired_with_their_urls() -> None:
    payload = fixture("fulfillments_create") | {
        "tracking_company": "DHL",
        "tracking_numbers": ["JD0001", "", "JD0003"],
        "tracking_urls": ["https://dhl.example/JD0001", "", "https://dhl.example/JD0003"],
    }

    (event,) = webhooks.events("fulfillments/update", payload)

    assert isinstance(event, OrderShipped)
    assert [(t.number, t.url) for t in event.tracking] == [
        ("JD0001", "https://dhl.example/JD0001"),
        ("JD0003", "https://dhl.example/JD0003"),
    ]


def test_fulfillment_without_tracking_is_still_a_shipment() -> None:
    payload = fixture("fulfillments_create") | {
        "tracking_company": None,
        "tracking_number": None,
        "tracking_numbers": [],
        "tracking_url": None,
        "tracking_urls": [],
    }

    (event,) = webhooks.events("fulfillments/create", payload)

    assert isinstance(event, OrderShipped) and event.tracking == ()


@pytest.mark.parametrize("status", ["cancelled", "error", "failure"])
def test_fulfillment_that_shipped_nothing_carries_no_event(status: str) -> None:
    payload = fixture("fulfillments_create") | {"status": status}

    assert webhooks.events("fulfillments/update", payload) == []


@pytest.mark.parametrize(
    ("topic", "name", "change", "message"),
    [
        ("refunds/create", "refunds_create", {"order_id": None}, "order_id must be a positive"),
        ("refunds/create", "refunds_create", {"id": 8.9e17}, "id must be a positive integer"),
        ("refunds/create", "refunds_create", {"transactions": {}}, "transactions must be a list"),
        ("refunds/create", "refunds_create", {"transactions": ["75.00"]}, "hold objects"),
        (
            "refunds/create",
            "refunds_create",
            {"transactions": [{"kind": "refund", "status": "success", "amount": 75.0}]},
            "amount must be a decimal string",
        ),
        (
            "refunds/create",
            "refunds_create",
            {"transactions": [{"kind": "refund", "status": "success", "amount": "-5.00"}]},
            "must not be negative",
        ),
        (
            "refunds/create",
            "refunds_create",
            {"processed_at": None, "created_at": None},
            "created_at is missing",
        ),
        ("fulfillments/create", "fulfillments_create", {"order_id": None}, "order_id must be"),
        ("fulfillments/create", "fulfillments_create", {"id": "abc"}, "id must be a positive"),
        ("fulfillments/update", "fulfillments_create", {"created_at": None}, "created_at is"),
        (
            "fulfillments/update",
            "fulfillments_create",
            {"shipment_status": "delivered", "updated_at": "soon"},
            "updated_at is not an ISO 8601 timestamp",
        ),
        (
            "fulfillments/update",
            "fulfillments_create",
            {"tracking_numbers": [1234567]},
            "tracking_numbers must hold strings",
        ),
        ("fulfillments/update", "fulfillments_create", {"tracking_urls": "x"}, "must be a list"),
        ("fulfillments/update", "fulfillments_create", {"tracking_number": 42}, "must be a string"),
        ("orders/cancelled", "orders_cancelled", {"cancelled_at": None}, "cancelled_at is"),
        ("orders/cancelled", "orders_cancelled", {"id": None}, "id must be a positive integer"),
        (
            "orders/create",
            "orders_create",
            {"shipping_address": {"country_code": "USA"}},
            "ISO 3166-1 alpha-2",
        ),
        ("orders/create", "orders_create", {"shipping_address": "US"}, "must be an object"),
        ("orders/paid", "orders_create", {"line_items": [{"quantity": 1}]}, "title is missing"),
        ("orders/paid", "orders_create", {"customer_locale": 7}, "customer_locale must be"),
    ],
)
def test_malformed_order_lifecycle_payloads_are_refused_with_the_reason(
    topic: str, name: str, change: dict[str, Any], message: str
) -> None:
    payload = fixture(name) | change

    with pytest.raises(InvalidPayload, match=message):
        webhooks.events(topic, payload)


async def test_signed_lifecycle_webhooks_become_shipments_refunds_and_a_cancellation(
    server: httpx.AsyncClient, worker: None, shop: Shop
) -> None:
    order = fixture("orders_create")
    order_id = str(order["id"])
    shipped = fixture("fulfillments_create") | {"order_id": order["id"], "status": "success"}
    delivered = shipped | {
        "shipment_status": "delivered",
        "updated_at": "2025-03-18T11:02:00-04:00",
    }
    refund = fixture("refunds_create") | {"order_id": order["id"]}
    cancelled = order | {"cancelled_at": "2025-03-19T08:00:00-04:00", "cancel_reason": "customer"}

    # The fulfilment arrives before its order: shipments do not need the order row.
    for topic, payload in [
        ("fulfillments/create", shipped),
        ("orders/create", order),
        ("fulfillments/update", delivered),
        ("refunds/create", refund),
        ("refunds/create", refund),  # delivered again under a new webhook id
        ("orders/cancelled", cancelled),
    ]:
        response = await post(server, topic, payload, secret=SHOP_SECRET, domain=SHOP_DOMAIN)
        assert response.status_code == 200, response.text
    entries = await wait_for(_all_ingested(6))

    assert [e.status for e in entries] == [InboxStatus.HANDLED] * 6, [e.error for e in entries]
    assert shop.id is not None
    async with sessionmaker()() as session:
        stored = await commerce.get_order(session, shop.id, order_id)
        assert stored is not None
        shipments = await commerce.shipments_for_order(session, stored)
        refunded = await commerce.refunded_total(session, stored)
    assert stored.cancelled_at == datetime(2025, 3, 19, 12, 0, tzinfo=UTC)
    assert (stored.shipping_country, stored.locale, len(stored.line_items)) == ("US", "en", 2)
    assert [(s.platform_id, s.delivered_at) for s in shipments] == [
        ("123456", datetime(2025, 3, 18, 15, 2, tzinfo=UTC))
    ]
    assert shipments[0].tracking == [{"company": "UPS", "number": "1z827wk74630", "url": UPS_URL}]
    assert refunded == Decimal("85.00")


def _all_ingested(count: int) -> Any:
    async def ingested() -> list[InboxEntry] | None:
        async with sessionmaker()() as session:
            entries = list(
                (await session.exec(select(InboxEntry).order_by(col(InboxEntry.id)))).all()
            )
        done = len(entries) == count and all(e.status != InboxStatus.RECEIVED for e in entries)
        return entries if done else None

    return ingested
