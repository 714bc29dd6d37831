"""Offers in emails: a platform-neutral description, and the code made for one recipient."""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from app.settings import get_settings

OfferKind = Literal["percentage", "fixed_amount", "free_shipping"]
KINDS = ("percentage", "fixed_amount", "free_shipping")
DEFAULT_EXPIRY_HOURS = 72


class OfferError(ValueError):
    """An offer that cannot be made as configured; the message says why."""


@dataclass(frozen=True)
class Offer:
    kind: OfferKind
    value: Decimal  # percent off, or an amount in the shop's currency; unused for free shipping
    expires_hours: int = DEFAULT_EXPIRY_HOURS
    minimum_subtotal: Decimal | None = None

    @classmethod
    def from_step(cls, step: dict[str, Any]) -> "Offer | None":
        raw = step.get("offer")
        if not raw:
            return None
        kind = raw.get("kind")
        if kind not in KINDS:
            raise OfferError(f"offer kind must be one of {', '.join(KINDS)}, not {kind!r}")
        try:
            value = Decimal(str(raw.get("value", "0")))
            minimum = raw.get("minimum_subtotal")
            minimum_subtotal = Decimal(str(minimum)) if minimum is not None else None
        except InvalidOperation as exc:
            raise OfferError("offer value and minimum must be amounts") from exc
        if kind == "percentage" and not Decimal(0) < value <= Decimal(100):
            raise OfferError("a percentage offer must be more than 0 and at most 100")
        if kind == "fixed_amount" and value <= 0:
            raise OfferError("a fixed-amount offer must be more than 0")
        return cls(
            kind, value, int(raw.get("expires_hours", DEFAULT_EXPIRY_HOURS)), minimum_subtotal
        )

    def ends_at(self, sent_at: datetime) -> datetime:
        return sent_at + timedelta(hours=self.expires_hours)


@dataclass(frozen=True)
class DiscountCode:
    code: str
    offer: Offer
    ends_at: datetime


def code_for(enrollment_id: int, step: int) -> str:
    """The same code for the same email, however often its job is retried, and unguessable."""
    digest = hmac.new(
        get_settings().signing_key, f"offer:{enrollment_id}:{step}".encode(), hashlib.sha256
    ).digest()
    return "BACK-" + base64.b32encode(digest[:10]).decode().rstrip("=")
