"""Shopify's documented payloads become domain events; anything else is a clear InvalidPayload."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.commerce.events import CheckoutChanged, InvalidPayload, OrderPlaced
from integrations.shopify import webhooks
from tests.shopify import fixture, signature


def test_documented_checkout_becomes_a_checkout_event() -> None:
    (event,) = webhooks.events("checkouts/create", fixture("checkouts_create"))

    assert isinstance(event, CheckoutChanged)
    assert event.token == "7c2f0d9e8b1a4c3d5e6f7a8b9c0d1e2f"
    assert event.email == "jane.doe@example.com"
    assert event.first_name == "Jane"
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


def test_event_id_identifies_a_delivery_together_with_its_topic() -> None:
    create = {"x-shopify-topic": "orders/create", "x-shopify-event-id": "e1"}
    paid = {"x-shopify-topic": "orders/paid", "x-shopify-event-id": "e1"}
    only_webhook_id = {"x-shopify-topic": "orders/paid", "x-shopify-webhook-id": "w1"}

    assert webhooks.delivery_id(create) != webhooks.delivery_id(paid)
    assert webhooks.delivery_id(create) == webhooks.delivery_id(dict(create))
    assert webhooks.delivery_id(only_webhook_id) == "webhook:w1"
    assert webhooks.delivery_id({}) is None
