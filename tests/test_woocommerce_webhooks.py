"""WooCommerce's documented order payload becomes Rebound's events, status by status."""

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.commerce.events import CheckoutChanged, CheckoutClosed, InvalidPayload, OrderPlaced
from integrations.woocommerce import webhooks

DOCUMENTED = json.loads(
    (Path(__file__).parent / "fixtures" / "woocommerce" / "order.json").read_text()
)


def order(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(DOCUMENTED)
    payload.update(changes)
    return payload


def test_a_paid_order_is_an_order_placed_for_its_own_checkout() -> None:
    (event,) = webhooks.events("order.updated", order())

    assert isinstance(event, OrderPlaced)
    assert event.checkout_token == "order-727" and event.platform_id == "727"
    assert event.email == "john.doe@example.com" and event.total_price == "29.35"


def test_a_pending_order_is_a_started_checkout_restored_on_order_pay() -> None:
    pay = "https://example.com/checkout/order-pay/727/?pay_for_order=true&key=wc_order_58d2d042d1d"
    (event,) = webhooks.events("order.created", order(status="pending", payment_url=pay))

    assert isinstance(event, CheckoutChanged)
    assert event.token == "order-727" and event.restore_url == pay
    assert event.started_at == datetime(2017, 3, 22, 19, 28, 2, tzinfo=UTC)  # *_gmt is UTC
    assert [(i.title, i.quantity, i.price, i.variant_id) for i in event.line_items] == [
        ("Woo Single #1", 2, "3.00", "93"),
        ("Ship Your Idea &ndash; Color: Black, Size: M Test", 1, "12.00", "23"),
    ]


def test_a_checkout_draft_is_restored_by_rebuilding_its_cart() -> None:
    pay = "https://example.com/checkout/order-pay/727/?pay_for_order=true&key=k"
    (event,) = webhooks.events("order.created", order(status="checkout-draft", payment_url=pay))

    assert isinstance(event, CheckoutChanged)
    assert event.restore_url == "https://example.com/cart/?add-to-cart=93&quantity=2"


@pytest.mark.parametrize("status", ["cancelled", "trash"])
def test_cancelled_orders_close_their_checkout(status: str) -> None:
    assert webhooks.events("order.updated", order(status=status)) == [CheckoutClosed("order-727")]


def test_deleted_orders_close_their_checkout_and_refunds_change_nothing() -> None:
    assert webhooks.events("order.deleted", {"id": 727}) == [CheckoutClosed("order-727")]
    assert webhooks.events("order.updated", order(status="refunded")) == []
    assert webhooks.events("customer.updated", {"id": 1}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "x"}, "id must be a positive integer"),
        ({"status": None}, "status is missing"),
        ({"total": 29.35}, "total must be a decimal string"),
        ({"billing": "john"}, "billing must be an object"),
        ({"date_created_gmt": "yesterday"}, "not a timestamp"),
    ],
)
def test_malformed_orders_are_refused_with_the_reason(change: dict, message: str) -> None:
    payload = order(status="pending") | change
    with pytest.raises(InvalidPayload, match=message):
        webhooks.events("order.created", payload)


def test_the_ping_is_recognised_only_without_a_signature() -> None:
    assert webhooks.is_ping({}, b"webhook_id=12")
    assert not webhooks.is_ping({"x-wc-webhook-signature": "x"}, b"webhook_id=12")
    assert not webhooks.is_ping({}, b'{"id": 12}')
