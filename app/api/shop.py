"""The shop's own settings: sending rules, branding and contact, tracking."""

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app import security
from app.api.auth import ShopDep
from app.api.errors import RESPONSES, invalid, refused_as
from app.db import SessionDep
from app.mail import render
from app.shops import service as shops_service
from app.shops.models import Shop
from app.shops.service import SendingRuleError
from flows.service import format_duration

router = APIRouter(prefix="/api", tags=["shop"], responses=RESPONSES)


class Profile(BaseModel):
    sender_name: str | None = None
    sender_address: str | None = None  # the shop's own From address, when it may use one
    reply_to: str | None = None
    logo_url: str | None = None
    accent_color: str | None = None
    phone: str | None = None
    contact_email: str | None = None
    chat_url: str | None = None
    social: dict[str, str] = {}  # network → https:// link


class ShopSettings(BaseModel):
    domain: str
    name: str
    platform: str
    currency: str | None
    timezone: str | None  # None: UTC
    quiet_hours: str | None  # "21:00-08:00", None: off
    frequency_cap: str | None  # "16h", None: off
    tracking: bool
    attribution_days: int  # an order counts for an email clicked at most this long before it
    profile: Profile
    address: list[str]  # the postal address at the foot of every email, a line each
    mail_transport: str  # "default", or the kind of the shop's own: smtp, postmark, ses, outbox
    sender: str  # the address emails come from now (the shop's own, or Rebound's MAIL_FROM)


class ProfileChanges(BaseModel):
    """Fields left out stay as they are; null clears one. `social` changes only the networks
    it names (null removes a network)."""

    model_config = ConfigDict(extra="forbid")

    sender_name: str | None = None
    sender_address: str | None = None
    reply_to: str | None = None
    logo_url: str | None = None
    accent_color: str | None = None
    phone: str | None = None
    contact_email: str | None = None
    chat_url: str | None = None
    social: dict[str, str | None] = {}


class ShopChanges(BaseModel):
    """Fields left out stay as they are; null switches quiet hours or the cap off."""

    model_config = ConfigDict(extra="forbid")

    quiet_hours: str | None = None
    frequency_cap: str | None = None
    timezone: str | None = None
    tracking: bool | None = None
    attribution_days: int | None = None
    profile: ProfileChanges | None = None
    address: list[str] | str | None = None  # lines, or text with a line each; "" clears it
    # The shop's own email provider, in MAIL_TRANSPORT's forms (smtp://user:pass@host:587,
    # postmark://TOKEN, ses://KEY:SECRET@region), or "default". Kept encrypted, never shown.
    mail_transport: str | None = Field(default=None, max_length=2000)


def _settings(shop: Shop) -> ShopSettings:
    return ShopSettings(
        domain=shop.domain,
        name=shop.name,
        platform=shop.platform,
        currency=shop.currency,
        timezone=shop.timezone,
        quiet_hours=shop.quiet_hours,
        frequency_cap=format_duration(shop.frequency_cap) if shop.frequency_cap else None,
        tracking=shop.tracking,
        attribution_days=shop.attribution_days,
        profile=Profile.model_validate(shop.profile or {}),
        address=list(shop.address or []),
        mail_transport=_transport_kind(shop),
        sender=render.sender_address(shop),
    )


def _transport_kind(shop: Shop) -> str:
    # The kind only: the URL holds credentials.
    if not shop.mail_transport_encrypted:
        return "default"
    try:
        url = security.decrypt(shop.mail_transport_encrypted)
    except ValueError:
        return "unreadable"
    return url.partition(":")[0].lower()


@router.get("/shop")
async def get_shop(shop: ShopDep) -> ShopSettings:
    return _settings(shop)


@router.patch("/shop")
async def change_shop(changes: ShopChanges, shop: ShopDep, session: SessionDep) -> ShopSettings:
    """Each field is checked before anything is kept: one refused field changes nothing."""
    sent = changes.model_fields_set
    for field in ("quiet_hours", "frequency_cap", "timezone"):
        if field not in sent:
            continue
        value = getattr(changes, field)
        if value is None and field == "timezone":
            raise invalid("timezone", "timezone must be a time zone like Europe/Stockholm")
        with refused_as(field, SendingRuleError):
            shops_service.set_sending_rules(shop, **{field: "off" if value is None else value})
    if changes.tracking is not None:
        shops_service.set_profile(shop, {}, tracking=changes.tracking)
    if changes.attribution_days is not None:
        with refused_as("attribution_days", SendingRuleError):
            shops_service.set_attribution_days(shop, changes.attribution_days)
    if "address" in changes.model_fields_set:
        with refused_as("address", SendingRuleError):
            shops_service.set_address(shop, changes.address)
    if changes.mail_transport is not None:  # first: the sender address may depend on it
        with refused_as("mail_transport", SendingRuleError):
            shops_service.set_mail_transport(shop, changes.mail_transport)
    if changes.profile is not None:
        profile = changes.profile
        for key in sorted(profile.model_fields_set - {"social"}):
            with refused_as(f"profile.{key}", SendingRuleError):
                shops_service.set_profile(shop, {key: getattr(profile, key)})
        for network, url in profile.social.items():
            with refused_as(f"profile.social.{network}", SendingRuleError):
                shops_service.set_profile(shop, {}, {network: url})
    await session.commit()
    return _settings(shop)
