"""Connecting shops. Services never commit: the CLI command or task around them does."""

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlmodel.ext.asyncio.session import AsyncSession

from app import security
from app.db import sessionmaker, utcnow
from app.mail.render import may_send_as
from app.mail.transport import transport_from_url
from app.settings import get_settings
from app.shops import repository
from app.shops.models import Shop
from flows import service as flows_service
from flows.timing import TimingError, check_timezone, parse_quiet_hours

log = logging.getLogger("rebound.shops")

SHOPIFY_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


class ShopError(ValueError):
    """A shop cannot be connected as asked; the message says why."""


def normalize_shopify_domain(domain: str) -> str:
    domain = domain.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not SHOPIFY_DOMAIN.fullmatch(domain):
        raise ShopError(f"{domain!r} is not a shop domain like your-store.myshopify.com")
    return domain


def check_shopify_credentials(domain: str, access_token: str, api_secret: str | None) -> str:
    """The store's domain, normalised, when the credentials are complete; ShopError says what is
    missing. Callers that ask Shopify something first check here, before any request."""
    domain = normalize_shopify_domain(domain)
    if not access_token.strip():
        raise ShopError("the access token is empty")
    if not api_secret and get_settings().shopify_api_secret is None:
        raise ShopError(
            "no API secret: pass --api-secret (the custom app's API secret key, which signs "
            "its webhooks) or set SHOPIFY_API_SECRET"
        )
    return domain


async def connect_shopify(
    session: AsyncSession,
    *,
    domain: str,
    access_token: str,
    api_secret: str | None,
    name: str | None = None,
    is_demo: bool = False,
    client_id: str | None = None,
) -> Shop:
    """Add a Shopify store, or update the credentials of one already added. `client_id`: the
    store's own app, whose client credentials (`api_secret` the secret) renew the token."""
    domain = check_shopify_credentials(domain, access_token, api_secret)
    shop = await repository.get_by_domain(session, "shopify", domain)
    if shop is None:
        shop = Shop(platform="shopify", domain=domain, name=name or domain, is_demo=is_demo)
        session.add(shop)
        await session.flush()
        await flows_service.install_defaults(session, shop)
    shop.uninstalled_at = None  # a reinstall starts clean and keeps the merchant's flow settings
    shop.token_invalid_at = None
    shop.access_token_encrypted = security.encrypt(access_token.strip())
    # A token given here does not expire (an admin-made custom app's); an install, or a client
    # credentials grant, stores its expiry after.
    shop.token_expires_at = shop.refresh_token_encrypted = shop.refresh_token_expires_at = None
    shop.client_id = client_id
    shop.api_secret_encrypted = security.encrypt(api_secret) if api_secret else None
    forget_signers()
    if name:
        shop.name = name
    return shop


@dataclass(frozen=True)
class Signer:
    """What a webhook receiver needs of a shop: which one it is, and the key its webhooks are
    signed with."""

    shop_id: int
    platform: str
    secret: str | None


# Webhooks come in bursts for the same few shops: the receiver keeps what it looked up for a
# few seconds instead of a query and a decryption per delivery. An edit in this process
# forgets it at once; one made by another process (the CLI, the worker) counts within SIGNER_TTL.
SIGNER_TTL = 5.0
_signers: dict[tuple[str, str], tuple[float, Signer | None]] = {}
# The lookup under way per domain: a burst that finds nothing kept (32 deliveries at once, as
# the ingest benchmark sends) waits for one query and one decryption instead of making 32.
_lookups: dict[tuple[str, str], "asyncio.Task[Signer | None]"] = {}


async def webhook_signer(platform: str, domain: str) -> Signer | None:
    """The shop of `platform` at `domain` and its webhook key, or None for no such shop."""
    key = (platform, domain)
    cached = _signers.get(key)
    if cached is not None and time.monotonic() - cached[0] < SIGNER_TTL:
        return cached[1]
    lookup = _lookups.get(key)
    # A lookup of a loop gone (tests), or cancelled before it ran, is no lookup.
    if lookup is None or lookup.done() or lookup.get_loop() is not asyncio.get_running_loop():
        lookup = asyncio.create_task(_look_up(key), name=f"webhook-signer:{domain}")
        # Seen even when every delivery waiting for it went away first (no "never retrieved").
        lookup.add_done_callback(lambda done: done.cancelled() or done.exception())
        _lookups[key] = lookup
    # Shielded: a delivery whose client hangs up must not cancel the others' lookup.
    return await asyncio.shield(lookup)


async def _look_up(key: tuple[str, str]) -> Signer | None:
    """Its own short session: a receiver must not hold a connection while its delivery waits
    to be written (with every connection held that way, the writer would wait for one
    forever). Kept only if no edit forgot the shops meanwhile: it may have read the old key."""
    started, lookup = time.monotonic(), asyncio.current_task()
    try:
        async with sessionmaker()() as session:
            shop = await repository.get_by_domain(session, *key)
            found = (
                Signer(shop.id, shop.platform, webhook_secret(shop)) if shop and shop.id else None
            )
        if _lookups.get(key) is lookup:
            if len(_signers) > 10_000:  # probes for made-up domains must not grow it without end
                _signers.clear()
            _signers[key] = (started, found)
        return found
    finally:
        if _lookups.get(key) is lookup:
            del _lookups[key]


def forget_signers() -> None:
    _signers.clear()
    _lookups.clear()  # a delivery after an edit must not wait for a lookup begun before it


def webhook_secret(shop: Shop) -> str | None:
    """The secret that signs this shop's webhooks: its own API secret, else SHOPIFY_API_SECRET."""
    if shop.api_secret_encrypted:
        return security.decrypt(shop.api_secret_encrypted)
    if shop.platform != "shopify":
        return None
    fallback = get_settings().shopify_api_secret
    return fallback.get_secret_value() if fallback else None


def normalize_store_url(url: str) -> str:
    """A WooCommerce store's base URL: https, no trailing slash, no query."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ShopError(f"{url!r} is not a store address like https://store.example")
    return f"https://{parts.netloc.lower()}{parts.path.rstrip('/')}"


async def connect_woocommerce(
    session: AsyncSession,
    *,
    url: str,
    consumer_key: str,
    consumer_secret: str,
    webhook_secret: str,
    name: str | None = None,
) -> Shop:
    """Add a WooCommerce store, or update the keys of one already added."""
    base_url = normalize_store_url(url)
    if not consumer_key.startswith("ck_") or not consumer_secret.startswith("cs_"):
        raise ShopError("WooCommerce keys look like ck_… (consumer key) and cs_… (consumer secret)")
    domain = urlsplit(base_url).netloc
    shop = await repository.get_by_domain(session, "woocommerce", domain)
    if shop is None:
        shop = Shop(platform="woocommerce", domain=domain, name=name or domain)
        session.add(shop)
        await session.flush()
        await flows_service.install_defaults(session, shop)
    shop.base_url = base_url
    shop.uninstalled_at = None
    shop.token_invalid_at = None
    shop.access_token_encrypted = security.encrypt(
        json.dumps({"consumer_key": consumer_key, "consumer_secret": consumer_secret})
    )
    shop.api_secret_encrypted = security.encrypt(webhook_secret)
    forget_signers()
    if name:
        shop.name = name
    return shop


def woocommerce_keys(shop: Shop) -> tuple[str, str] | None:
    """The store's consumer key and secret, when it is connected."""
    if shop.platform != "woocommerce" or not shop.access_token_encrypted:
        return None
    keys = json.loads(security.decrypt(shop.access_token_encrypted))
    return keys["consumer_key"], keys["consumer_secret"]


async def uninstall(session: AsyncSession, shop: Shop) -> None:
    """From now on nothing goes out for this shop: token gone, running series ended."""
    assert shop.id is not None
    shop.uninstalled_at = utcnow()
    shop.access_token_encrypted = shop.refresh_token_encrypted = None
    shop.token_expires_at = shop.refresh_token_expires_at = None
    ended = await flows_service.end_all_enrollments(session, shop.id, "uninstalled")
    log.info("shop %s uninstalled Rebound; %s running series ended", shop.domain, ended)


class SendingRuleError(ValueError):
    """A sending rule that cannot be used; the message says why."""


def set_sending_rules(
    shop: Shop,
    *,
    quiet_hours: str | None = None,
    frequency_cap: str | None = None,
    timezone: str | None = None,
) -> None:
    """Quiet hours ("21:00-08:00" or "off"), the cap between two marketing emails to one customer
    from different flows ("16h" or "off") and the shop's time zone. All checked before any is
    kept: a refused edit changes nothing."""
    changes: dict[str, Any] = {}
    try:
        if quiet_hours is not None:
            off = quiet_hours.strip().lower() == "off"
            changes["quiet_hours"] = None if off else quiet_hours.strip()
            if not off:
                parse_quiet_hours(quiet_hours)
        if frequency_cap is not None:
            off = frequency_cap.strip().lower() == "off"
            changes["frequency_cap"] = None if off else flows_service.parse_duration(frequency_cap)
        if timezone is not None:
            changes["timezone"] = check_timezone(timezone.strip())
    except (TimingError, flows_service.FlowSettingError) as exc:
        raise SendingRuleError(str(exc)) from exc
    for key, value in changes.items():
        setattr(shop, key, value)


def set_mail_transport(shop: Shop, url: str) -> str:
    """The shop's own mail transport (MAIL_TRANSPORT's forms, kept encrypted), or "default" for
    the global one. Checked before it is kept; returns what the shop now uses, without secrets."""
    if url.strip().lower() == "default":
        shop.mail_transport_encrypted = None
        return "default"
    try:
        transport_from_url(url, get_settings())
    except ValueError as exc:
        raise SendingRuleError(str(exc)) from exc
    shop.mail_transport_encrypted = security.encrypt(url.strip())
    return url.strip().partition(":")[0].lower()


MAX_ADDRESS_LINES, MAX_ADDRESS_LINE = 6, 120


def set_address(shop: Shop, address: str | list[str] | None) -> list[str]:
    """The postal address every email ends with (anti-spam laws ask for one): lines, or text
    with a line each; None or blank lines clear it. Returns the lines now kept."""
    given = address.splitlines() if isinstance(address, str) else list(address or [])
    lines = [line.strip() for line in given if line.strip()]
    if len(lines) > MAX_ADDRESS_LINES:
        raise SendingRuleError(f"an address has at most {MAX_ADDRESS_LINES} lines")
    for line in lines:
        if len(line) > MAX_ADDRESS_LINE or any(ord(c) < 32 for c in line):
            raise SendingRuleError(f"{line[:40]!r} is not an address line")
    shop.address = lines
    return lines


PROFILE_FIELDS = (
    "sender_name", "sender_address", "reply_to", "logo_url", "accent_color", "phone",
    "contact_email", "chat_url",
)  # fmt: skip
EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def set_profile(
    shop: Shop,
    changes: dict[str, str | None],
    social: dict[str, str | None] | None = None,
    tracking: bool | None = None,
) -> dict[str, Any]:
    """How the shop's emails look and whom they come from. `None` or "off" clears a field.
    Everything is checked before anything is kept; returns the profile now in force."""
    profile = dict(shop.profile or {})
    for key, raw in changes.items():
        if key not in PROFILE_FIELDS:
            raise SendingRuleError(f"no profile field {key!r}; fields: {', '.join(PROFILE_FIELDS)}")
        value = None if raw is None or raw.strip().lower() == "off" else raw.strip()
        if value is not None:
            _check_profile_value(key, value)
            if key == "sender_address" and not may_send_as(shop, value):
                raise SendingRuleError(
                    f"sender_address on another domain than {get_settings().mail_from_domain} "
                    "needs the shop's own email provider (mail_transport), one allowed to send "
                    "for that domain"
                )
        profile[key] = value
    networks = dict(profile.get("social") or {})
    for network, url in (social or {}).items():
        name = network.strip().lower()
        if not name.isalnum() or len(name) > 30:
            raise SendingRuleError(f"{network!r} is not a network name like instagram")
        if url is None or url.strip().lower() == "off":
            networks.pop(name, None)
        else:
            _check_profile_value("social", url.strip())
            networks[name] = url.strip()
    profile["social"] = networks
    shop.profile = {key: value for key, value in profile.items() if value not in (None, {})}
    if tracking is not None:
        shop.tracking = tracking
    return shop.profile


def _check_profile_value(key: str, value: str) -> None:
    if any(char in value for char in "\r\n"):
        raise SendingRuleError(f"{key} must be one line")
    if key in ("reply_to", "contact_email", "sender_address") and not EMAIL.fullmatch(value):
        raise SendingRuleError(f"{key} must be an email address, not {value!r}")
    if key in ("logo_url", "chat_url", "social") and not value.startswith("https://"):
        raise SendingRuleError(f"{key} must be an https:// link, not {value!r}")
    if key == "accent_color" and not COLOR.fullmatch(value):
        raise SendingRuleError(f"accent_color must look like #1a2b3c, not {value!r}")
    if len(value) > 500:
        raise SendingRuleError(f"{key} is too long")


def set_attribution_days(shop: Shop, days: int) -> None:
    """How long after a click an order still counts for the email: 1 to 30 days."""
    if isinstance(days, bool) or not 1 <= days <= 30:
        raise SendingRuleError("attribution_days must be from 1 to 30 days")
    shop.attribution_days = days
