"""The merchant's admin pages. Each is rendered on the server from the same domain functions the
JSON API uses, so it reads without JavaScript; changes go through the API from
`static/admin.js`. Inside the Shopify admin (a document load with `id_token`) the pages add App
Bridge, and the script authenticates with a fresh id token instead of the cookie."""

import gzip
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader

from app.admin import charts, display, figures
from app.api.auth import SESSION_COOKIE, PageShop, csrf_token
from app.commerce import repository as commerce
from app.db import SessionDep, utcnow
from app.inbox import repository as inbox
from app.inbox.models import InboxStatus
from app.mail import render
from app.mail.i18n import LANGUAGES, language
from app.mail.render import TEMPLATES
from app.privacy import repository as privacy
from app.settings import Settings, get_settings
from app.shops.models import Shop
from flows import repository as flows
from flows.definitions import ABANDONED_CART, DEFAULT_SETTINGS, FLOW_NAMES, settings_for
from flows.models import STUCK_NOTE, Enrollment, Send, may_not_have_been_sent
from flows.service import FlowSettingError, shop_flow

router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True
)
LANGUAGE_NAMES = {
    "en": "English", "sv": "Swedish", "de": "German", "nb": "Norwegian", "ru": "Russian",
    "is": "Icelandic",
}  # fmt: skip
templates.globals.update(
    amount=charts.amount,
    anchor_text=display.anchor_text,
    delay_text=display.delay_text,
    flow_title=charts.flow_title,
    offer_words=display.offer_words,
    segment_offers=display.segment_offers,
    sends_email=display.sends_email,
    step_title=display.step_title,
    wait_text=display.wait_text,
    languages=LANGUAGES,
    language_names=LANGUAGE_NAMES,
)
templates.filters.update(
    percent=display.percent, network_name=display.network_name, delay_text=display.delay_text
)
APP_BRIDGE = "https://cdn.shopify.com/shopifycloud/app-bridge.js"
# Outside Shopify nothing is loaded from elsewhere, and no other site may frame the admin.
OWN_ORIGIN_ONLY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
ACTIVITY_LIMIT = 100


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:12]

    @cached_property
    def gzipped(self) -> bytes:
        return gzip.compress(self.body, mtime=0)


STATIC = Path(__file__).parent / "static"
ASSETS = {
    "admin.css": Asset((STATIC / "admin.css").read_bytes(), "text/css; charset=utf-8"),
    "admin.js": Asset((STATIC / "admin.js").read_bytes(), "text/javascript; charset=utf-8"),
}
GZIP_FROM = 1400  # bytes: below one packet, compressing saves nothing


@router.get("/static/{name}")
async def static_file(request: Request, name: str, v: str = "") -> Response:
    """The admin's one stylesheet and one script. The pages ask for them by content hash, so a
    browser keeps them for a year and fetches them again only when they change."""
    asset = ASSETS.get(name)
    if asset is None:
        raise HTTPException(404, "no such file")
    cache = "public, max-age=31536000, immutable" if v == asset.version else "no-cache"
    headers = {"Cache-Control": cache, "Vary": "Accept-Encoding"}
    if _accepts_gzip(request):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def _static_url(name: str) -> str:
    return f"/admin/static/{name}?v={ASSETS[name].version}"


NAV = [
    ("/admin", "Overview"),
    ("/admin/flows", "Flows"),
    ("/admin/tests", "A/B tests"),
    ("/admin/activity", "Activity"),
    ("/admin/settings", "Settings"),
    ("/admin/privacy", "Privacy"),
]


def _page(
    request: Request, shop: Shop, template: str, title: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render an admin page with what every page needs: the shop, the navigation, App Bridge
    inside Shopify, the CSRF token for a cookie session, and the headers for either."""
    api_key = get_settings().shopify_api_key
    embedded = getattr(request.state, "embedded", False) and bool(api_key)
    # Inside Shopify, links keep the parameters that let App Bridge and the sign-in find the
    # shop again; the short-lived id token itself is fetched afresh on each load.
    kept = {
        key: request.query_params[key]
        for key in ("embedded", "shop", "host")
        if embedded and key in request.query_params
    }

    def link(path: str, **query: Any) -> str:
        params = {**kept, **{key: value for key, value in query.items() if value is not None}}
        return f"{path}?{urlencode(params)}" if params else path

    cookie = request.cookies.get(SESSION_COOKIE)
    html = templates.get_template(template).render(
        {
            "request": request,
            "shop": shop,
            "title": title,
            "embedded": embedded,
            "api_key": api_key,
            "app_bridge": APP_BRIDGE,
            "csrf": csrf_token(cookie) if cookie else None,
            "nav": NAV,
            "here": request.url.path,
            "link": link,
            "static": _static_url,
            "currency": shop.currency or "",
            **context,
        }
    )
    headers = dict(getattr(request.state, "page_headers", None) or {})
    if not embedded:
        headers["Content-Security-Policy"] = OWN_ORIGIN_ONLY
    headers["Cache-Control"] = "no-store"
    headers["Referrer-Policy"] = "same-origin"
    headers["Vary"] = "Accept-Encoding"
    body = html.encode()
    # The editor repeats its fields for every step and language: a tenth of it goes gzipped.
    if len(body) >= GZIP_FROM and _accepts_gzip(request):
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return HTMLResponse(body, status_code=status_code, headers=headers)


def _local(moment: datetime | None, shop: Shop) -> str:
    """A stored UTC time in the shop's time zone, to the minute."""
    if moment is None:
        return ""
    if not shop.timezone:
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"{moment.astimezone(ZoneInfo(shop.timezone)):%Y-%m-%d %H:%M}"


def _period(days: int) -> int:
    return days if days in figures.PERIODS else 30


# --- overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    platform: str
    connected: bool
    token_refused: bool
    last_event: str  # when the store last sent a webhook, in the shop's time, or ""
    failed_events: int
    # No webhook kept (INBOX_KEEP_DAYS) though the store sent checkouts or orders before:
    # its webhooks may no longer reach Rebound.
    quiet_days: int | None = None


async def _connection(session: SessionDep, shop: Shop) -> Connection:
    assert shop.id is not None
    last_event = _local(await inbox.last_received_at(session, shop.id), shop)
    went_quiet = not last_event and await commerce.has_any(session, shop.id)
    return Connection(
        platform="Shopify" if shop.platform == "shopify" else "WooCommerce",
        connected=shop.access_token_encrypted is not None,
        token_refused=shop.token_invalid_at is not None,
        last_event=last_event,
        failed_events=await inbox.count_with_status(session, shop.id, InboxStatus.FAILED),
        quiet_days=get_settings().inbox_keep_days if went_quiet else None,
    )


@router.get("", response_class=HTMLResponse)
async def overview_page(
    request: Request, shop: PageShop, session: SessionDep, days: int = 30
) -> HTMLResponse:
    assert shop.id is not None
    days = _period(days)
    shop_flows = await flows.list_flows(session, shop.id)
    found = await figures.overview(session, shop, days)
    has_sent = bool(await flows.recent_activity(session, shop.id, 1))
    names = [flow.name for flow in shop_flows] or list(FLOW_NAMES)
    revenue_chart = flow_chart = ""
    if found is not None and has_sent:
        currency = found.currency or shop.currency or ""
        revenue_chart = charts.revenue_per_day(found.series, names, currency)
        flow_chart = charts.bars_per_flow(
            [(f.flow, f.revenue) for f in found.flows],
            title=f"Revenue per flow, last {days} days ({currency})",
            format_value=lambda value: charts.amount(value, currency),
        )
    cart = next((flow for flow in shop_flows if flow.name == ABANDONED_CART), None)
    test_step = (
        next((n for n, step in enumerate(cart.steps, start=1) if display.sends_email(step)), None)
        if cart
        else None
    )
    return _page(
        request,
        shop,
        "admin/overview.html",
        "Overview",
        days=days,
        periods=figures.PERIODS,
        figures=found,
        has_sent=has_sent,
        flows=shop_flows,
        connection=await _connection(session, shop),
        revenue_chart=revenue_chart,
        flow_chart=flow_chart,
        cart=cart,
        test_step=test_step,
        shop_language=language(shop.locale),
    )


# --- flows ---------------------------------------------------------------------------------


@router.get("/flows", response_class=HTMLResponse)
async def flows_page(request: Request, shop: PageShop, session: SessionDep) -> HTMLResponse:
    assert shop.id is not None
    found = await figures.overview(session, shop, 30)
    return _page(
        request,
        shop,
        "admin/flows.html",
        "Flows",
        flows=await flows.list_flows(session, shop.id),
        figures={f.flow: f for f in found.flows} if found else None,
        summaries=display.FLOW_SUMMARIES,
    )


@router.get("/flows/{name}", response_class=HTMLResponse)
async def flow_page(
    request: Request,
    name: str,
    shop: PageShop,
    session: SessionDep,
    step: int | None = None,
    lang: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    try:
        flow = await shop_flow(session, shop, name)
    except FlowSettingError as exc:
        return _page(request, shop, "admin/not_found.html", "Not found", 404, reason=str(exc))
    sending = [n for n, s in enumerate(flow.steps, start=1) if display.sends_email(s)]
    shown_step = step if step in sending else (sending[0] if sending else None)
    shown_lang = lang if lang in LANGUAGES else language(shop.locale)
    settings = settings_for(flow.name, flow.settings)
    return _page(
        request,
        shop,
        "admin/flow.html",
        charts.flow_title(flow.name),
        flow=flow,
        summary=display.FLOW_SUMMARIES.get(flow.name, ""),
        settings=[
            (key, value, display.setting_field(key, value), DEFAULT_SETTINGS[name].get(key) is None)
            for key, value in settings.items()
        ],
        step_options=[(n, f"{n}. {display.step_title(flow.steps[n - 1], n)}") for n in sending],
        preview_step=shown_step,
        preview_lang=shown_lang,
    )


# --- A/B tests, activity, settings, privacy -------------------------------------------------


@router.get("/tests", response_class=HTMLResponse)
async def tests_page(request: Request, shop: PageShop, session: SessionDep) -> HTMLResponse:
    assert shop.id is not None
    shop_flows = await flows.list_flows(session, shop.id)
    return _page(
        request,
        shop,
        "admin/tests.html",
        "A/B tests",
        tests=await figures.ab_tests(session, shop),
        flows=shop_flows,
        local=lambda moment: _local(moment, shop),
    )


@dataclass(frozen=True)
class ActivityRow:
    when: str
    flow: str
    step: str
    email: str
    status: str  # sent, skipped, failed, sending, stuck (sending too long), waiting, ended
    note: str


def _sent_row(send: Send, enrollment: Enrollment, shop: Shop, now: datetime) -> ActivityRow:
    if 0 <= send.step < len(enrollment.steps):
        step = display.step_title(enrollment.steps[send.step], send.step + 1)
    else:
        step = "Customer-service alert"
    stuck = may_not_have_been_sent(send, now)
    note = "; ".join(part for part in (STUCK_NOTE if stuck else "", send.error or "") if part)
    if send.offer_skipped:
        note = f"{note}; offer withheld: {send.offer_skipped}".lstrip("; ")
    elif send.discount_code:
        note = f"{note}; offer code {send.discount_code}".lstrip("; ")
    return ActivityRow(
        _local(send.sent_at or send.claimed_at, shop),
        enrollment.flow,
        step,
        send.email,
        "stuck" if stuck else send.status.value,
        note,
    )


WAITING_FOR = {
    "quiet_hours": "the end of quiet hours",
    "smart_sending": "smart sending: another flow emailed them recently",
    "shipped": "the parcel to ship",
    "delivered": "the parcel to arrive",
    "replenish": "the product to run low",
}


def _waiting_row(enrollment: Enrollment, shop: Shop) -> ActivityRow:
    number = enrollment.next_step
    if number is not None and number < len(enrollment.steps):
        step = display.step_title(enrollment.steps[number], number + 1)
    else:
        step = ""
    reason = enrollment.waiting_for or ""
    due = f" (due {_local(enrollment.due_at, shop)})" if enrollment.due_at else ""
    return ActivityRow(
        _local(enrollment.updated_at, shop),
        enrollment.flow,
        step,
        enrollment.email,
        "waiting",
        f"waiting for {WAITING_FOR.get(reason, reason.replace('_', ' '))}{due}",
    )


EXIT_REASONS = {
    "purchased": "the customer bought",
    "unsubscribed": "the customer unsubscribed",
    "sold_out": "nothing in the cart is for sale any more",
    "undeliverable": "the address refused email",
    "checkout_closed": "the store closed the cart",
    "newer_checkout": "the customer started a newer cart",
    "flow_disabled": "the flow was switched off",
}


def _ended_row(enrollment: Enrollment, shop: Shop) -> ActivityRow:
    reason = enrollment.exit_reason or ""
    return ActivityRow(
        _local(enrollment.updated_at, shop),
        enrollment.flow,
        "",
        enrollment.email,
        "ended",
        EXIT_REASONS.get(reason, reason.replace("_", " ")),
    )


@router.get("/activity", response_class=HTMLResponse)
async def activity_page(request: Request, shop: PageShop, session: SessionDep) -> HTMLResponse:
    assert shop.id is not None
    sent = await flows.recent_activity(session, shop.id, ACTIVITY_LIMIT)
    waiting = await flows.waiting_enrollments(session, shop.id, ACTIVITY_LIMIT)
    ended = await flows.ended_enrollments(session, shop.id, ACTIVITY_LIMIT)
    now = utcnow()
    return _page(
        request,
        shop,
        "admin/activity.html",
        "Activity",
        rows=[_sent_row(send, enrollment, shop, now) for send, enrollment in sent],
        waiting=[_waiting_row(enrollment, shop) for enrollment in waiting],
        ended=[_ended_row(enrollment, shop) for enrollment in ended],
        limit=ACTIVITY_LIMIT,
    )


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, shop: PageShop, session: SessionDep) -> HTMLResponse:
    settings = get_settings()
    try:
        cart = settings_for(
            ABANDONED_CART, (await shop_flow(session, shop, ABANDONED_CART)).settings
        )
    except FlowSettingError:
        cart = None
    return _page(
        request,
        shop,
        "admin/settings.html",
        "Settings",
        profile=shop.profile or {},
        sender_hint=_sender_hint(shop, settings),
        transport=display.mail_transport_kind(shop, settings),
        frequency_cap=display.delay_text(shop.frequency_cap) if shop.frequency_cap else "off",
        cart_settings=cart,
        social_networks=_social_networks(shop),
    )


def _sender_hint(shop: Shop, settings: Settings) -> str:
    now = f"Emails come from {render.sender_address(shop)} now."
    if shop.mail_transport_encrypted:
        return f"{now} Any address your email provider may send for."
    domain = settings.mail_from_domain
    return f"{now} An address on {domain}; another domain needs your own email provider."


COMMON_NETWORKS = ("instagram", "facebook", "tiktok", "pinterest", "youtube")


def _social_networks(shop: Shop) -> list[tuple[str, str]]:
    """The shop's networks, then the common ones it has not given yet, as (network, link)."""
    given = dict((shop.profile or {}).get("social") or {})
    return [*given.items(), *((n, "") for n in COMMON_NETWORKS if n not in given)]


@router.get("/privacy", response_class=HTMLResponse)
async def privacy_page(request: Request, shop: PageShop, session: SessionDep) -> HTMLResponse:
    assert shop.id is not None
    return _page(
        request,
        shop,
        "admin/privacy.html",
        "Privacy",
        requests=await privacy.data_requests(session, shop.id),
        local=lambda moment: _local(moment, shop),
    )
