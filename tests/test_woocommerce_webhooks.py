"""WooCommerce's documented order payload becomes Rebound's events, status by status."""

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.commerce.events import (
    CheckoutChanged,
    CheckoutClosed,
    InvalidPayload,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
    Tracking,
)
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
    assert (event.email, event.first_name, event.last_name, event.phone) == (
        "john.doe@example.com",
        "John",
        "Doe",
        "(555) 555-5555",
    )
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
def test_an_unpaid_cancelled_order_only_closes_its_checkout(status: str) -> None:
    unpaid = order(status=status, date_paid=None, date_paid_gmt=None)
    assert webhooks.events("order.updated", unpaid) == [CheckoutClosed("order-727")]


@pytest.mark.parametrize("created_via", ["checkout", "store-api"])
def test_a_checkout_cancelled_unpaid_by_hold_stock_stays_an_abandoned_cart(
    created_via: str,
) -> None:
    pay = "https://example.com/checkout/order-pay/727/?pay_for_order=true&key=k"
    unpaid = order(
        status="cancelled",
        created_via=created_via,
        date_paid=None,
        date_paid_gmt=None,
        payment_url=pay,
    )
    (event,) = webhooks.events("order.updated", unpaid)

    assert isinstance(event, CheckoutChanged) and event.token == "order-727"
    # order-pay refuses a cancelled order: the link rebuilds the cart instead
    assert event.restore_url == "https://example.com/cart/?add-to-cart=93&quantity=2"


@pytest.mark.parametrize("created_via", ["admin", "subscription"])
def test_a_pending_order_the_merchant_made_is_no_abandoned_cart(created_via: str) -> None:
    invoice = order(status="pending", created_via=created_via, date_paid=None, date_paid_gmt=None)
    assert webhooks.events("order.created", invoice) == []


def test_two_updates_in_the_same_second_are_two_deliveries_a_repeat_is_one() -> None:
    headers = {"x-wc-webhook-delivery-id": "0f3c", "x-wc-webhook-id": "12"}
    pending, paid = b'{"status":"pending"}', b'{"status":"processing"}'

    assert webhooks.delivery_id(headers, pending) != webhooks.delivery_id(headers, paid)
    assert webhooks.delivery_id(headers, paid) == webhooks.delivery_id(headers, paid)


def test_a_paid_order_cancelled_is_recorded_as_bought_then_cancelled() -> None:
    closed, placed, cancelled = webhooks.events("order.updated", order(status="cancelled"))

    assert closed == CheckoutClosed("order-727")
    assert isinstance(placed, OrderPlaced) and placed.platform_id == "727"
    assert cancelled == OrderCancelled("727", datetime(2017, 3, 22, 19, 28, 8, tzinfo=UTC))


def test_deleted_orders_close_their_checkout_and_customers_mean_nothing_yet() -> None:
    assert webhooks.events("order.deleted", {"id": 727}) == [CheckoutClosed("order-727")]
    assert webhooks.events("customer.updated", {"id": 1}) == []


def test_each_listed_refund_is_one_refund_of_its_positive_amount() -> None:
    refunds = [{"id": 730, "reason": "", "total": "-10.00"}, {"id": 731, "total": "-5.35"}]
    placed, *found = webhooks.events("order.updated", order(refunds=refunds))

    assert isinstance(placed, OrderPlaced)
    assert [(r.refund_id, r.amount) for r in found if isinstance(r, OrderRefunded)] == [
        ("730", "10.00"),
        ("731", "5.35"),
    ]


def test_a_refunded_order_without_refund_records_is_refunded_in_full() -> None:
    _, refund = webhooks.events("order.updated", order(status="refunded", refunds=[]))

    assert isinstance(refund, OrderRefunded) and refund.amount == "29.35"


def test_a_paid_order_carries_its_items_and_destination() -> None:
    (placed,) = webhooks.events("order.updated", order())

    assert isinstance(placed, OrderPlaced)
    assert [(i.title, i.quantity, i.variant_id, i.product_id) for i in placed.line_items] == [
        ("Woo Single #1", 2, "93", "93"),
        ("Ship Your Idea &ndash; Color: Black, Size: M Test", 1, "23", "22"),
    ]
    assert placed.shipping_country == "US"
    assert placed.first_name == order()["billing"]["first_name"]


@pytest.mark.parametrize(
    ("meta", "locale"),
    [
        ([{"id": 1, "key": "wpml_language", "value": "sv"}], "sv"),
        ([{"id": 1, "key": "trp_language", "value": "de_DE"}], "de_DE"),
        ([{"id": 1, "key": "_pll_language", "value": "nb"}], None),  # private: not in the API
        ([{"id": 1, "key": "wpml_language", "value": ""}], None),
        ([], None),
    ],
)
def test_the_language_a_multilingual_plugin_recorded_is_the_customers(
    meta: list[dict[str, Any]], locale: str | None
) -> None:
    placed, *_ = webhooks.events("order.updated", order(meta_data=meta))
    pending, *_ = webhooks.events("order.created", order(status="pending", meta_data=meta))

    assert isinstance(placed, OrderPlaced) and placed.locale == locale
    assert isinstance(pending, CheckoutChanged) and pending.locale == locale


def tracking_meta(*entries: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": 9001, "key": "_wc_shipment_tracking_items", "value": list(entries)}]


def test_a_completed_order_is_shipped_with_its_shipment_tracking_numbers() -> None:
    completed = order(
        status="completed",
        date_completed_gmt="2017-03-24T10:00:00",
        meta_data=tracking_meta(
            {
                "tracking_provider": "usps",
                "custom_tracking_provider": "",
                "custom_tracking_link": "",
                "tracking_number": "9400 1000",
                "date_shipped": "1490313600",
                "tracking_id": "a1b2",
            },
            {
                "tracking_provider": "",
                "custom_tracking_provider": "Dropp",
                "custom_tracking_link": "https://dropp.is/track/DR157",
                "tracking_number": "DR157",
            },
            {
                "tracking_provider": "",
                "custom_tracking_link": "javascript:alert(1)",
                "tracking_number": "X1",
            },
        ),
    )
    placed, shipped = webhooks.events("order.updated", completed)

    assert isinstance(placed, OrderPlaced) and isinstance(shipped, OrderShipped)
    assert shipped.order_id == "727" and shipped.shipment_id == "completed"
    assert shipped.shipped_at == datetime(2017, 3, 24, 10, 0, tzinfo=UTC)
    assert shipped.tracking == (
        Tracking(
            "USPS",
            "9400 1000",
            "https://tools.usps.com/go/TrackConfirmAction_input?qtc_tLabels1=9400%201000",
        ),
        Tracking("Dropp", "DR157", "https://dropp.is/track/DR157"),
        Tracking(None, "X1", None),  # a script link never reaches an email
    )


def test_carriers_stored_by_name_and_custom_links_with_a_placeholder_are_read() -> None:
    completed = order(
        status="completed",
        meta_data=tracking_meta(
            {"tracking_provider": "DHL US", "tracking_number": "JD01"},
            {"tracking_provider": "PostNord Sverige AB", "tracking_number": "UA12SE"},
            {
                "tracking_provider": "",
                "custom_tracking_provider": "Budbee",
                "custom_tracking_link": "https://budbee.com/t?id=%1$s",
                "tracking_number": "BB 9",
            },
        ),
    )
    _, shipped = webhooks.events("order.updated", completed)

    assert isinstance(shipped, OrderShipped)
    assert [(t.company, t.url) for t in shipped.tracking] == [
        ("DHL US", "https://www.logistics.dhl/us-en/home/tracking.html?tracking-id=JD01"),
        ("PostNord", "https://www.postnord.se/en/our-tools/track-and-trace?shipmentId=UA12SE"),
        ("Budbee", "https://budbee.com/t?id=BB%209"),
    ]


def test_a_completed_order_without_the_extension_is_shipped_without_tracking() -> None:
    _, shipped = webhooks.events("order.updated", order(status="completed"))

    assert isinstance(shipped, OrderShipped) and shipped.tracking == ()


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
