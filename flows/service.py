"""Merchant-facing flow settings: defaults for a new shop, on/off, step delays."""

import re
from collections.abc import Sequence
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.commerce.offers import Offer, OfferError
from app.db import utcnow
from app.shops.models import Shop
from flows import engine, repository
from flows.definitions import DEFAULT_FLOWS, FLOW_NAMES, MAX_DELAY
from flows.models import Flow

DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class FlowSettingError(ValueError):
    """A flow edit that cannot be applied; the message says why."""


def parse_duration(text: str) -> int:
    """Seconds in a duration like 0s, 90m, 24h or 3d."""
    match = DURATION.fullmatch(text.lower())
    if not match:
        raise FlowSettingError(f"{text!r} is not a duration like 0s, 90m, 24h or 3d")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DELAY:
        raise FlowSettingError(f"{text!r} is longer than the longest delay, 90 days")
    return seconds


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds and seconds % UNIT_SECONDS[unit] == 0:
            return f"{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


async def install_defaults(session: AsyncSession, shop: Shop) -> None:
    assert shop.id is not None
    for name, steps in DEFAULT_FLOWS.items():
        if await repository.get_flow(session, shop.id, name) is None:
            session.add(Flow(shop_id=shop.id, name=name, steps=[dict(step) for step in steps]))
    await session.flush()


async def _flow(session: AsyncSession, shop: Shop, name: str) -> Flow:
    assert shop.id is not None
    if name not in FLOW_NAMES:
        raise FlowSettingError(f"unknown flow {name!r}; flows are: {', '.join(FLOW_NAMES)}")
    flow = await repository.get_flow(session, shop.id, name)
    if flow is None:
        raise FlowSettingError(f"{shop.domain} has no {name} flow")
    return flow


async def set_step_delay(
    session: AsyncSession, shop: Shop, name: str, step: int, delay: int
) -> Flow:
    """Set step `step` (1-based, as merchants count) of a flow; applies to new enrollments."""
    flow = await _flow(session, shop, name)
    if not 1 <= step <= len(flow.steps):
        raise FlowSettingError(f"{name} has steps 1 to {len(flow.steps)}, not {step}")
    steps = [dict(existing) for existing in flow.steps]
    steps[step - 1]["delay"] = delay
    flow.steps = steps  # a new list, so the JSON column is seen as changed
    flow.updated_at = utcnow()
    return flow


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
        Offer.from_step({"offer": offer})
    except OfferError as exc:
        raise FlowSettingError(f"{text!r}: {exc}") from exc
    return offer


async def set_step_offer(
    session: AsyncSession, shop: Shop, name: str, step: int, offer: dict[str, Any] | None
) -> Flow:
    """Give step `step` (1-based) an offer, or take it away; applies to new enrollments."""
    flow = await _flow(session, shop, name)
    if not 1 <= step <= len(flow.steps):
        raise FlowSettingError(f"{name} has steps 1 to {len(flow.steps)}, not {step}")
    steps = [dict(existing) for existing in flow.steps]
    steps[step - 1].pop("offer", None)
    if offer:
        steps[step - 1]["offer"] = offer
    flow.steps = steps
    flow.updated_at = utcnow()
    return flow


async def set_delays(session: AsyncSession, shop: Shop, name: str, delays: Sequence[int]) -> Flow:
    flow = await _flow(session, shop, name)
    for number, delay in enumerate(delays, start=1):
        flow = await set_step_delay(session, shop, name, number, delay)
    return flow


async def set_enabled(session: AsyncSession, shop: Shop, name: str, enabled: bool) -> Flow:
    flow = await _flow(session, shop, name)
    flow.enabled = enabled
    flow.updated_at = utcnow()
    return flow


async def end_all_enrollments(session: AsyncSession, shop_id: int, reason: str) -> int:
    """End every running series of a shop at once; how many there were."""
    running = await repository.active_enrollments(session, shop_id)
    for enrollment in running:
        engine.exit_enrollment(enrollment, reason)
    return len(running)
