"""The merchant's admin pages: SVG charts, and every page as a signed-in merchant sees it, with
the admin's session cookie or loaded inside Shopify with an id token."""

import json
import re
import sys
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from app.admin import charts
from app.analytics import abtests
from app.analytics.models import Attribution, DayFigures
from app.api.auth import SESSION_COOKIE, session_cookie
from app.commerce.models import Order
from app.db import sessionmaker, utcnow
from app.privacy.models import DataRequest
from app.shops.models import Shop
from flows import service as flows_service
from flows.definitions import DEFAULT_SETTINGS
from flows.models import Click, Enrollment, EnrollmentStatus, Send, SendStatus
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import SHOP_DOMAIN, SHOPIFY_CLIENT_ID

SVG = "{http://www.w3.org/2000/svg}"
APP_BRIDGE = "https://cdn.shopify.com/shopifycloud/app-bridge.js"
FLOWS = ["abandoned_cart", "post_purchase", "winback"]


# --- charts ----------------------------------------------------------------------------------


def week(values: dict[str, list[int]]) -> list[DayFigures]:
    first = date(2026, 11, 17)
    return [
        DayFigures(first + timedelta(days=n), {f: Decimal(v[n]) for f, v in values.items()})
        for n in range(7)
    ]


def parsed(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 (our own output) - well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text and desc is not None and desc.text
    # The accessible name and description are the chart's own title and desc.
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == "bar"]


def test_revenue_chart_has_a_bar_per_flow_and_day_that_earned_with_axes_and_a_summary() -> None:
    series = week(
        {"abandoned_cart": [0, 120, 80, 0, 40, 0, 300], "winback": [0, 0, 50, 0, 0, 0, 0]}
    )

    root = parsed(charts.revenue_per_day(series, FLOWS, "SEK", id_prefix="rev"))

    found = bars(root)
    assert len(found) == 5  # four abandoned-cart days and one win-back day
    assert {bar.get("data-flow") for bar in found} == {"abandoned_cart", "winback"}
    # Every bar says what it is.
    bar_titles = [bar.find(f"{SVG}title") for bar in found]
    assert all(t is not None and t.text for t in bar_titles)
    assert "2026-11-23, Abandoned cart: 300.00 SEK" in [t.text for t in bar_titles if t is not None]
    # The day's segments stack: win-back sits on top of abandoned cart on the 19th.
    cart, winback = (b for b in found if "2026-11-19" in (b.findtext(f"{SVG}title") or ""))
    assert float(winback.get("y") or 0) < float(cart.get("y") or 0)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "0" in texts and "300" in texts  # the y axis: 0 to 300 (or more) in the currency
    assert "Nov 17" in texts and "Nov 23" in texts  # the x axis: the dates
    assert {"Abandoned cart", "Post-purchase", "Win-back"} <= set(texts)  # the legend
    desc = root.findtext(f"{SVG}desc") or ""
    assert "590.00 SEK in all" in desc and "best day was 2026-11-23" in desc
    assert root.find(f"{SVG}title").get("id") == "rev-title"  # type: ignore[union-attr]


def test_a_quiet_period_draws_axes_and_no_bars() -> None:
    root = parsed(charts.revenue_per_day(week({"abandoned_cart": [0] * 7}), FLOWS, "EUR"))

    assert bars(root) == []
    assert len([t for t in root.iter(f"{SVG}text") if t.get("x") and "Nov" in (t.text or "")]) == 7
    assert "0.00 EUR in all" in (root.findtext(f"{SVG}desc") or "")


def test_ninety_days_get_a_bar_each_and_a_readable_number_of_dates() -> None:
    first = date(2026, 8, 26)
    series = [
        DayFigures(first + timedelta(days=n), {"post_purchase": Decimal(n)}) for n in range(90)
    ]

    root = parsed(charts.revenue_per_day(series, FLOWS, "NOK"))

    assert len(bars(root)) == 89  # every day but the first, which earned 0
    dates = [t for t in root.iter(f"{SVG}text") if re.fullmatch(r"[A-Z][a-z]{2} \d+", t.text or "")]
    assert 5 <= len(dates) <= 10


def test_the_bar_chart_per_flow_scales_bars_to_the_largest() -> None:
    values: list[tuple[str, charts.Number]] = [
        ("abandoned_cart", Decimal("1000")),
        ("post_purchase", Decimal("250")),
        ("winback", Decimal(0)),
    ]

    root = parsed(
        charts.bars_per_flow(
            values, title="Revenue per flow", format_value=lambda v: charts.amount(v, "USD")
        )
    )

    found = bars(root)
    assert [bar.get("data-flow") for bar in found] == FLOWS
    widths = [float(bar.get("width") or 0) for bar in found]
    assert widths[1] == pytest.approx(widths[0] / 4) and widths[2] == 0
    assert "Abandoned cart 1,000.00 USD" in (root.findtext(f"{SVG}desc") or "")
    assert "Post-purchase: 250.00 USD" in [b.findtext(f"{SVG}title") for b in found]


def test_chart_text_is_escaped() -> None:
    svg = charts.bars_per_flow([("a<b>&c", 1)], title='Revenue "<all>" & more')

    root = parsed(svg)

    assert root.findtext(f"{SVG}title") == 'Revenue "<all>" & more'


@pytest.mark.parametrize(
    ("top", "axis", "step"),
    [(0, 4, 1), (3, 4, 1), (7, 8, 2), (99, 100, 25), (590, 800, 200), (45678, 80000, 20000)],
)
def test_the_y_axis_ends_on_a_round_number(top: int, axis: int, step: int) -> None:
    assert charts.nice_ceiling(top) == (Decimal(axis), Decimal(step))


# --- reading pages ---------------------------------------------------------------------------


class Page(HTMLParser):
    """The elements of an HTML page with their attributes, and the text of a few of them."""

    TEXT_OF = {
        "h1",
        "h2",
        "h3",
        "label",
        "title",
        "button",
        "a",
        "th",
        "td",
        "p",
        "li",
        "span",
        "dt",
    }

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {key: value or "" for key, value in attrs}))
        if tag in self.TEXT_OF:
            self._open.append((tag, []))

    def handle_data(self, data: str) -> None:
        for _, parts in self._open:
            parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                name, parts = self._open.pop(index)
                self.texts.setdefault(name, []).append(" ".join("".join(parts).split()))
                break

    def all(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs in self.elements
            if name == tag and all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]

    def text(self, tag: str) -> list[str]:
        return self.texts.get(tag, [])

    def unlabelled_fields(self) -> list[dict[str, str]]:
        labelled = {attrs.get("for") for attrs in self.all("label")}
        return [
            attrs
            for name, attrs in self.elements
            if (name in ("select", "textarea") or name == "input")
            and attrs.get("type") not in ("hidden", "submit", "button")
            and attrs.get("id") not in labelled
            and not attrs.get("aria-label")
            and not attrs.get("aria-labelledby")
        ]

    def external_urls(self) -> list[str]:
        """Every URL the browser would load or go to that is not on this site."""
        found = []
        for _, attrs in self.elements:
            for key in ("src", "href", "action", "data-src", "srcset", "poster", "formaction"):
                value = attrs.get(key, "")
                if re.match(r"^\s*(https?:)?//", value):
                    found.append(value)
            if "url(" in attrs.get("style", ""):
                found.append(attrs["style"])
        return found


def sign_in(client: httpx.AsyncClient, shop: Shop) -> None:
    """The admin's session cookie, as /admin/login sets it after a sign-in link."""
    client.cookies.set(SESSION_COOKIE, session_cookie(shop))


async def page(client: httpx.AsyncClient, path: str, status: int = 200) -> Page:
    response = await client.get(path)
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


# --- every page ------------------------------------------------------------------------------

PAGES = [
    ("/admin", "Overview", ["Getting started"]),
    ("/admin?days=7", "Overview", ["Getting started"]),
    ("/admin/flows", "Flows", ["Abandoned cart", "Post-purchase", "Win-back"]),
    ("/admin/flows/abandoned_cart", "Abandoned cart", ["Steps", "Settings", "Preview"]),
    ("/admin/flows/post_purchase", "Post-purchase", ["Steps", "Settings", "Preview"]),
    ("/admin/flows/winback", "Win-back", ["Steps", "Settings", "Preview"]),
    ("/admin/tests", "A/B tests", ["Start a test"]),
    ("/admin/activity", "Activity", ["Waiting", "Latest emails"]),
    ("/admin/settings", "Settings", ["Sender and contact", "Branding", "Sending rules"]),
    ("/admin/privacy", "Privacy", ["Customer data requests"]),
]


@pytest.mark.parametrize(("path", "heading", "sections"), PAGES)
async def test_each_page_renders_for_a_signed_in_merchant(
    server: httpx.AsyncClient, shop: Shop, path: str, heading: str, sections: list[str]
) -> None:
    sign_in(server, shop)

    response = await server.get(path)

    assert response.status_code == 200, response.text[:2000]
    found = Page(response.text)
    assert found.text("h1") == [heading]
    h2s = set(found.text("h2"))
    assert set(sections) <= h2s, h2s
    assert found.unlabelled_fields() == []
    assert found.external_urls() == []
    assert found.all("script", src=APP_BRIDGE) == []
    assert found.all("a", href="#main"), "a skip link"
    assert found.all("main", id="main")
    # The page's own origin only: no other site's scripts, styles or frames, and none may frame it.
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    # One stylesheet and one script, both the admin's own.
    assert [a["href"].split("?")[0] for a in found.all("link", rel="stylesheet")] == [
        "/admin/static/admin.css"
    ]
    scripts = [attrs["src"].split("?")[0] for tag, attrs in found.elements if tag == "script"]
    assert scripts == ["/admin/static/admin.js"]
    (sign_out,) = found.all("form", data_api="/api/session/sign-out", data_method="POST")
    assert "Sign out" in found.text("button")


async def test_a_new_shop_is_shown_what_to_do_first(server: httpx.AsyncClient, shop: Shop) -> None:
    sign_in(server, shop)

    found = await page(server, "/admin")

    assert "Getting started" in found.text("h2")
    steps = found.text("h3")
    assert steps == [
        "Your flows",
        "Your store's connection",
        "Send yourself a test",
        "Make the emails yours",
    ]
    assert any(p.startswith("All 3 flows are on") for p in found.text("p"))
    connection = " ".join(found.text("li"))
    assert "Connected Shopify store rebound-test.myshopify.com" in connection
    assert "Your store has sent no events yet" in connection
    # The test goes to the first reminder, through the API.
    assert found.all("form", data_api="/api/flows/abandoned_cart/steps/1/test", data_method="POST")
    assert found.all("a", href="/admin/flows/abandoned_cart")
    # No figures to show yet: no charts.
    assert found.all("svg") == []


async def test_pages_without_a_session_say_how_to_sign_in(server: httpx.AsyncClient) -> None:
    for path in ("/admin", "/admin/flows/abandoned_cart", "/admin/settings"):
        response = await server.get(path)
        assert response.status_code == 401
        assert "sign" in response.text.lower()
    server.cookies.set(SESSION_COOKIE, "forged.cookie")
    assert (await server.get("/admin")).status_code == 401


async def test_static_files_are_small_cached_by_version_and_load_nothing_from_elsewhere(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)
    found = await page(server, "/admin/flows")
    css = found.all("link", rel="stylesheet")[0]["href"]
    js = next(a["src"] for tag, a in found.elements if tag == "script")

    for url, media in ((css, "text/css"), (js, "text/javascript")):
        response = await server.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert "immutable" in response.headers["cache-control"]
        assert response.headers["content-encoding"] == "gzip"
        assert len(response.content) < 40_000
        assert not re.search(r"https?://|@import|url\(", response.text), url

    unversioned = await server.get(css.split("?")[0])
    assert unversioned.headers["cache-control"] == "no-cache"
    assert (await server.get("/admin/static/../settings.py")).status_code == 404
    assert (await server.get("/admin/static/secret_key")).status_code == 404


# --- figures ---------------------------------------------------------------------------------


async def sent_email(shop: Shop, flow: str = "abandoned_cart", **send: Any) -> tuple[int, int]:
    """An enrollment with one email sent (or as `send` says); its id and the send's."""
    assert shop.id is not None
    async with sessionmaker()() as session:
        stored = await flows_service.shop_flow(session, shop, flow)
        enrollment = Enrollment(
            shop_id=shop.id,
            flow=flow,
            subject=f"test:{utcnow().timestamp()}:{send.get('email', 'ada@example.com')}",
            email=send.get("email", "ada@example.com"),
            steps=stored.steps,
        )
        session.add(enrollment)
        await session.flush()
        assert enrollment.id is not None
        row = Send(
            shop_id=shop.id,
            enrollment_id=enrollment.id,
            step=send.get("step", 0),
            email=enrollment.email,
            status=send.get("status", SendStatus.SENT),
            sent_at=utcnow() if send.get("status", SendStatus.SENT) == SendStatus.SENT else None,
            error=send.get("error"),
            discount_code=send.get("discount_code"),
            claimed_at=send.get("claimed_at") or utcnow(),
        )
        session.add(row)
        await session.flush()
        assert row.id is not None
        ids = enrollment.id, row.id
        await session.commit()
    return ids


async def test_a_store_whose_events_stopped_is_told_so_after_the_inbox_purge(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:  # an order once came; its webhook is purged since
        session.add(
            Order(
                shop_id=shop.id, platform_id="1001", name="#1001", email="ada@example.com",
                currency="USD", total_price="129.00", placed_at=utcnow() - timedelta(days=40),
            )
        )  # fmt: skip
        await session.commit()
    sign_in(server, shop)

    connection = " ".join((await page(server, "/admin")).text("li"))

    assert "Your store has sent no events in the last 30 days" in connection
    assert "sent no events yet" not in connection


async def test_the_overview_shows_revenue_per_flow_with_charts_once_emails_earn(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    assert shop.id is not None
    _, send_id = await sent_email(shop)
    async with sessionmaker()() as session:
        session.add(Click(shop_id=shop.id, send_id=send_id))
        order = Order(
            shop_id=shop.id,
            platform_id="1001",
            name="#1001",
            email="ada@example.com",
            currency="USD",
            total_price="129.00",
            placed_at=utcnow(),
        )
        session.add(order)
        await session.flush()
        assert order.id is not None
        session.add(
            Attribution(
                shop_id=shop.id,
                order_id=order.id,
                send_id=send_id,
                flow="abandoned_cart",
                step=0,
                via="click",
                attributed_at=order.placed_at,
            )
        )
        await session.commit()
    sign_in(server, shop)

    found = await page(server, "/admin?days=7")

    assert "Getting started" not in found.text("h2")
    assert {"Revenue per day", "Per flow, last 7 days"} <= set(found.text("h2"))
    svgs = found.all("svg", role="img")
    assert len(svgs) == 2
    rects = [a for a in found.all("rect") if a.get("class") == "bar"]
    # One bar for the day that earned, then one per flow.
    assert [r["data-flow"] for r in rects] == ["abandoned_cart", *FLOWS]
    cells = found.text("td")
    assert "129.00 USD" in cells and "100.0 %" in cells  # one email, one order
    # The period links switch between 7, 30 and 90 days; the current one is marked.
    assert [a["href"] for a in found.all("a") if a["href"].startswith("/admin?days=")] == [
        "/admin?days=7",
        "/admin?days=30",
        "/admin?days=90",
    ]
    assert found.all("a", href="/admin?days=7", aria_current="page")


async def test_flows_page_has_a_real_switch_per_flow_with_its_state(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    async with sessionmaker()() as session:
        await flows_service.set_enabled(session, shop, "winback", False)
        await session.commit()
    sign_in(server, shop)

    found = await page(server, "/admin/flows")

    switches = {b["data-flow-toggle"]: b for b in found.all("button") if "data-flow-toggle" in b}
    assert set(switches) == set(FLOWS)
    assert switches["winback"]["aria-pressed"] == "false"
    assert switches["abandoned_cart"]["aria-pressed"] == "true"
    assert all(b["type"] == "button" for b in switches.values())
    assert found.text("dt").count("Revenue, 30 days") == 3


# --- the flow editor -------------------------------------------------------------------------


async def test_the_editor_shows_steps_settings_words_and_a_preview_of_the_chosen_step(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)

    found = await page(server, "/admin/flows/abandoned_cart?step=3&lang=sv")

    forms = found.all("form", data_method="PUT")
    assert [f["data-api"] for f in forms] == [
        f"/api/flows/abandoned_cart/steps/{n}" for n in (1, 2, 3)
    ]
    assert [a["value"] for a in found.all("input", name="delay")] == ["0s", "1d", "3d"]
    assert [a["value"] for a in found.all("input", name="offer")] == ["", "", "10%"]
    assert len(found.all("input", name="enabled", type="checkbox")) == 3
    for lang in ("en", "sv", "de", "nb", "ru", "is"):
        assert len(found.all("input", name=f"overrides.{lang}.subject")) == 3
        assert len(found.all("textarea", name=f"overrides.{lang}.intro")) == 3
        assert len(found.all("input", name=f"overrides.{lang}.preheader")) == 3
    named = {a.get("name") for _, a in found.elements}
    assert {f"settings.{key}" for key in DEFAULT_SETTINGS["abandoned_cart"]} <= named
    assert found.all("input", name="settings.cart_kept_days", value="30")
    assert found.all("input", name="settings.exit_on_order", type="checkbox", checked="")

    frame = found.all("iframe")[0]
    assert frame["src"] == "/api/flows/abandoned_cart/steps/3/preview?lang=sv&format=html"
    assert "sandbox" in frame and frame["title"]
    # The frame loads with the same cookie.
    preview = await server.get(frame["src"])
    assert preview.status_code == 200 and "<html" in preview.text.lower()
    # The merchant's words and product titles are in it: no script may run there.
    policy = [part.strip() for part in preview.headers["content-security-policy"].split(";")]
    assert {"default-src 'none'", "img-src https: data:", "sandbox"} <= set(policy)
    assert not any(part.startswith("script-src") for part in policy)
    assert preview.headers["x-content-type-options"] == "nosniff"
    assert preview.headers["content-type"].startswith("text/html")
    test_form = found.all("form", data_api="/api/flows/abandoned_cart/steps/{step}/test")
    assert test_form and found.all("input", name="email", type="email")


async def test_the_editor_shows_saved_changes_and_its_fields_are_where_the_api_names_errors(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)
    csrf = (await server.get("/api/session")).json()["csrf"]
    headers = {"X-Rebound-CSRF": csrf}

    saved = await server.put(
        "/api/flows/abandoned_cart/steps/2",
        json={"delay": "2h", "offer": "free-shipping", "overrides": {"sv": {"subject": "Hej!"}}},
        headers=headers,
    )
    assert saved.status_code == 200, saved.text
    found = await page(server, "/admin/flows/abandoned_cart")
    assert [a["value"] for a in found.all("input", name="delay")][1] == "2h"
    assert [a["value"] for a in found.all("input", name="offer")][1] == "free-shipping"
    assert [a["value"] for a in found.all("input", name="overrides.sv.subject")][1] == "Hej!"

    # The field an error names is a field of the form that sent it.
    names = {a.get("name") for _, a in found.elements}
    refused = [
        ("put", "/api/flows/abandoned_cart/steps/1", {"delay": "soon"}),
        ("put", "/api/flows/abandoned_cart/steps/1", {"offer": "lots"}),
        ("patch", "/api/flows/abandoned_cart", {"settings": {"alert_email": "nobody"}}),
    ]
    for method, url, body in refused:
        response = await server.request(method, url, json=body, headers=headers)
        assert response.status_code == 422, response.text
        for problem in response.json()["detail"]:
            assert problem["field"] in names, problem


async def test_win_back_offers_are_edited_per_segment_with_errors_next_to_their_field(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)
    headers = {"X-Rebound-CSRF": (await server.get("/api/session")).json()["csrf"]}
    saved = await server.put(
        "/api/flows/winback/steps/1", json={"offers": {"top": "25%"}}, headers=headers
    )
    assert saved.status_code == 200, saved.text

    found = await page(server, "/admin/flows/winback")

    (form,) = found.all("form", data_api="/api/flows/winback/steps/1")
    fields = {a["name"]: a for a in found.all("input") if a.get("name", "").startswith("offers.")}
    assert {name: a["value"] for name, a in fields.items()} == {
        "offers.top": "25%", "offers.regular": "15%", "offers.one_time": "10%",
    }  # fmt: skip
    # The step with offers by segment has no single offer field; the others keep theirs.
    assert [a["id"] for a in found.all("input", name="offer")] == ["s2-offer", "s3-offer"]
    labels = set(found.text("label"))
    assert {"Top customers", "Regular customers", "One-time buyers"} <= labels
    hint_ids = {a.get("id") for a in found.all("p", **{"class": "hint"})}
    for attrs in fields.values():
        assert attrs["aria-describedby"] in hint_ids
    refused = await server.put(
        "/api/flows/winback/steps/1", json={"offers": {"one_time": "lots"}}, headers=headers
    )
    assert [problem["field"] for problem in refused.json()["detail"]] == ["offers.one_time"]


async def test_an_unknown_flow_is_not_found(server: httpx.AsyncClient, shop: Shop) -> None:
    sign_in(server, shop)

    found = await page(server, "/admin/flows/newsletter", status=404)

    assert found.text("h1") == ["Not found"]


async def test_every_form_sends_to_an_api_route_that_exists(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    """Each form's data-api and data-method, sent as an empty change: never 404 or 405, and the
    CSRF token the page carries is the one the API wants."""
    sign_in(server, shop)
    for path in ("/admin", "/admin/flows/post_purchase", "/admin/settings", "/admin/tests"):
        found = await page(server, path)
        csrf = found.all("meta", name="rebound-csrf")[0]["content"]
        for form in found.all("form"):
            if "data-api" not in form or form["data-api"] == "/api/session/sign-out":
                continue  # signing out: tests/test_api.py, and it would end this session
            url = form["data-api"].replace("{step}", "1")
            response = await server.request(
                form["data-method"], url, json={}, headers={"X-Rebound-CSRF": csrf}
            )
            assert response.status_code not in (403, 404, 405), (path, url, response.text)


# --- activity, settings, privacy, tests --------------------------------------------------------


async def test_activity_lists_sent_skipped_failed_and_waiting_with_reasons(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    await sent_email(shop, email="sent@example.com", discount_code="RB-TEN")
    await sent_email(
        shop, email="skip@example.com", status=SendStatus.SKIPPED, error="cart below min_cart_value"
    )
    await sent_email(
        shop, email="fail@example.com", status=SendStatus.FAILED, error="550 mailbox unavailable"
    )
    enrollment_id, _ = await sent_email(shop, email="later@example.com")
    async with sessionmaker()() as session:
        waiting = await session.get(Enrollment, enrollment_id)
        assert waiting is not None
        waiting.next_step, waiting.waiting_for, waiting.due_at = 1, "quiet_hours", utcnow()
        await session.commit()
    stopped_id, _ = await sent_email(shop, email="gone@example.com")
    async with sessionmaker()() as session:
        stopped = await session.get(Enrollment, stopped_id)
        assert stopped is not None
        stopped.status, stopped.exit_reason = EnrollmentStatus.EXITED, "sold_out"
        await session.commit()
    sign_in(server, shop)

    found = await page(server, "/admin/activity")

    cells = " | ".join(found.text("td"))
    for text in (
        "sent@example.com",
        "offer code RB-TEN",
        "cart below min_cart_value",
        "550 mailbox unavailable",
        "waiting for the end of quiet hours",
        "Still there",  # the waiting series' next step
        "nothing in the cart is for sale any more",  # a series stopped, and why
    ):
        assert text in cells, text
    assert {"Sent", "Skipped", "Failed"} <= set(found.text("span"))


async def test_an_email_left_sending_is_flagged_once_it_may_never_have_been_sent(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sending = SendStatus.SENDING
    await sent_email(shop, email="now@example.com", status=sending)
    await sent_email(
        shop, email="stuck@example.com", status=sending, claimed_at=utcnow() - timedelta(minutes=16)
    )
    sign_in(server, shop)

    found = await page(server, "/admin/activity")

    rows = {row[3]: row for row in _table_rows(found)}
    assert rows["stuck@example.com"][4:] == [
        "May not have been sent",
        "may not have been sent — check your mail provider's log",
    ]
    assert rows["now@example.com"][4:] == ["Sending", ""]  # a moment ago: on its way


def _table_rows(found: Page) -> list[list[str]]:
    """The activity's sent-email rows, as the cells' texts (badges included)."""
    cells = found.text("td")
    return [cells[i : i + 6] for i in range(0, len(cells), 6) if "@" in cells[i + 3]]


async def test_settings_show_the_sender_address_and_ask_for_a_provider(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)
    csrf = (await server.get("/api/session")).json()["csrf"]
    switched_off = await server.patch(
        "/api/shop", json={"quiet_hours": None}, headers={"X-Rebound-CSRF": csrf}
    )
    assert switched_off.status_code == 200, switched_off.text

    found = await page(server, "/admin/settings")

    spans = found.text("span")
    assert any("outbox" in s.lower() for s in spans)
    (sender,) = found.all("input", name="profile.sender_address", type="email")
    assert any("come from shop@rebound.test" in hint for hint in found.text("p"))
    # The provider's URL holds its password: asked for, never shown.
    (provider,) = found.all("input", name="mail_transport", type="password")
    assert provider["value"] == ""
    assert found.all("input", name="settings.alert_email", type="email")
    assert found.all("input", name="settings.alert_min_total")
    assert found.all("input", name="quiet_hours", value="off")
    assert found.all("input", name="frequency_cap", value="16h")
    assert found.all("input", name="tracking", type="checkbox", checked="")
    assert found.all("form", data_api="/api/flows/abandoned_cart", data_method="PATCH")
    assert len(found.all("form", data_api="/api/shop", data_method="PATCH")) == 4


async def test_privacy_lists_data_requests_with_links_to_their_exports(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    assert shop.id is not None
    async with sessionmaker()() as session:
        request = DataRequest(
            shop_id=shop.id,
            platform_request_id="9001",
            customer_email="ada@example.com",
            export="{}",
        )
        session.add(request)
        await session.commit()
        request_id = request.id
    sign_in(server, shop)

    found = await page(server, "/admin/privacy")

    assert "ada@example.com" in found.text("td")
    link = found.all("a", href=f"/api/privacy/requests/{request_id}/export")
    assert link and link[0]["data-api-download"]
    assert (await server.get(link[0]["href"])).status_code == 200


async def test_a_test_shows_each_variant_with_its_chance_to_be_best(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)
    empty = await page(server, "/admin/tests")
    assert "No tests yet" in empty.text("h2")
    async with sessionmaker()() as session:
        await abtests.start_test(
            session,
            shop,
            "abandoned_cart",
            "reminder",
            [
                {"key": "a", "weight": 1},
                {"key": "b", "weight": 1, "overrides": {"en": {"subject": "Forgot something?"}}},
            ],
            0.1,
            500,
        )
        await session.commit()

    found = await page(server, "/admin/tests")

    assert "Abandoned cart: Reminder" in found.text("h2")
    assert [t for t in found.text("th") if t.startswith(("Variant ", "Holdout"))] == [
        "Variant A",
        "Variant B",
        "Holdout (no email)",
    ]
    assert len(found.all("meter")) == 3
    assert found.all("form", data_api="/api/tests", data_method="POST")
    assert [f for f in found.all("form") if f.get("data-api", "").endswith("/stop")]


async def test_a_new_test_has_no_holdout_unless_asked_and_the_weights_the_merchant_sets(
    server: httpx.AsyncClient, shop: Shop
) -> None:
    sign_in(server, shop)

    form_page = await page(server, "/admin/tests")

    # No holdout unless the merchant asks for one; each variant's weight is theirs to set.
    assert form_page.all("input", name="holdout", value="0")
    weights = [a for a in form_page.all("input") if a.get("name", "").endswith(".weight")]
    assert [(a["name"], a["value"]) for a in weights] == [
        ("variants.0.weight", "1"), ("variants.1.weight", "1"),
    ]  # fmt: skip
    (form,) = form_page.all("form", data_api="/api/tests")
    # What admin.js sends: data-extra's variant keys, with the weights set where they stand.
    body = json.loads(form["data-extra"])
    body["variants"][0]["weight"], body["variants"][1]["weight"] = 0, 1
    headers = {"X-Rebound-CSRF": form_page.all("meta", name="rebound-csrf")[0]["content"]}
    new = {"flow": "abandoned_cart", "step_key": "last_call", "holdout": 0, **body}
    refused = await server.post("/api/tests", json=new, headers=headers)
    assert [p["field"] for p in refused.json()["detail"]] == ["variants.0.weight"]
    body["variants"][0]["weight"] = 3
    started = await server.post("/api/tests", json=new, headers=headers)
    assert started.status_code == 201, started.text
    assert [v["weight"] for v in started.json()["variants"]] == [3, 1]
    assert started.json()["holdout"] == 0


# --- inside Shopify --------------------------------------------------------------------------


async def test_inside_shopify_the_page_loads_app_bridge_and_nothing_else_from_elsewhere(
    server: httpx.AsyncClient, shop: Shop, standin: ShopifyStandin
) -> None:
    standin.add_shop(SHOP_DOMAIN, name="Nordic Wool")
    query = {
        "embedded": "1",
        "host": "aG9zdA",
        "shop": SHOP_DOMAIN,
        "id_token": standin.id_token(SHOP_DOMAIN),
    }

    response = await server.get("/admin/flows/abandoned_cart", params=query)

    assert response.status_code == 200, response.text[:2000]
    found = Page(response.text)
    assert found.all("meta", name="shopify-api-key", content=SHOPIFY_CLIENT_ID)
    assert found.external_urls() == [APP_BRIDGE]
    assert found.all("meta", name="rebound-csrf") == []  # the script uses id tokens instead
    assert found.all("form", data_api="/api/session/sign-out") == []  # Shopify's session
    # Shopify's headers for an embedded page, and no policy that would stop it being framed.
    assert "frame-ancestors" in response.headers.get("content-security-policy", "")
    assert "'none'" not in response.headers.get("content-security-policy", "")
    # Links keep the shop and host (not the short-lived token), so the next page can sign in.
    overview = found.all("a", rel="home")[0]["href"]
    assert overview.startswith("/admin?") and "shop=" in overview and "host=aG9zdA" in overview
    assert "id_token" not in overview
    # The preview needs the bearer token: the script fetches it into the frame.
    frame = found.all("iframe")[0]
    assert "src" not in frame and frame["data-src"].startswith("/api/flows/abandoned_cart/steps/1")
    assert found.unlabelled_fields() == []


async def test_an_id_token_wins_over_another_stores_cookie_and_a_bogus_one_embeds_nothing(
    server: httpx.AsyncClient, shop: Shop, standin: ShopifyStandin
) -> None:
    standin.add_shop(SHOP_DOMAIN, name="Nordic Wool")
    async with sessionmaker()() as session:
        other = Shop(platform="woocommerce", domain="other.example", name="Other Store")
        session.add(other)
        await session.commit()
        await session.refresh(other)
    sign_in(server, other)

    embedded = await server.get(
        "/admin", params={"shop": SHOP_DOMAIN, "id_token": standin.id_token(SHOP_DOMAIN)}
    )
    bogus = await server.get("/admin", params={"id_token": "not-a-token"})

    assert embedded.status_code == 200 and "Other Store" not in embedded.text
    # A token that does not verify is sent to fetch a fresh one; no admin page, no App Bridge
    # page of Rebound's, is built on it.
    assert "Other Store" not in bogus.text and "rebound-csrf" not in bogus.text


async def test_without_the_analytics_module_pages_say_figures_are_not_available(
    server: httpx.AsyncClient, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sent_email(shop)
    # As if app.analytics had no repository or tests yet: importing them fails.
    monkeypatch.setitem(sys.modules, "app.analytics.repository", None)
    monkeypatch.setitem(sys.modules, "app.analytics.abtests", None)
    sign_in(server, shop)

    overview = await page(server, "/admin")
    flows = await page(server, "/admin/flows")
    tests = await page(server, "/admin/tests")

    assert "Revenue and emails" in overview.text("h2")
    assert any("Figures are not available" in p for p in overview.text("p"))
    assert overview.all("svg") == []
    assert flows.text("p").count("Revenue figures are not available yet.") == 3
    assert "Tests are not available yet" in tests.text("h2")
    assert [form["data-api"] for form in tests.all("form")] == ["/api/session/sign-out"]
