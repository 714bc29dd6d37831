"""The shop's flows: read and tune them, preview a step, send a step to yourself as a test."""

import re
from email.message import EmailMessage
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import ShopDep
from app.api.errors import RESPONSES, invalid, refused_as
from app.db import SessionDep
from app.mail import render
from app.mail.i18n import LANGUAGES
from app.mail.transport import PermanentDeliveryError, transport_for, transport_for_shop
from app.redis import RedisDep
from app.settings import get_settings
from app.shops.models import Shop
from flows import preview as previews
from flows import repository as flows_repository
from flows import service as flows_service
from flows.definitions import FLOW_NAMES, settings_for
from flows.models import Flow
from flows.service import FlowSettingError, format_duration

router = APIRouter(prefix="/api", tags=["flows"], responses=RESPONSES)

TEST_EMAILS_PER_HOUR = 10
EMAIL = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:]+$")
Lang = Annotated[str, Field(pattern="^[a-z]{2}$")]
# The preview's HTML holds the merchant's words and product titles: opened on its own or in the
# editor's frame, it runs no script, loads nothing but images, and is never taken for another type.
PREVIEW_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # the shop's latest cart or order may be in it
}
FlowName = Annotated[str, Path(description=f"One of: {', '.join(FLOW_NAMES)}")]
StepNumber = Annotated[int, Path(ge=1, description="The step's place in the flow, from 1")]


class Step(BaseModel):
    number: int
    key: str
    template: str
    delay: str  # "24h", counted from `after`
    after: str  # trigger, shipped, delivered or replenish
    enabled: bool
    marketing: bool
    offer: str | None  # "10%", "5.00" (off), "free-shipping"; None: no offer
    offers: dict[str, str] | None = None  # win-back: the offer by customer segment
    overrides: dict[str, dict[str, str]]  # the merchant's own words: {lang: {subject, intro}}
    conditions: dict[str, Any] = {}  # all must hold for the step to send (README)
    action: str | None = None  # instead of an email (win-back: suppress_marketing)


class FlowSettings(BaseModel):
    name: str
    enabled: bool
    version: int
    steps: list[Step]
    settings: dict[str, Any]


class FlowChanges(BaseModel):
    """Left out: unchanged. Every setting is checked before any is kept."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    settings: dict[str, Any] = {}


class Words(BaseModel):
    """A subject ({{ first_name }} and {{ shop_name }} allowed) and an opening; "" takes the
    merchant's words back, left out keeps them."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = None
    intro: str | None = None  # the message, in place of the step's own (a paragraph per line)
    preheader: str | None = None  # the preview line inboxes show after the subject


class SegmentOffers(BaseModel):
    """Win-back's offer per customer segment, in the words `offer` takes; left out: unchanged."""

    model_config = ConfigDict(extra="forbid")

    top: str | None = Field(default=None, examples=["25%"])
    regular: str | None = None
    one_time: str | None = None


class StepChanges(BaseModel):
    """Left out: unchanged. `offer`: "10%", "5.00", "free-shipping", or "none"/null for none.
    `offers` (win-back): the same per customer segment, e.g. {"top": "25%"}."""

    model_config = ConfigDict(extra="forbid")

    delay: str | None = Field(default=None, examples=["24h"])
    offer: str | None = Field(default=None, examples=["10%"])
    offers: SegmentOffers | None = None
    enabled: bool | None = None
    overrides: dict[str, Words] = {}


class FlowSteps(BaseModel):
    """A flow's steps as stored, to edit as data: delays in seconds, offers as {kind, value[,
    expires_hours, minimum_subtotal]}, conditions, questions, actions (README: "A flow as
    data"). A step's `key` names it across edits."""

    model_config = ConfigDict(extra="forbid")

    steps: list[dict[str, Any]] = Field(max_length=50)


class TestEmail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, pattern=EMAIL.pattern)
    lang: Lang = "en"


class TestSent(BaseModel):
    sent_to: str


class Preview(BaseModel):
    subject: str
    sender: str
    lang: str
    html: str
    text: str


def _offer(offer: dict[str, Any] | None) -> str | None:
    if not offer:
        return None
    if offer["kind"] == "percentage":
        return f"{offer['value']}%"
    if offer["kind"] == "free_shipping":
        return "free-shipping"
    return str(offer["value"])


def _step(number: int, step: dict[str, Any]) -> Step:
    offers = step.get("offers")
    return Step(
        number=number,
        key=step.get("key") or f"step_{number}",
        template=step.get("template") or "",
        delay=format_duration(step["delay"]),
        after=step.get("after", "trigger"),
        enabled=step.get("enabled", True),
        marketing=step.get("marketing", True),
        offer=_offer(step.get("offer")),
        offers={segment: _offer(o) or "none" for segment, o in offers.items()} if offers else None,
        overrides=step.get("overrides") or {},
        conditions=step.get("conditions") or {},
        action=step.get("action"),
    )


def _flow_settings(flow: Flow) -> FlowSettings:
    return FlowSettings(
        name=flow.name,
        enabled=flow.enabled,
        version=flow.version,
        steps=[_step(number, step) for number, step in enumerate(flow.steps, start=1)],
        settings=settings_for(flow.name, flow.settings),
    )


async def _shop_flow(session: SessionDep, shop: Shop, name: str, step: int | None = None) -> Flow:
    """The shop's flow, 404 when it has none by that name (or no such step)."""
    assert shop.id is not None
    flow = await flows_repository.get_flow(session, shop.id, name) if name in FLOW_NAMES else None
    if flow is None:
        raise HTTPException(404, f"no flow {name!r}; flows are: {', '.join(FLOW_NAMES)}")
    if step is not None and not 1 <= step <= len(flow.steps):
        raise HTTPException(404, f"{name} has steps 1 to {len(flow.steps)}, not {step}")
    return flow


@router.get("/flows")
async def list_flows(shop: ShopDep, session: SessionDep) -> list[FlowSettings]:
    assert shop.id is not None
    return [_flow_settings(flow) for flow in await flows_repository.list_flows(session, shop.id)]


@router.patch("/flows/{flow}")
async def change_flow(
    flow: FlowName, changes: FlowChanges, shop: ShopDep, session: SessionDep
) -> FlowSettings:
    """Switch a flow on or off and change its settings. Edits apply to new enrollments; a
    switched-off flow ends running series before their next email."""
    found = await _shop_flow(session, shop, flow)
    if changes.enabled is not None:
        found = await flows_service.set_enabled(session, shop, flow, changes.enabled)
    for key, value in changes.settings.items():
        # A setting of the wrong type can fail as a TypeError in the checks.
        with refused_as(f"settings.{key}", ValueError, TypeError):
            found = await flows_service.set_setting(session, shop, flow, key, value)
    await session.commit()
    return _flow_settings(found)


@router.put("/flows/{flow}/steps/{number}")
async def change_step(
    flow: FlowName, number: StepNumber, changes: StepChanges, shop: ShopDep, session: SessionDep
) -> FlowSettings:
    """A step's delay ("0s", "90m", "24h", "3d"), offer, on/off and own words per language.
    Each change is checked with the whole flow before any is kept."""
    found = await _shop_flow(session, shop, flow, number)
    sent = changes.model_fields_set
    if changes.delay is not None:
        with refused_as("delay", FlowSettingError):
            seconds = flows_service.parse_duration(changes.delay)
            found = await flows_service.set_step_delay(session, shop, flow, number, seconds)
    if "offer" in sent:
        with refused_as("offer", FlowSettingError):
            offer = flows_service.parse_offer(changes.offer or "none")
            found = await flows_service.set_step_offer(session, shop, flow, number, offer)
    if changes.offers is not None:
        found = await _set_segment_offers(session, shop, flow, number, changes.offers)
    if changes.enabled is not None:
        found = await flows_service.set_step_enabled(session, shop, flow, number, changes.enabled)
    for lang, words in changes.overrides.items():
        if lang not in LANGUAGES:
            raise invalid(f"overrides.{lang}", f"own words are for {', '.join(LANGUAGES)}")
        for part in ("subject", "intro", "preheader"):
            text = getattr(words, part)
            if text is None:
                continue
            with refused_as(f"overrides.{lang}.{part}", FlowSettingError):
                found = await flows_service.set_step_words(
                    session, shop, flow, number, lang, **{part: text}
                )
    await session.commit()
    return _flow_settings(found)


async def _set_segment_offers(
    session: SessionDep, shop: Shop, flow: str, number: int, changes: SegmentOffers
) -> Flow:
    """Each segment's words are checked on their own field, then the step with the whole flow."""
    offers = {}
    for segment in sorted(changes.model_fields_set):
        with refused_as(f"offers.{segment}", FlowSettingError):
            offers[segment] = flows_service.parse_offer(getattr(changes, segment) or "none")
    with refused_as("offers", FlowSettingError):
        return await flows_service.set_step_segment_offers(session, shop, flow, number, offers)


@router.get("/flows/{flow}/steps")
async def flow_steps(flow: FlowName, shop: ShopDep, session: SessionDep) -> FlowSteps:
    """The flow's steps as data, to change and PUT back."""
    found = await _shop_flow(session, shop, flow)
    return FlowSteps(steps=found.steps)


@router.put("/flows/{flow}/steps")
async def replace_steps(
    flow: FlowName, body: FlowSteps, shop: ShopDep, session: SessionDep
) -> FlowSettings:
    """Replace the flow's steps: add, remove, reorder, change templates, conditions and offers.
    Every step is checked before any is kept; running series keep the version they began with."""
    await _shop_flow(session, shop, flow)
    with refused_as("steps", FlowSettingError):
        found = await flows_service.set_steps(session, shop, flow, body.steps)
    await session.commit()
    return _flow_settings(found)


@router.get("/flows/{flow}/steps/{number}/preview", response_model=None)
async def preview_step(
    flow: FlowName,
    number: StepNumber,
    shop: ShopDep,
    session: SessionDep,
    lang: Annotated[str, Query(pattern="^[a-z]{2}$")] = "en",
    format: Annotated[Literal["json", "html"], Query()] = "json",
) -> Preview | HTMLResponse:
    """A step as the customer would get it, in `lang`, with the shop's latest cart or order, or
    sample data. Nothing is sent, stored or tracked."""
    message = await _preview(session, shop, flow, number, lang)
    html_part = message.get_body(preferencelist=("html",))
    text_part = message.get_body(preferencelist=("plain",))
    html = str(html_part.get_content()) if html_part else ""
    if format == "html":
        return HTMLResponse(html, headers=PREVIEW_HEADERS)
    return Preview(
        subject=str(message["Subject"]),
        sender=str(message["From"]),
        lang=lang,
        html=html,
        text=str(text_part.get_content()) if text_part else "",
    )


async def _preview(
    session: SessionDep, shop: Shop, flow: str, number: int, lang: str
) -> EmailMessage:
    if lang not in LANGUAGES:
        raise invalid("lang", f"lang must be one of {', '.join(LANGUAGES)}")
    await _shop_flow(session, shop, flow, number)
    try:
        return await previews.preview(session, shop, flow, number, lang)
    except FlowSettingError as exc:  # a step that sends no email
        raise HTTPException(404, str(exc)) from exc


@router.post("/flows/{flow}/steps/{number}/test", status_code=202)
async def send_test(
    flow: FlowName,
    number: StepNumber,
    test: TestEmail,
    shop: ShopDep,
    session: SessionDep,
    redis: RedisDep,
) -> TestSent:
    """The step's preview, sent with the shop's mail transport to `email` only, its subject
    marked [Test]. Nothing about a customer is stored. At most 10 an hour per shop."""
    message = await _preview(session, shop, flow, number, test.lang)
    key = f"api:test-emails:{shop.id}"
    # The hour starts with the first test email; SET NX never extends it.
    await redis.set(key, 0, ex=3600, nx=True)
    if await redis.incr(key) > TEST_EMAILS_PER_HOUR:
        raise HTTPException(429, f"at most {TEST_EMAILS_PER_HOUR} test emails an hour")
    transport = transport_for_shop(shop, transport_for(get_settings()))
    try:
        await transport.deliver(_as_test(message, shop, test.email), shop_domain=shop.domain)
    except PermanentDeliveryError as exc:
        raise invalid("email", f"the mail server refused this address: {exc}") from exc
    except Exception as exc:
        raise HTTPException(502, f"the mail transport did not take the message: {exc}") from exc
    return TestSent(sent_to=test.email)


def _as_test(message: EmailMessage, shop: Shop, to: str) -> EmailMessage:
    """The preview addressed to `to`, subject marked, and signed again (DKIM covers both)."""
    subject = str(message["Subject"])
    for header in ("To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post"):
        del message[header]  # a preview's links lead nowhere: no unsubscribe button either
    message["To"] = to
    message["Subject"] = f"[Test] {subject}"
    return render.finish(message, render.brand(shop)["name"], shop.domain)
