"""Property-based tests of every payload normalizer: whatever JSON a platform (or an attacker with
a store's secret) sends, the outcome is a list of events or a clean InvalidPayload, never another
exception; and a payload that fails leaves no half-written record behind."""

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import func, select

import integrations
from app.commerce.events import Event, InvalidPayload
from app.commerce.models import Checkout, Order
from app.db import get_engine, sessionmaker
from app.inbox import repository as inbox
from app.inbox.models import InboxStatus
from app.inbox.tasks import process_entry
from app.shops.models import Shop
from flows.models import Enrollment
from integrations.shopify import webhooks as shopify
from integrations.woocommerce import webhooks as woocommerce

FIXTURES = Path(__file__).parent / "fixtures"
_DELIVERIES = itertools.count()

SHOPIFY_SAMPLES = {
    "checkouts/create": "shopify/checkouts_create.json",
    "checkouts/update": "shopify/checkouts_create.json",
    "orders/create": "shopify/orders_create.json",
    "orders/paid": "shopify/orders_create.json",
    "orders/cancelled": "shopify/orders_cancelled.json",
    "refunds/create": "shopify/refunds_create.json",
    "fulfillments/create": "shopify/fulfillments_create.json",
    "customers/data_request": "shopify/customers_data_request.json",
    "customers/redact": "shopify/customers_redact.json",
    "shop/redact": "shopify/shop_redact.json",
}
WOOCOMMERCE_TOPICS = ["order.created", "order.updated", "order.deleted"]
WOOCOMMERCE_STATUSES = sorted(
    woocommerce.STARTED | woocommerce.PAID | woocommerce.CLOSED | {"refunded", "draft"}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "0", "12.50", "2026-11-30T10:00:00Z", "a@b.se", "[]", "-1"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _sample(name: str) -> dict[str, Any]:
    loaded = json.loads((FIXTURES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document where a value sits."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> Any:
    """A real payload with one to three fields (anywhere in it) replaced by arbitrary JSON."""
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(document)
        if not paths:
            break
        document = _replaced(document, draw(st.sampled_from(paths)), draw(json_values))
    return document


def _outcome(platform: str, topic: str, payload: Any) -> list[Event] | InvalidPayload:
    try:
        return integrations.events(platform, topic, payload)
    except InvalidPayload as refused:
        assert str(refused), "an invalid payload says what is wrong"
        return refused


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(sorted(SHOPIFY_SAMPLES)), data=st.data())
def test_any_change_to_a_shopify_payload_gives_events_or_a_clean_refusal(
    topic: str, data: st.DataObject
) -> None:
    payload = data.draw(mutated(_sample(SHOPIFY_SAMPLES[topic])))
    outcome = _outcome(shopify.PLATFORM, topic, payload)
    assert isinstance(outcome, InvalidPayload | list)


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(WOOCOMMERCE_TOPICS),
    status=st.sampled_from(WOOCOMMERCE_STATUSES),
    data=st.data(),
)
def test_any_change_to_a_woocommerce_order_gives_events_or_a_clean_refusal(
    topic: str, status: str, data: st.DataObject
) -> None:
    order = _sample("woocommerce/order.json") | {"status": status}
    outcome = _outcome(woocommerce.PLATFORM, topic, data.draw(mutated(order)))
    assert isinstance(outcome, InvalidPayload | list)


@settings(max_examples=200, deadline=None)
@given(
    platform=st.sampled_from([shopify.PLATFORM, woocommerce.PLATFORM]),
    topic=st.sampled_from([*SHOPIFY_SAMPLES, *WOOCOMMERCE_TOPICS]),
    payload=json_values,
)
def test_arbitrary_json_gives_events_or_a_clean_refusal(
    platform: str, topic: str, payload: Any
) -> None:
    assert isinstance(_outcome(platform, topic, payload), InvalidPayload | list)


def test_the_unchanged_samples_are_accepted() -> None:
    # The properties above would hold for a normalizer that refuses everything; this one would not.
    for topic, name in SHOPIFY_SAMPLES.items():
        assert isinstance(_outcome(shopify.PLATFORM, topic, _sample(name)), list), topic
    for status in sorted(woocommerce.STARTED | woocommerce.PAID):
        order = _sample("woocommerce/order.json") | {"status": status}
        assert _outcome(woocommerce.PLATFORM, "order.updated", order), status


async def _count(model: type[Any]) -> int:
    async with sessionmaker()() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def _ingest(shop: Shop, topic: str, payload: Any, delivery: str) -> int:
    assert shop.id is not None
    async with get_engine().begin() as connection:
        row = {"shop_id": shop.id, "platform": shop.platform, "topic": topic,
               "delivery_id": delivery, "payload": json.dumps(payload)}  # fmt: skip
        stored = await inbox.insert_many(connection, [row])
    return stored[shop.id, delivery]


@pytest.mark.parametrize("topic", ["checkouts/create", "orders/create", "orders/cancelled"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_a_refused_payload_leaves_no_half_record(
    topic: str, data: st.DataObject, shop: Shop, redis: Any
) -> None:
    payload = data.draw(mutated(_sample(SHOPIFY_SAMPLES[topic])))
    if not isinstance(_outcome(shopify.PLATFORM, topic, payload), InvalidPayload):
        return  # accepted payloads are the other tests' business
    before = [await _count(model) for model in (Checkout, Order, Enrollment)]
    entry_id = await _ingest(shop, topic, payload, f"prop-{next(_DELIVERIES)}")
    assert (await process_entry(entry_id, redis)).startswith("failed: ")
    assert [await _count(model) for model in (Checkout, Order, Enrollment)] == before
    async with sessionmaker()() as session:
        entry = await inbox.get(session, entry_id)
        assert entry is not None and entry.status == InboxStatus.FAILED and entry.error
