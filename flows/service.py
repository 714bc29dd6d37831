"""Merchant-facing flow settings: defaults for a new shop, on/off, steps and settings. Every
edit is validated as a whole and bumps the flow's version; running enrollments keep theirs."""

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.shops.models import Shop
from flows import engine, repository
from flows.definitions import (
    DEFAULT_SETTINGS,
    DEFAULT_STEPS,
    FLOW_NAMES,
    MAX_DELAY,
    SEGMENTS,
    WINBACK,
    FlowDefinitionError,
    settings_for,
    validate_offer,
    validate_settings,
    validate_steps,
    validate_timing,
)
from flows.models import Flow

DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# One error type for every refused edit, whether the CLI or the admin made it.
FlowSettingError = FlowDefinitionError


def parse_duration(text: str) -> int:
    """Seconds in a duration like 0s, 90m, 24h or 3d."""
    match = DURATION.fullmatch(text.lower())
    if not match:
        raise FlowSettingError(f"{text!r} is not a duration like 0s, 90m, 24h or 3d")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DELAY:
        raise FlowSettingError(f"{text!r} is longer than the longest delay, a year")
    return seconds


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds and seconds % UNIT_SECONDS[unit] == 0:
            return f"{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


async def install_defaults(session: AsyncSession, shop: Shop) -> None:
    assert shop.id is not None
    for name, steps in DEFAULT_STEPS.items():
        if await repository.get_flow(session, shop.id, name) is None:
            flow = Flow(
                shop_id=shop.id,
                name=name,
                steps=[dict(step) for step in steps],
                settings=dict(DEFAULT_SETTINGS[name]),
            )
            session.add(flow)
    await session.flush()


async def shop_flow(session: AsyncSession, shop: Shop, name: str) -> Flow:
    """The shop's flow by name, or a FlowSettingError that lists the flows there are."""
    return await _flow(session, shop, name)


async def _flow(session: AsyncSession, shop: Shop, name: str) -> Flow:
    assert shop.id is not None
    if name not in FLOW_NAMES:
        raise FlowSettingError(f"unknown flow {name!r}; flows are: {', '.join(FLOW_NAMES)}")
    flow = await repository.get_flow(session, shop.id, name)
    if flow is None:
        raise FlowSettingError(f"{shop.domain} has no {name} flow")
    return flow


async def _edit_step(
    session: AsyncSession,
    shop: Shop,
    name: str,
    step: int,
    change: Callable[[dict[str, Any]], None],
) -> Flow:
    """Apply `change` to step `step` (1-based, as merchants count) of a copy, validate the whole
    flow, and only then keep it: a refused edit changes nothing."""
    flow = await _flow(session, shop, name)
    if not 1 <= step <= len(flow.steps):
        raise FlowSettingError(f"{name} has steps 1 to {len(flow.steps)}, not {step}")
    steps = [dict(existing) for existing in flow.steps]
    change(steps[step - 1])
    validate_steps(name, steps)
    validate_timing(name, steps, flow.settings)
    flow.steps = steps  # a new list, so the JSON column is seen as changed
    _bump(flow)
    return flow


def _bump(flow: Flow) -> None:
    flow.version += 1
    flow.updated_at = utcnow()


async def set_step_delay(
    session: AsyncSession, shop: Shop, name: str, step: int, delay: int
) -> Flow:
    """Set a step's delay; applies to new enrollments."""
    return await _edit_step(session, shop, name, step, lambda s: s.update(delay=delay))


async def set_step_enabled(
    session: AsyncSession, shop: Shop, name: str, step: int, enabled: bool
) -> Flow:
    return await _edit_step(session, shop, name, step, lambda s: s.update(enabled=enabled))


def parse_offer(text: str) -> dict[str, Any] | None:
    """An offer from merchant words: 10% (percent off), 5.00 (amount off), free-shipping, none."""
    word = text.strip().lower()
    if word == "none":
        return None
    if word in ("free-shipping", "free_shipping"):
        offer: dict[str, Any] = {"kind": "free_shipping", "value": "0"}
    elif word.endswith("%"):
        offer = {"kind": "percentage", "value": word[:-1].strip()}
    else:
        offer = {"kind": "fixed_amount", "value": word}
    try:
        validate_offer(offer)  # as the whole flow's validation would, to name this offer's field
    except FlowSettingError as exc:
        raise FlowSettingError(f"{text!r}: {exc}") from exc
    return offer


async def set_step_offer(
    session: AsyncSession, shop: Shop, name: str, step: int, offer: dict[str, Any] | None
) -> Flow:
    """Give a step an offer, or take it away; applies to new enrollments."""

    def change(existing: dict[str, Any]) -> None:
        existing.pop("offer", None)
        existing.pop("offers", None)
        if offer:
            existing["offer"] = offer

    return await _edit_step(session, shop, name, step, change)


# What a segment's offer keeps when the merchant changes how much it gives: how long it lasts
# and the smallest cart it needs are not in the words "20%" (win-back's last 14 days).
KEPT_OFFER_TERMS = ("expires_hours", "minimum_subtotal")


async def set_step_segment_offers(
    session: AsyncSession,
    shop: Shop,
    name: str,
    step: int,
    offers: Mapping[str, dict[str, Any] | None],
) -> Flow:
    """Set the win-back offer of some customer segments (None: that segment gets none); the
    other segments keep theirs. Applies to new enrollments."""
    if name != WINBACK:
        raise FlowSettingError("offers by customer segment are for win-back steps only")
    unknown = set(offers) - set(SEGMENTS)
    if unknown:
        raise FlowSettingError(f"segments are {', '.join(SEGMENTS)}, not {sorted(unknown)[0]!r}")

    def change(existing: dict[str, Any]) -> None:
        by_segment = dict(existing.get("offers") or {})
        for segment, offer in offers.items():
            previous = by_segment.get(segment) or {}
            kept = {term: previous[term] for term in KEPT_OFFER_TERMS if term in previous}
            by_segment[segment] = {**offer, **kept} if offer else None
        # A single `offer` would win over every segment's (flows.engine), so it goes.
        existing.pop("offer", None)
        existing["offers"] = by_segment

    return await _edit_step(session, shop, name, step, change)


async def set_step_words(
    session: AsyncSession,
    shop: Shop,
    name: str,
    step: int,
    lang: str,
    subject: str | None = None,
    intro: str | None = None,
    preheader: str | None = None,
) -> Flow:
    """The merchant's own subject, message and preview line (the preheader inboxes show after
    the subject) for one language; None keeps one, "" takes it back."""

    def change(existing: dict[str, Any]) -> None:
        overrides = {k: dict(v) for k, v in (existing.get("overrides") or {}).items()}
        words = overrides.setdefault(lang, {})
        for key, value in (("subject", subject), ("intro", intro), ("preheader", preheader)):
            if value == "":
                words.pop(key, None)
            elif value is not None:
                words[key] = value
        existing["overrides"] = {k: v for k, v in overrides.items() if v}

    return await _edit_step(session, shop, name, step, change)


async def set_steps(
    session: AsyncSession, shop: Shop, name: str, steps: list[dict[str, Any]]
) -> Flow:
    """Replace a flow's steps wholesale (the admin's editor); refused unless all are valid."""
    flow = await _flow(session, shop, name)
    validate_steps(name, steps)
    validate_timing(name, steps, flow.settings)
    flow.steps = [dict(step) for step in steps]
    _bump(flow)
    return flow


async def set_setting(session: AsyncSession, shop: Shop, name: str, key: str, value: Any) -> Flow:
    flow = await _flow(session, shop, name)
    settings = {**settings_for(name, flow.settings), key: value}
    validate_settings(name, settings)
    validate_timing(name, flow.steps, settings)
    flow.settings = settings
    _bump(flow)
    return flow


async def set_delays(session: AsyncSession, shop: Shop, name: str, delays: Sequence[int]) -> Flow:
    flow = await _flow(session, shop, name)
    for number, delay in enumerate(delays, start=1):
        flow = await set_step_delay(session, shop, name, number, delay)
    return flow


async def set_enabled(session: AsyncSession, shop: Shop, name: str, enabled: bool) -> Flow:
    flow = await _flow(session, shop, name)
    flow.enabled = enabled
    _bump(flow)
    return flow


async def end_all_enrollments(session: AsyncSession, shop_id: int, reason: str) -> int:
    """End every running series of a shop at once; how many there were."""
    running = await repository.active_enrollments(session, shop_id)
    for enrollment in running:
        engine.exit_enrollment(enrollment, reason)
    return len(running)
