"""The admin's JSON API and its sign-in, through the running app: every endpoint refuses a
request without a token, a shop's token never reads or changes another shop, refused edits name
their field and change nothing, the one-time admin link signs in once and the cookie needs the
CSRF header to change anything, and a test email reaches the address given and no other."""

import asyncio
import json
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, func, select

from app import security
from app.analytics.models import Attribution
from app.api.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    PageShop,
    admin_login_link,
    csrf_token,
    issue_token,
    session_cookie,
)
from app.commerce.models import Checkout, Order
from app.db import sessionmaker, utcnow
from app.privacy.models import DataRequest
from app.shops import service as shops_service
from app.shops.models import Shop
from app.shops.service import connect_shopify
from flows.definitions import DEFAULT_STEPS
from flows.models import Enrollment, EnrollmentStatus, Flow, Send, SendStatus
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import Mailbox

SHOP_A = "shop-a.myshopify.com"
SHOP_B = "shop-b.myshopify.com"

# Every endpoint of the API: (method, path, body). Ids in paths are filled in per test.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/session", None),
    ("POST", "/api/session/sign-out", None),
    ("GET", "/api/shop", None),
    (
        "PATCH",
        "/api/shop",
        {
            "quiet_hours": "22:00-07:00",
            "profile": {"phone": "+46 8 123"},
            "address": "Ullgatan 1\n111 22 Stockholm",
        },
    ),
    ("GET", "/api/flows", None),
    ("GET", "/api/flows/{flow}/steps", None),
    (
        "PUT",
        "/api/flows/{flow}/steps",
        {
            "steps": [
                {"key": key, "template": "abandoned_cart", "delay": hours * 3600}
                for key, hours in (("first", 2), ("second", 30), ("third", 96))
            ]
        },
    ),
    ("PATCH", "/api/flows/{flow}", {"enabled": False, "settings": {"min_cart_value": "40"}}),
    ("PUT", "/api/flows/{flow}/steps/{number}", {"delay": "2h", "offer": "15%"}),
    ("GET", "/api/flows/{flow}/steps/{number}/preview", None),
    ("POST", "/api/flows/{flow}/steps/{number}/test", {"email": "me@example.com", "lang": "en"}),
    ("GET", "/api/activity", None),
    ("GET", "/api/privacy/requests", None),
    ("GET", "/api/privacy/requests/{request_id}/export", None),
    ("GET", "/api/overview", None),
    ("GET", "/api/tests", None),
    (
        "POST",
        "/api/tests",
        {
            "flow": "abandoned_cart",
            "step_key": "still_there",
            "variants": [{"key": "a"}, {"key": "b", "subject": {"en": "Your cart misses you"}}],
            "holdout": 0.1,
            "min_recipients": 100,
        },
    ),
    ("GET", "/api/tests/{test_id}", None),
    ("POST", "/api/tests/{test_id}/stop", None),
]


def url(path: str, **ids: Any) -> str:
    values = {"flow": "abandoned_cart", "number": 3, "request_id": 1, "test_id": 1, **ids}
    return path.format(**values)


def bearer(shop: Shop) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(shop)}"}


async def make_shop(domain: str, name: str) -> Shop:
    async with sessionmaker()() as session:
        shop = await connect_shopify(
            session, domain=domain, access_token="shpat_" + name, api_secret="s", name=name
        )
        shop.currency = "EUR"
        await session.commit()
        return shop


@pytest.fixture
async def shops() -> tuple[Shop, Shop]:
    return await make_shop(SHOP_A, "Alpha Wool"), await make_shop(SHOP_B, "Beta Boots")


async def snapshot(shop: Shop) -> dict[str, Any]:
    """Everything an API call could change about a shop."""
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        query = select(Flow).where(Flow.shop_id == shop.id).order_by(col(Flow.name))
        flows = (await session.exec(query)).all()
        requests = (
            await session.exec(select(DataRequest).where(DataRequest.shop_id == shop.id))
        ).all()
        return {
            "shop": stored.model_dump(),
            "flows": [flow.model_dump() for flow in flows],
            "data_requests": [request.model_dump() for request in requests],
        }


async def add_data_request(shop: Shop, email: str) -> int:
    async with sessionmaker()() as session:
        request = DataRequest(
            shop_id=shop.id or 0,
            platform_request_id=f"req-{email}",
            customer_email=email,
            export=json.dumps({"shop": shop.domain, "customer": {"email": email}}),
        )
        session.add(request)
        await session.commit()
        assert request.id is not None
        return request.id


async def add_activity(shop: Shop, email: str) -> None:
    """One reminder sent with its offer withheld, and the series waiting for the morning."""
    async with sessionmaker()() as session:
        enrollment = Enrollment(
            shop_id=shop.id or 0,
            flow="abandoned_cart",
            subject=f"checkout:{email}",
            email=email,
            steps=DEFAULT_STEPS["abandoned_cart"],
            next_step=1,
            due_at=utcnow() + timedelta(hours=8),
            waiting_for="quiet_hours",
        )
        session.add(enrollment)
        await session.flush()
        session.add(
            Send(
                shop_id=shop.id or 0,
                enrollment_id=enrollment.id or 0,
                step=0,
                email=email,
                status=SendStatus.SENT,
                offer_skipped="an offer 12 days ago",
                sent_at=utcnow(),
            )
        )
        session.add(  # and an earlier cart of theirs, stopped by an unsubscribe
            Enrollment(
                shop_id=shop.id or 0,
                flow="abandoned_cart",
                subject=f"checkout:{email}:earlier",
                email=email,
                steps=DEFAULT_STEPS["abandoned_cart"],
                status=EnrollmentStatus.EXITED,
                exit_reason="unsubscribed",
            )
        )
        await session.commit()


async def use_mailbox(shop: Shop, smtp_url: str) -> None:
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        shops_service.set_mail_transport(stored, smtp_url)
        await session.commit()


def field_errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {error["field"]: error["message"] for error in response.json()["detail"]}


# --- the schema and authentication -------------------------------------------------------------


async def test_the_openapi_schema_lists_every_api_path_with_its_models(
    server: httpx.AsyncClient,
) -> None:
    schema = (await server.get("/openapi.json")).json()

    listed = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/")
        for method in operations
    }
    assert listed == {(method, path) for method, path, _ in ENDPOINTS}
    put = schema["paths"]["/api/flows/{flow}/steps/{number}"]["put"]
    assert put["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidationErrors"
    )
    assert {"FlowSettings", "ShopSettings", "Activity", "Overview", "TestResults"} <= set(
        schema["components"]["schemas"]
    )


async def test_the_webhook_receivers_are_plain_routes_outside_the_schema(
    server: httpx.AsyncClient,
) -> None:
    schema = (await server.get("/openapi.json")).json()

    # Platforms call them with raw signed bytes; FastAPI's per-request machinery is skipped.
    assert not {"/webhooks/shopify", "/webhooks/woocommerce"} & set(schema["paths"])


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_refuses_a_request_without_a_valid_token(
    server: httpx.AsyncClient,
    shops: tuple[Shop, Shop],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    shop, _ = shops
    before = await snapshot(shop)
    expired = "rb_" + security.sign("api", {"shop": shop.id, "exp": 1})
    forged_cookie = session_cookie(shop)[:-4] + "AAAA"

    for headers in (
        {},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {issue_token(shop)[:-4]}AAAA"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Cookie": f"{SESSION_COOKIE}={forged_cookie}", CSRF_HEADER: csrf_token(forged_cookie)},
    ):
        response = await server.request(method, url(path), json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
    assert await snapshot(shop) == before


async def test_an_uninstalled_shops_token_is_refused(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    async with sessionmaker()() as session:
        stored = await session.get(Shop, shop.id)
        assert stored is not None
        await shops_service.uninstall(session, stored)
        await session.commit()

    assert (await server.get("/api/shop", headers=bearer(shop))).status_code == 401


async def test_a_shopify_session_token_names_its_shop(
    server: httpx.AsyncClient, standin: ShopifyStandin, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    token = standin.id_token(SHOP_A)
    forged = standin.id_token(SHOP_A, secret="x" * 40)

    mine = await server.get("/api/session", headers={"Authorization": f"Bearer {token}"})
    refused = await server.get("/api/session", headers={"Authorization": f"Bearer {forged}"})

    assert mine.status_code == 200, mine.text
    assert mine.json() == {"shop": SHOP_A, "platform": "shopify", "csrf": None}
    assert refused.status_code == 401
    assert "x-shopify-retry-invalid-session-request" not in mine.headers


async def test_a_bad_shopify_session_token_asks_app_bridge_to_retry_and_an_api_token_never_does(
    server: httpx.AsyncClient, standin: ShopifyStandin, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    expired = standin.id_token(SHOP_A, lifetime=-60)
    forged = standin.id_token(SHOP_A, secret="x" * 40)
    old_api_token = "rb_" + security.sign("api", {"shop": shop.id, "exp": 1})
    unknown_store = standin.id_token("nowhere.myshopify.com")

    def answer(token: str) -> Any:
        return server.put(
            "/api/flows/abandoned_cart/steps/1",
            json={"delay": "2h"},
            headers={"Authorization": f"Bearer {token}".strip()},
        )

    for token in (expired, forged, "", "undefined"):  # "" and "undefined": no token came yet
        response = await answer(token)
        assert response.status_code == 401, token
        assert response.headers["x-shopify-retry-invalid-session-request"] == "1", token
    for token in (old_api_token, issue_token(shop)[:-4] + "AAAA", unknown_store):
        response = await answer(token)
        assert response.status_code == 401, token
        assert "x-shopify-retry-invalid-session-request" not in response.headers, token


# --- one shop never reaches another ----------------------------------------------------------


async def test_shop_a_never_reads_or_changes_shop_b(
    server: httpx.AsyncClient,
    shops: tuple[Shop, Shop],
    mailbox: Mailbox,
    smtp_url: str,
    redis: Any,
) -> None:
    a, b = shops
    await use_mailbox(a, smtp_url)
    await add_activity(a, "ann@example.com")
    await add_activity(b, "bert@example.com")
    await add_data_request(a, "ann@example.com")
    b_request = await add_data_request(b, "bert@example.com")
    before = await snapshot(b)

    answers = {}
    for method, path, body in ENDPOINTS:
        if path == "/api/session/sign-out":
            continue  # a cookie session's: test_signing_out_ends_the_session_for_every_copy
        if "/api/tests" in path or path == "/api/overview":
            continue  # app.analytics: see test_overview_and_ab_tests_are_per_shop and
            # test_shop_b_figures_carts_and_tests_never_reach_shop_a
        target = url(path, request_id=b_request)
        answers[method, path] = await server.request(method, target, json=body, headers=bearer(a))

    assert await snapshot(b) == before
    # A's own calls worked on A.
    for (method, path), response in answers.items():
        if path != "/api/privacy/requests/{request_id}/export":
            assert response.status_code < 300, (method, path, response.text)
    assert answers["GET", "/api/session"].json()["shop"] == SHOP_A
    assert answers["GET", "/api/shop"].json()["domain"] == SHOP_A
    assert answers["PATCH", "/api/shop"].json()["quiet_hours"] == "22:00-07:00"
    assert answers["PATCH", "/api/shop"].json()["address"] == ["Ullgatan 1", "111 22 Stockholm"]
    flows = answers["GET", "/api/flows"].json()
    assert {flow["name"] for flow in flows} == {"abandoned_cart", "post_purchase", "winback"}
    assert (
        "Alpha Wool" in answers["GET", "/api/flows/{flow}/steps/{number}/preview"].json()["sender"]
    )
    activity = answers["GET", "/api/activity"].json()
    assert [send["email"] for send in activity["sends"]] == ["ann@example.com"]
    assert [waiting["email"] for waiting in activity["waiting"]] == ["ann@example.com"]
    assert [ended["email"] for ended in activity["ended"]] == ["ann@example.com"]
    requests = answers["GET", "/api/privacy/requests"].json()
    assert [request["customer"] for request in requests] == ["ann@example.com"]
    # B's data request answers A exactly as a request that does not exist.
    theirs = answers["GET", "/api/privacy/requests/{request_id}/export"]
    missing = await server.get(
        url("/api/privacy/requests/{request_id}/export", request_id=999_999), headers=bearer(a)
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    # The test email went out as A, by A's transport.
    assert len(mailbox.messages) == 1 and "Alpha Wool" in str(mailbox.messages[0]["From"])


async def test_activity_shows_what_was_sent_withheld_and_waiting(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    await add_activity(shop, "ann@example.com")

    response = await server.get("/api/activity", params={"limit": 5}, headers=bearer(shop))

    assert response.status_code == 200, response.text
    (sent,) = response.json()["sends"]
    assert sent["flow"] == "abandoned_cart" and sent["step"] == "reminder"
    assert sent["status"] == "sent"
    assert sent["note"] == "offer withheld: an offer 12 days ago"
    (waiting,) = response.json()["waiting"]
    assert waiting["step"] == "still_there" and waiting["waiting_for"] == "quiet_hours"
    (ended,) = response.json()["ended"]
    assert ended["reason"] == "unsubscribed" and ended["email"] == "ann@example.com"
    assert field_errors(
        await server.get("/api/activity", params={"limit": 0}, headers=bearer(shop))
    ).keys() == {"limit"}


async def test_a_send_left_sending_for_15_minutes_is_flagged_as_maybe_not_sent(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    async with sessionmaker()() as session:
        for email, minutes, status in (
            ("new@example.com", 1, SendStatus.SENDING),
            ("old@example.com", 20, SendStatus.SENDING),
            ("mid-handoff@example.com", 1, SendStatus.UNKNOWN),  # a crash during DATA
        ):
            enrollment = Enrollment(
                shop_id=shop.id or 0,
                flow="abandoned_cart",
                subject=f"checkout:{email}",
                email=email,
                steps=DEFAULT_STEPS["abandoned_cart"],
            )
            session.add(enrollment)
            await session.flush()
            claimed = utcnow() - timedelta(minutes=minutes)
            session.add(
                Send(shop_id=shop.id or 0, enrollment_id=enrollment.id or 0, step=0, email=email,
                     status=status, claimed_at=claimed)
            )  # fmt: skip
        await session.commit()

    sends = (await server.get("/api/activity", headers=bearer(shop))).json()["sends"]

    by_email = {send["email"]: send for send in sends}
    assert by_email["old@example.com"]["stuck"] is True
    assert by_email["old@example.com"]["status"] == "sending"
    assert by_email["old@example.com"]["note"] == (
        "may not have been sent — check your mail provider's log"
    )
    assert by_email["new@example.com"]["stuck"] is False
    assert by_email["new@example.com"]["note"] is None
    unknown = by_email["mid-handoff@example.com"]
    assert (unknown["status"], unknown["stuck"]) == ("unknown", True)


async def test_a_data_requests_export_downloads_as_json(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    request_id = await add_data_request(shop, "ann@example.com")

    listed = await server.get("/api/privacy/requests", headers=bearer(shop))
    export = await server.get(f"/api/privacy/requests/{request_id}/export", headers=bearer(shop))

    (summary,) = listed.json()
    assert summary["id"] == request_id and summary["customer"] == "ann@example.com"
    assert summary["platform_request_id"] == "req-ann@example.com" and summary["received_at"]
    assert export.status_code == 200
    assert export.headers["content-type"] == "application/json"
    assert "attachment" in export.headers["content-disposition"]
    assert export.json()["customer"]["email"] == "ann@example.com"


# --- reading and changing the shop and its flows ---------------------------------------------


async def test_the_shop_and_its_flows_read_as_the_merchant_writes_them(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops

    settings = (await server.get("/api/shop", headers=bearer(shop))).json()
    flows = (await server.get("/api/flows", headers=bearer(shop))).json()

    assert settings["frequency_cap"] == "16h" and settings["mail_transport"] == "default"
    assert settings["tracking"] is True and settings["currency"] == "EUR"
    cart = next(flow for flow in flows if flow["name"] == "abandoned_cart")
    assert [step["delay"] for step in cart["steps"]] == ["1h", "1d", "3d"]
    assert [step["offer"] for step in cart["steps"]] == [None, None, "10%"]
    assert cart["steps"][2] | {"overrides": {}} == {
        "number": 3, "key": "last_call", "template": "abandoned_cart", "delay": "3d",
        "after": "trigger", "enabled": True, "marketing": True, "offer": "10%", "offers": None,
        "overrides": {}, "conditions": {}, "action": None,
    }  # fmt: skip
    assert cart["settings"]["min_cart_value"] == "0"
    winback = next(flow for flow in flows if flow["name"] == "winback")
    assert winback["steps"][0]["offers"] == {"top": "20%", "regular": "15%", "one_time": "10%"}


async def test_edits_are_kept_and_shown(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop], smtp_url: str
) -> None:
    shop, _ = shops
    await use_mailbox(shop, smtp_url)
    changed = await server.patch(
        "/api/shop",
        headers=bearer(shop),
        json={
            "quiet_hours": None,
            "frequency_cap": "12h",
            "timezone": "Europe/Stockholm",
            "tracking": False,
            "profile": {
                "accent_color": "#2f6f4e",
                "reply_to": "help@alpha.example",
                "social": {"instagram": "https://instagram.com/alpha"},
            },
        },
    )
    step = await server.put(
        "/api/flows/abandoned_cart/steps/3",
        headers=bearer(shop),
        json={
            "delay": "3d",
            "offer": "free-shipping",
            "enabled": False,
            "overrides": {"sv": {"subject": "Hej {{ first_name }}", "intro": "Din korg väntar."}},
        },
    )
    flow = await server.patch(
        "/api/flows/abandoned_cart",
        headers=bearer(shop),
        json={"enabled": False, "settings": {"min_cart_value": "40", "cart_kept_days": 14}},
    )
    no_offer = await server.put(
        "/api/flows/abandoned_cart/steps/3", headers=bearer(shop), json={"offer": None}
    )

    assert changed.status_code == 200, changed.text
    assert changed.json() | {"profile": None} == {
        "domain": SHOP_A, "name": "Alpha Wool", "platform": "shopify", "currency": "EUR",
        "timezone": "Europe/Stockholm", "quiet_hours": None, "frequency_cap": "12h",
        "tracking": False, "attribution_days": 5, "profile": None, "mail_transport": "smtp",
        "address": [], "sender": "shop@rebound.test",
    }  # fmt: skip
    assert changed.json()["profile"]["accent_color"] == "#2f6f4e"
    assert changed.json()["profile"]["social"] == {"instagram": "https://instagram.com/alpha"}
    assert step.status_code == 200, step.text
    last = step.json()["steps"][2]
    assert (last["delay"], last["offer"], last["enabled"]) == ("3d", "free-shipping", False)
    assert last["overrides"] == {
        "sv": {"subject": "Hej {{ first_name }}", "intro": "Din korg väntar."}
    }
    assert flow.status_code == 200, flow.text
    assert flow.json()["enabled"] is False
    assert flow.json()["settings"]["min_cart_value"] == "40"
    assert flow.json()["settings"]["cart_kept_days"] == 14
    assert no_offer.json()["steps"][2]["offer"] is None
    stored = await snapshot(shop)
    assert stored["shop"]["timezone"] == "Europe/Stockholm" and stored["shop"]["tracking"] is False
    assert stored["shop"]["frequency_cap"] == 12 * 3600


async def test_a_shop_with_its_own_provider_sends_as_its_own_address(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop], mailbox: Mailbox, smtp_url: str
) -> None:
    shop, _ = shops
    own = await server.patch(
        "/api/shop",
        headers=bearer(shop),
        json={"mail_transport": smtp_url, "profile": {"sender_address": "hello@alpha.example"}},
    )
    sent = await server.post(
        "/api/flows/abandoned_cart/steps/1/test",
        headers=bearer(shop),
        json={"email": "me@alpha.example", "lang": "en"},
    )

    assert own.status_code == 200, own.text
    assert (own.json()["mail_transport"], own.json()["sender"]) == ("smtp", "hello@alpha.example")
    assert smtp_url not in own.text
    assert sent.status_code == 202, sent.text
    (message,) = mailbox.messages
    assert "<hello@alpha.example>" in str(message["From"])

    # Back on Rebound's transport, the shop's own domain is no longer used, nor refused later.
    back = await server.patch("/api/shop", headers=bearer(shop), json={"mail_transport": "default"})
    assert back.status_code == 200, back.text
    assert (back.json()["mail_transport"], back.json()["sender"]) == (
        "default",
        "shop@rebound.test",
    )


STEP = {"key": "nudge", "template": "abandoned_cart", "delay": 3600}


async def test_a_flow_is_edited_as_data_step_by_step_or_whole(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, other = shops
    stored = (await server.get("/api/flows/abandoned_cart/steps", headers=bearer(shop))).json()
    first, *_, last = stored["steps"]
    series = [
        first | {"delay": 1800},
        {"key": "big_carts", "template": "abandoned_cart", "delay": 6 * 3600,
         "conditions": {"min_total": "150"}},
        last | {"offer": {"kind": "fixed_amount", "value": "5.00", "minimum_subtotal": "50"}},
    ]  # fmt: skip

    replaced = await server.put(
        "/api/flows/abandoned_cart/steps", headers=bearer(shop), json={"steps": series}
    )

    assert replaced.status_code == 200, replaced.text
    steps = replaced.json()["steps"]
    assert [(s["key"], s["delay"], s["offer"]) for s in steps] == [
        ("reminder", "30m", None), ("big_carts", "6h", None), ("last_call", "3d", "5.00"),
    ]  # fmt: skip
    assert steps[1]["conditions"] == {"min_total": "150"}
    assert replaced.json()["version"] == 2
    again = (await server.get("/api/flows/abandoned_cart/steps", headers=bearer(shop))).json()
    assert again["steps"] == series
    untouched = (await server.get("/api/flows/abandoned_cart/steps", headers=bearer(other))).json()
    assert [s["key"] for s in untouched["steps"]] == ["reminder", "still_there", "last_call"]


async def test_each_win_back_segment_gets_its_own_offer(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, other = shops

    changed = await server.put(
        "/api/flows/winback/steps/1",
        headers=bearer(shop),
        json={"offers": {"top": "25%", "one_time": "none", "regular": "free-shipping"}},
    )

    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    assert changed.json()["steps"][0]["offers"] == {
        "top": "25%", "regular": "free-shipping", "one_time": "none",
    }  # fmt: skip
    stored = (await server.get("/api/flows/winback/steps", headers=bearer(shop))).json()
    offers = stored["steps"][0]["offers"]
    # How long an offer lasts is not in "25%": the step's 14 days stay.
    assert offers["top"] == {"kind": "percentage", "value": "25", "expires_hours": 14 * 24}
    assert offers["one_time"] is None
    again = await server.put(
        "/api/flows/winback/steps/1", headers=bearer(shop), json={"offers": {"top": "5.00"}}
    )
    assert again.json()["steps"][0]["offers"] == {
        "top": "5.00", "regular": "free-shipping", "one_time": "none",
    }  # fmt: skip
    theirs = (await server.get("/api/flows", headers=bearer(other))).json()
    winback = next(flow for flow in theirs if flow["name"] == "winback")
    assert winback["steps"][0]["offers"]["top"] == "20%"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/api/flows/abandoned_cart/steps/1", {"delay": "-1h"}, "delay"),
        ("PUT", "/api/flows/abandoned_cart/steps/1", {"delay": 3600}, "delay"),
        ("PUT", "/api/flows/abandoned_cart/steps/3", {"offer": "95%"}, "offer"),
        # The valid delay is not kept either: one refusal refuses the whole request.
        ("PUT", "/api/flows/abandoned_cart/steps/3", {"delay": "2h", "offer": "95%"}, "offer"),
        ("PUT", "/api/flows/abandoned_cart/steps/2", {"offer": "ten"}, "offer"),
        ("PUT", "/api/flows/winback/steps/1", {"offers": {"top": "95%"}}, "offers.top"),
        # The valid top offer is not kept either.
        (
            "PUT",
            "/api/flows/winback/steps/1",
            {"offers": {"top": "25%", "regular": "ten"}},
            "offers.regular",
        ),
        ("PUT", "/api/flows/winback/steps/1", {"offers": {"vip": "30%"}}, "offers.vip"),
        # Only win-back knows a customer's segment.
        ("PUT", "/api/flows/abandoned_cart/steps/3", {"offers": {"top": "10%"}}, "offers"),
        (
            "PUT",
            "/api/flows/abandoned_cart/steps/1",
            {"overrides": {"sv": {"subject": "Hej {{ password }}"}}},
            "overrides.sv.subject",
        ),
        (
            "PUT",
            "/api/flows/abandoned_cart/steps/1",
            {"overrides": {"xx": {"subject": "Hi"}}},
            "overrides.xx",
        ),
        ("PUT", "/api/flows/abandoned_cart/steps/1", {"colour": "red"}, "colour"),
        ("PUT", "/api/flows/abandoned_cart/steps", {"steps": []}, "steps"),
        ("PUT", "/api/flows/abandoned_cart/steps", {"steps": [STEP | {"delay": -60}]}, "steps"),
        ("PUT", "/api/flows/abandoned_cart/steps", {"steps": [STEP | {"colour": 1}]}, "steps"),
        ("PUT", "/api/flows/abandoned_cart/steps", {"steps": [STEP] * 11}, "steps"),
        (
            "PUT",
            "/api/flows/abandoned_cart/steps",
            {"steps": [STEP | {"template": "shipping_notice"}]},
            "steps",
        ),
        (
            "PUT",
            "/api/flows/abandoned_cart/steps",
            {"steps": [STEP | {"offer": {"kind": "percentage", "value": "95"}}]},
            "steps",
        ),
        (
            "PUT",
            "/api/flows/abandoned_cart/steps",
            {"steps": [STEP | {"conditions": {"min_total": "lots"}}]},
            "steps",
        ),
        ("PUT", "/api/flows/abandoned_cart/steps", {"steps": [STEP | {"offer": "10%"}]}, "steps"),
        (
            "PUT",
            "/api/flows/abandoned_cart/steps",
            {
                "steps": [
                    STEP | {"offer": {"kind": "percentage", "value": "10", "expires_hours": 0}}
                ]
            },
            "steps",
        ),
        ("PUT", "/api/flows/abandoned_cart/steps", {"steps": [STEP | {"enabled": "yes"}]}, "steps"),
        ("PATCH", "/api/flows/abandoned_cart", {"settings": {"nonsense": 1}}, "settings.nonsense"),
        (
            "PATCH",
            "/api/flows/abandoned_cart",
            {"enabled": False, "settings": {"min_cart_value": "-5"}},
            "settings.min_cart_value",
        ),
        ("PATCH", "/api/flows/winback", {"settings": {"top_share": "lots"}}, "settings.top_share"),
        ("PATCH", "/api/shop", {"profile": {"accent_color": "red"}}, "profile.accent_color"),
        (
            "PATCH",
            "/api/shop",
            {"quiet_hours": "22:00-07:00", "profile": {"reply_to": "nobody"}},
            "profile.reply_to",
        ),
        (
            "PATCH",
            "/api/shop",
            {"profile": {"social": {"instagram": "http://insecure.example"}}},
            "profile.social.instagram",
        ),
        ("PATCH", "/api/shop", {"profile": {"colour": "#ffffff"}}, "profile.colour"),
        # Rebound's own transport sends only as its own domain (SPF and DKIM are its).
        (
            "PATCH",
            "/api/shop",
            {"profile": {"sender_address": "hello@alpha.example"}},
            "profile.sender_address",
        ),
        ("PATCH", "/api/shop", {"mail_transport": "ftp://user:pw@mail.example"}, "mail_transport"),
        ("PATCH", "/api/shop", {"timezone": "Mars/Olympus"}, "timezone"),
        ("PATCH", "/api/shop", {"frequency_cap": "soon"}, "frequency_cap"),
        ("PATCH", "/api/shop", {"quiet_hours": "25:00-08:00"}, "quiet_hours"),
        ("PATCH", "/api/shop", {"tracking": "sometimes"}, "tracking"),
        ("PATCH", "/api/shop", {"address": "\n".join(["Line"] * 7)}, "address"),
        (
            "POST",
            "/api/flows/abandoned_cart/steps/1/test",
            {"email": "not an address", "lang": "en"},
            "email",
        ),
        (
            "POST",
            "/api/flows/abandoned_cart/steps/1/test",
            {"email": "a@b.example", "lang": "xx"},
            "lang",
        ),
        ("GET", "/api/overview?days=5", None, "days"),
    ],
)
async def test_a_refused_edit_names_its_field_and_changes_nothing(
    server: httpx.AsyncClient,
    shops: tuple[Shop, Shop],
    mailbox: Mailbox,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    field: str,
) -> None:
    shop, _ = shops
    before = await snapshot(shop)

    response = await server.request(method, path, json=body, headers=bearer(shop))

    errors = field_errors(response)
    assert list(errors) == [field], errors
    assert errors[field]
    assert await snapshot(shop) == before
    assert mailbox.messages == []


async def test_unknown_flows_and_steps_are_not_found(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    for method, path, body in [
        ("PATCH", "/api/flows/newsletter", {"enabled": False}),
        ("PUT", "/api/flows/abandoned_cart/steps/9", {"delay": "1h"}),
        ("GET", "/api/flows/abandoned_cart/steps/4/preview", None),
        ("POST", "/api/flows/winback/steps/4/test", {"email": "me@example.com"}),  # no email
    ]:
        response = await server.request(method, path, json=body, headers=bearer(shop))
        assert response.status_code == 404, (path, response.text)


# --- the admin sign-in link and the cookie session -------------------------------------------


def cookie_from(response: httpx.Response) -> str:
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"{SESSION_COOKIE}=")
    return set_cookie.split(";")[0].partition("=")[2]


async def test_the_admin_link_signs_in_once_and_the_cookie_needs_the_csrf_header(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop], redis: Any
) -> None:
    from tests.test_cli import rebound

    shop, other = shops
    code, output = await rebound("admin-link", "--shop", SHOP_A)
    assert code == 0, output
    link = output.strip().splitlines()[-1]
    assert link.startswith("https://rebound.test/admin/login?token=")
    login = "/admin/login?" + urlsplit(link).query

    first = await server.get(login)
    again = await server.get(login)

    assert first.status_code == 303 and first.headers["location"] == "/admin"
    attributes = first.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=lax", "secure", "max-age=28800", "path=/"):
        assert attribute in attributes
    assert again.status_code == 401 and "used already" in again.text
    assert "rebound admin-link" in again.text  # what to do instead
    cookie = {"Cookie": f"{SESSION_COOKIE}={cookie_from(first)}"}

    session = await server.get("/api/session", headers=cookie)
    assert session.status_code == 200, session.text
    csrf = session.json()["csrf"]
    assert session.json()["shop"] == SHOP_A and csrf == csrf_token(cookie_from(first))

    before = await snapshot(shop)
    refused = await server.patch("/api/shop", json={"timezone": "Europe/Oslo"}, headers=cookie)
    wrong = await server.patch(
        "/api/shop",
        json={"timezone": "Europe/Oslo"},
        headers={**cookie, CSRF_HEADER: csrf_token(session_cookie(shop))},  # another session's
    )
    assert refused.status_code == wrong.status_code == 403
    assert await snapshot(shop) == before

    allowed = await server.patch(
        "/api/shop", json={"timezone": "Europe/Oslo"}, headers={**cookie, CSRF_HEADER: csrf}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["timezone"] == "Europe/Oslo" and allowed.json()["domain"] == SHOP_A
    # Reading needs no CSRF header; a bearer token never does.
    assert (await server.get("/api/flows", headers=cookie)).status_code == 200
    by_token = await server.patch("/api/shop", json={"timezone": "UTC"}, headers=bearer(other))
    assert by_token.status_code == 200 and by_token.json()["domain"] == SHOP_B


async def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop], redis: Any
) -> None:
    shop, _ = shops
    signed_in = await server.get("/admin/login?" + urlsplit(admin_login_link(shop)).query)
    cookie = {"Cookie": f"{SESSION_COOKIE}={cookie_from(signed_in)}"}
    csrf = {CSRF_HEADER: csrf_token(cookie_from(signed_in))}
    other = session_cookie(shop)  # the same merchant signed in on another computer

    without_csrf = await server.post("/api/session/sign-out", headers=cookie)
    by_token = await server.post("/api/session/sign-out", headers=bearer(shop))
    assert without_csrf.status_code == 403 and by_token.status_code == 400
    assert (await server.get("/api/session", headers=cookie)).status_code == 200

    signed_out = await server.post("/api/session/sign-out", headers={**cookie, **csrf})

    assert signed_out.status_code == 204, signed_out.text
    cleared = signed_out.headers["set-cookie"].lower()
    assert cleared.startswith(f"{SESSION_COOKIE}=") and "max-age=0" in cleared
    # The copied cookie, sent again, is refused by the API and the pages alike.
    assert (await server.get("/api/session", headers=cookie)).status_code == 401
    changed = await server.patch("/api/shop", json={"timezone": "UTC"}, headers={**cookie, **csrf})
    assert changed.status_code == 401
    page = await server.get("/admin/flows", headers=cookie)
    assert page.status_code == 401 and "rebound admin-link" in page.text
    # Until the cookie would have expired, and no longer.
    ttl = await redis.ttl(next(iter(await redis.keys("admin-session-ended:*"))))
    assert 8 * 3600 - 60 < ttl <= 8 * 3600
    # Other sessions of the shop go on.
    still = await server.get("/api/session", headers={"Cookie": f"{SESSION_COOKIE}={other}"})
    assert still.status_code == 200


async def test_a_sign_in_link_that_expired_or_was_forged_is_refused(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop], redis: Any
) -> None:
    shop, _ = shops
    expired = security.sign("admin-login", {"shop": shop.id, "exp": int(time.time()) - 1,
                                            "nonce": "n1"})  # fmt: skip
    forged = urlsplit(admin_login_link(shop)).query.removeprefix("token=")[:-4] + "AAAA"
    api_token = issue_token(shop).removeprefix("rb_")  # signed, but for another purpose

    for token in (expired, forged, api_token, ""):
        response = await server.get("/admin/login", params={"token": token})
        assert response.status_code == 401, token
        assert "set-cookie" not in response.headers
        assert "expired" in response.text


async def test_two_browsers_racing_with_one_link_sign_in_once(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop], redis: Any
) -> None:
    shop, _ = shops
    login = "/admin/login?" + urlsplit(admin_login_link(shop)).query

    answers = await asyncio.gather(*(server.get(login) for _ in range(5)))

    assert sorted(answer.status_code for answer in answers) == [303, 401, 401, 401, 401]


async def test_admin_pages_accept_the_cookie_or_shopifys_document_load(
    shops: tuple[Shop, Shop], standin: ShopifyStandin, redis: Any
) -> None:
    shop, _ = shops
    app = FastAPI()
    app.state.redis = redis  # signed-out sessions are kept there
    from app.api.auth import PageAuthError
    from app.main import _page_not_signed_in

    app.add_exception_handler(PageAuthError, _page_not_signed_in)

    @app.get("/page")
    async def page(shop: PageShop) -> dict[str, str]:
        return {"shop": shop.domain}

    @app.post("/page")
    async def change(shop: PageShop) -> dict[str, str]:
        return {"shop": shop.domain}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://rebound.test") as client:
        cookie = session_cookie(shop)
        by_cookie = await client.get("/page", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
        post_without_csrf = await client.post(
            "/page", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}
        )
        embedded = await client.get(
            "/page", params={"shop": SHOP_A, "embedded": "1", "id_token": standin.id_token(SHOP_A)}
        )
        forged = await client.get(
            "/page",
            params={"shop": SHOP_A, "id_token": standin.id_token(SHOP_A, secret="y" * 40)},
        )
        nobody = await client.get("/page")

    assert by_cookie.json() == {"shop": SHOP_A}
    assert post_without_csrf.status_code == 403
    assert embedded.status_code == 200 and embedded.json() == {"shop": SHOP_A}
    assert (
        "frame-ancestors https://shop-a.myshopify.com"
        in embedded.headers["content-security-policy"]
    )
    assert forged.status_code != 200 and forged.status_code < 500
    assert nobody.status_code == 401 and "rebound admin-link" in nobody.text


async def test_the_woocommerce_done_page_offers_the_admin_to_the_browser_that_connected(
    server: httpx.AsyncClient, redis: Any, worker: None
) -> None:
    from app.settings import get_settings
    from integrations.woocommerce.standin import WooCommerceStandin, serve

    standin = WooCommerceStandin(outbound_origin=str(server.base_url))
    standin.add_store("wool.example", name="Wool Example")
    settings = get_settings()
    async with serve(standin) as origin:
        settings.woocommerce_api_origin = origin
        try:
            started = await server.get(
                "/connect/woocommerce", params={"store": "https://wool.example"}
            )
            returned = await standin.approve(started.headers["location"])
        finally:
            settings.woocommerce_api_origin = None
    browser = started.headers["set-cookie"].split(";")[0]
    done = "/connect/woocommerce/done?" + urlsplit(returned).query
    assert parse_qs(urlsplit(returned).query)["success"] == ["1"]

    elsewhere = await server.get(done)  # the same URL, another browser
    page = await server.get(done, headers={"Cookie": browser})
    reloaded = await server.get(done, headers={"Cookie": browser})

    assert "Open the Rebound admin" not in elsewhere.text
    assert "Open the Rebound admin" in page.text
    link = page.text.split("href='")[1].split("'")[0].replace("&amp;", "&")
    assert link.startswith("https://rebound.test/admin/login?token=")
    assert "Open the Rebound admin" not in reloaded.text  # shown once
    signed_in = await server.get("/admin/login?" + urlsplit(link).query)
    assert signed_in.status_code == 303
    session = await server.get(
        "/api/session", headers={"Cookie": f"{SESSION_COOKIE}={cookie_from(signed_in)}"}
    )
    assert session.json()["shop"] == "wool.example" and session.json()["platform"] == "woocommerce"


# --- test emails -----------------------------------------------------------------------------


async def count_rows(model: Any) -> int:
    async with sessionmaker()() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def test_a_test_email_goes_to_the_given_address_only(
    server: httpx.AsyncClient,
    shops: tuple[Shop, Shop],
    mailbox: Mailbox,
    smtp_url: str,
    redis: Any,
) -> None:
    shop, _ = shops
    await use_mailbox(shop, smtp_url)

    response = await server.post(
        "/api/flows/abandoned_cart/steps/3/test",
        json={"email": "merchant@alpha.example", "lang": "sv"},
        headers=bearer(shop),
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"sent_to": "merchant@alpha.example"}
    (message,) = mailbox.messages
    assert mailbox.recipients == [["merchant@alpha.example"]]
    assert str(message["To"]) == "merchant@alpha.example"
    assert str(message["Subject"]).startswith("[Test] ")
    assert "customer@example.com" not in message.as_string()
    assert "List-Unsubscribe" not in message
    assert await count_rows(Send) == await count_rows(Enrollment) == 0


async def test_test_emails_are_limited_to_ten_an_hour_per_shop(
    server: httpx.AsyncClient,
    shops: tuple[Shop, Shop],
    mailbox: Mailbox,
    smtp_url: str,
    redis: Any,
) -> None:
    a, b = shops
    await use_mailbox(a, smtp_url)
    await use_mailbox(b, smtp_url)
    path = "/api/flows/post_purchase/steps/3/test"
    body = {"email": "merchant@alpha.example"}

    answers = [await server.post(path, json=body, headers=bearer(a)) for _ in range(11)]
    other_shop = await server.post(path, json=body, headers=bearer(b))

    assert [answer.status_code for answer in answers] == [202] * 10 + [429]
    assert other_shop.status_code == 202
    assert len(mailbox.messages) == 11


# --- app.analytics: the overview and A/B tests -----------------------------------------------


async def test_the_overview_is_json_with_money_as_strings(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops

    response = await server.get("/api/overview", params={"days": 7}, headers=bearer(shop))

    assert response.status_code == 200, response.text
    overview = response.json()
    assert overview["days"] == 7 and overview["currency"] == "EUR"
    assert isinstance(overview["revenue"], str)
    assert all(isinstance(flow["revenue"], str) for flow in overview["flows"])


async def test_overview_and_ab_tests_are_per_shop(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    a, b = shops
    start = next(
        body for method, path, body in ENDPOINTS if (method, path) == ("POST", "/api/tests")
    )
    b_test = await server.post("/api/tests", json=start, headers=bearer(b))
    assert b_test.status_code == 201, b_test.text
    b_id = b_test.json()["id"]
    before = await snapshot(b)

    listed = await server.get("/api/tests", headers=bearer(a))
    read = await server.get(f"/api/tests/{b_id}", headers=bearer(a))
    stopped = await server.post(f"/api/tests/{b_id}/stop", headers=bearer(a))
    missing = await server.get("/api/tests/999999", headers=bearer(a))

    assert listed.json() == []
    assert read.status_code == stopped.status_code == missing.status_code == 404
    assert read.json() == stopped.json() == missing.json()
    assert await snapshot(b) == before
    mine = await server.get(f"/api/tests/{b_id}", headers=bearer(b))
    assert mine.status_code == 200 and mine.json()["test"]["ended_at"] is None
    assert {result["key"] for result in mine.json()["results"]} >= {"a", "b"}
    ended = await server.post(f"/api/tests/{b_id}/stop", headers=bearer(b))
    assert ended.status_code == 200 and ended.json()["ended_at"] is not None


async def test_shop_b_figures_carts_and_tests_never_reach_shop_a(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    a, b = shops
    await add_activity(b, "bert@example.com")
    now = utcnow()
    async with sessionmaker()() as session:
        send = (await session.exec(select(Send).where(Send.shop_id == b.id))).one()
        order = Order(
            shop_id=b.id or 0, platform_id="b-1", name="#B1", email="bert@example.com",
            currency="EUR", total_price="99.00", placed_at=now,
        )  # fmt: skip
        session.add(order)
        await session.flush()
        session.add(
            Attribution(
                shop_id=b.id or 0, order_id=order.id or 0, send_id=send.id or 0,
                flow="abandoned_cart", step=0, via="cart", attributed_at=now,
            )
        )  # fmt: skip
        session.add(
            Checkout(
                shop_id=b.id or 0, token="b-cart", email="bert@example.com", first_name="Bert",
                currency="EUR", subtotal_price="99.00", total_price="99.00",
                line_items=[{"title": "Beta Boot", "quantity": 1, "price": "99.00"}],
                started_at=now, platform_updated_at=now,
            )
        )  # fmt: skip
        await session.commit()
    start = next(body for m, path, body in ENDPOINTS if (m, path) == ("POST", "/api/tests"))
    before = await snapshot(b)

    overview = await server.get("/api/overview", headers=bearer(a))
    started = await server.post("/api/tests", json=start, headers=bearer(a))
    preview = await server.get(url("/api/flows/{flow}/steps/{number}/preview"), headers=bearer(a))
    own = await server.get("/api/overview", headers=bearer(b))

    assert overview.status_code == 200 and overview.json()["revenue"] == "0"
    assert started.status_code == 201
    assert (await server.get("/api/tests", headers=bearer(b))).json() == []
    assert "Bert" not in preview.text and "Beta Boot" not in preview.text
    assert await snapshot(b) == before
    assert Decimal(own.json()["revenue"]) == Decimal("99.00")  # B's figures are there, for B


async def test_a_refused_ab_test_names_the_field_and_starts_nothing(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, _ = shops
    two = [{"key": "a"}, {"key": "b", "subject": {"en": "Still thinking?"}}]
    cases = [
        ({"flow": "abandoned_cart", "step_key": "nope", "variants": two}, "step_key"),
        ({"flow": "newsletter", "step_key": "reminder", "variants": two}, "flow"),
        ({"flow": "abandoned_cart", "step_key": "reminder", "variants": two[:1]}, "variants"),
        ({"flow": "abandoned_cart", "step_key": "reminder", "variants": two, "holdout": 0.9},
         "holdout"),
        ({"flow": "abandoned_cart", "step_key": "reminder",
          "variants": [{"key": "a"}, {"key": "b", "subject": {"xx": "Hi"}}]},
         "variants.1.subject.xx"),
    ]  # fmt: skip
    for body, field in cases:
        response = await server.post("/api/tests", json=body, headers=bearer(shop))
        assert list(field_errors(response)) == [field], body
    assert (await server.get("/api/tests", headers=bearer(shop))).json() == []

    started = await server.post(
        "/api/tests",
        json={"flow": "abandoned_cart", "step_key": "reminder", "variants": two},
        headers=bearer(shop),
    )
    again = await server.post(
        "/api/tests",
        json={"flow": "abandoned_cart", "step_key": "reminder", "variants": two},
        headers=bearer(shop),
    )
    assert started.status_code == 201, started.text
    # Stored as the step's own words for that language, which is how the engine sends them.
    assert started.json()["variants"][1]["overrides"] == {"en": {"subject": "Still thinking?"}}
    assert again.status_code == 409


async def test_the_attribution_window_is_the_shops_to_set_within_bounds(
    server: httpx.AsyncClient, shops: tuple[Shop, Shop]
) -> None:
    shop, other = shops
    kept = await server.patch("/api/shop", json={"attribution_days": 7}, headers=bearer(shop))
    refused = await server.patch("/api/shop", json={"attribution_days": 90}, headers=bearer(shop))

    assert kept.status_code == 200 and kept.json()["attribution_days"] == 7
    assert list(field_errors(refused)) == ["attribution_days"]
    theirs = await server.get("/api/shop", headers=bearer(other))
    assert theirs.json()["attribution_days"] == 5
