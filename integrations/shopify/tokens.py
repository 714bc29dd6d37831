"""Shopify offline access tokens: getting them at install, and keeping them usable.

Public apps must use expiring offline tokens: from January 1, 2027 Shopify refuses non-expiring
ones from public apps (https://shopify.dev/docs/apps/build/authentication-authorization/
access-tokens/offline-access-tokens). An expiring token lasts an hour; its refresh token lasts
90 days, and each refresh returns a new pair. Both install paths ask for expiring tokens;
`admin_token` renews a token before it runs out, and moves a shop installed with a
non-expiring token onto an expiring pair (token exchange, no merchant needed). A store
connected with its own app's client credentials (`rebound shops add shopify --client-id`, an
app made in the Dev Dashboard) gets a new 24-hour token the same way when one runs out. An
admin-made custom app's token (`--access-token`) does not expire and is used as it is.
"""

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import shopify_app
from sqlalchemy.orm.attributes import set_committed_value

from app import security
from app.db import sessionmaker, utcnow
from app.settings import get_settings
from app.shops import repository as shops
from app.shops.models import Shop
from integrations.shopify.admin import (
    ShopifyApiError,
    ShopifyTokenRevoked,
    _app_config,
    _shop_name,
    shopify_http_client,
)

log = logging.getLogger("rebound.shopify")
T = TypeVar("T")

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"  # noqa: S105
# Renew this long before the hour is up: a step's calls then never meet an expired token.
RENEW_AHEAD = timedelta(minutes=5)
TOKEN_COLUMNS = (
    "access_token_encrypted",
    "token_expires_at",
    "refresh_token_encrypted",
    "refresh_token_expires_at",
    "token_invalid_at",
)


@dataclass(frozen=True)
class Grant:
    """What the token endpoint answered: the access token and, for an expiring one, when it
    expires and the refresh token that renews it."""

    access_token: str
    expires_at: datetime | None = None
    refresh_token: str | None = None
    refresh_expires_at: datetime | None = None

    @classmethod
    def from_answer(cls, body: dict[str, Any], now: datetime) -> "Grant":
        def after(seconds: Any) -> datetime | None:
            return now + timedelta(seconds=int(seconds)) if seconds is not None else None

        return cls(
            access_token=str(body["access_token"]),
            expires_at=after(body.get("expires_in")),
            refresh_token=body.get("refresh_token") or None,
            refresh_expires_at=after(body.get("refresh_token_expires_in")),
        )


# --- the token endpoint --------------------------------------------------------------------


async def _token_endpoint(
    shop_domain: str,
    params: dict[str, Any],
    what: str,
    credentials: dict[str, str] | None = None,
) -> Grant:
    """POST /admin/oauth/access_token with the app's credentials (this app's, or `credentials`
    of the store's own); ShopifyApiError (with Shopify's OAuth error code, e.g. invalid_grant)
    when it refuses."""
    _shop_name(shop_domain)
    if credentials is None:
        config = _app_config()
        credentials = {"client_id": config["client_id"], "client_secret": config["client_secret"]}
    now = utcnow()
    try:
        async with shopify_http_client() as client:
            response = await client.post(
                f"https://{shop_domain}/admin/oauth/access_token",
                json=credentials | params,
                headers={"Accept": "application/json"},
            )
    except httpx.HTTPError as exc:  # Shopify unreachable: as the Admin API's own failures
        raise ShopifyApiError(f"{shop_domain}: {what} failed: {type(exc).__name__}") from exc
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    token = body.get("access_token")
    if response.status_code != 200 or not isinstance(token, str) or not token:
        error = body.get("error") or response.status_code
        raise ShopifyApiError(
            f"{shop_domain}: {what} failed: {error} {body.get('error_description', '')}".rstrip(),
            status=response.status_code,
        )
    return Grant.from_answer(body, now)


async def exchange_code(shop_domain: str, code: str) -> Grant:
    """Authorization-code grant: the `code` Shopify sent to the redirect URI → an expiring
    offline token and its refresh token.
    https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant
    """
    return await _token_endpoint(shop_domain, {"code": code, "expiring": 1}, "code exchange")


async def exchange_id_token(
    shop_domain: str, id_token_details: shopify_app.IdTokenDetails | dict[str, Any]
) -> Grant:
    """Token exchange: a verified session (ID) token, e.g. from `shopify_app.verify_app_home_req`,
    → an expiring offline access token for `shop_domain` and its refresh token.
    https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/token-exchange
    """
    _shop_name(shop_domain)
    claims = (
        id_token_details.get("claims", {})
        if isinstance(id_token_details, dict)
        else id_token_details.claims
    )
    dest = str(claims.get("dest", "")).removeprefix("https://")
    if dest != shop_domain:
        # shopify_app posts to the token's `dest`; a token for another store is a caller bug.
        raise ValueError(f"ID token is for {dest!r}, not {shop_domain!r}")
    async with shopify_http_client() as client:
        result = await shopify_app.token_exchange_async(
            "offline", _app_config(), id_token=id_token_details, expiring=True, http_client=client
        )
    if not result.ok or result.access_token is None:
        raise ShopifyApiError(f"{shop_domain}: token exchange failed: {result.log.code}")
    exchanged = result.access_token

    def moment(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None

    return Grant(
        access_token=exchanged.token,
        expires_at=moment(exchanged.expires),
        refresh_token=exchanged.refresh_token or None,
        refresh_expires_at=moment(exchanged.refresh_token_expires),
    )


async def refresh(shop_domain: str, refresh_token: str) -> Grant:
    """A new pair for the refresh token (which Shopify then retires)."""
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await _token_endpoint(shop_domain, params, "token refresh")


async def migrate(shop_domain: str, non_expiring_token: str) -> Grant:
    """An expiring pair in place of a non-expiring offline token, which Shopify then refuses.
    https://shopify.dev/docs/apps/build/authentication-authorization/migrate-to-expiring-offline-access-tokens
    """
    params = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": non_expiring_token,
        "subject_token_type": OFFLINE_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
        "expiring": 1,
    }
    return await _token_endpoint(shop_domain, params, "token migration")


async def client_credentials(shop_domain: str, client_id: str, client_secret: str) -> Grant:
    """Client credentials grant: the store's own app (Dev Dashboard, installed on a store of the
    same organization) → a token for 24 hours, without a refresh token: asked again when it
    runs out. https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/client-credentials-grant
    """
    credentials = {"client_id": client_id, "client_secret": client_secret}
    params = {"grant_type": "client_credentials"}
    return await _token_endpoint(shop_domain, params, "client credentials grant", credentials)


# --- keeping a shop's token usable ---------------------------------------------------------


def keep_grant(shop: Shop, grant: Grant) -> None:
    """Store a grant on the shop row, encrypted; a new grant also clears a refused mark."""
    shop.access_token_encrypted = security.encrypt(grant.access_token)
    shop.token_expires_at = grant.expires_at
    shop.refresh_token_encrypted = (
        security.encrypt(grant.refresh_token) if grant.refresh_token else None
    )
    shop.refresh_token_expires_at = grant.refresh_expires_at
    shop.token_invalid_at = None


def is_public_install(shop: Shop) -> bool:
    """Installed through this app's own credentials (either install path), not a custom app
    added with its own API secret: its token is the app's to renew or migrate."""
    settings = get_settings()
    return (
        shop.platform == "shopify"
        and shop.api_secret_encrypted is None
        and bool(settings.shopify_api_key)
        and settings.shopify_api_secret is not None
    )


# Shops whose migration Shopify refused in this process: asked again by the daily renewal,
# not on every call (the token keeps working until Shopify's deadline).
_unmigratable: set[int] = set()
# Per event loop: a lock waited on belongs to its loop (tests run many loops, one process).
_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Lock]]" = (
    weakref.WeakKeyDictionary()
)


def _renewing(shop_id: int) -> asyncio.Lock:
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(shop_id, asyncio.Lock())


def _renewable(shop: Shop) -> bool:
    """An expiring token Rebound can replace: by its refresh token, or by the store's own app's
    client credentials."""
    return bool(shop.refresh_token_encrypted or (shop.client_id and shop.api_secret_encrypted))


def _needs_new(shop: Shop, force: bool) -> bool:
    if _renewable(shop):
        expires = shop.token_expires_at
        return force or expires is None or expires - utcnow() < RENEW_AHEAD
    return (
        shop.token_expires_at is None
        and is_public_install(shop)
        and (shop.id not in _unmigratable or force)
    )


async def admin_token(shop: Shop, *, force: bool = False) -> str:
    """The shop's Admin API token, renewed first when it expires within RENEW_AHEAD or Shopify
    has just refused it (`force`), and migrated when it is a public install's non-expiring
    one. The new pair is committed in a session of its own before it is used: the caller's
    transaction may roll back, and Shopify retires the old refresh token once the new pair is
    used. ShopifyTokenRevoked when the store has to be connected again."""
    if not shop.access_token_encrypted or shop.id is None:
        raise ShopifyTokenRevoked(f"{shop.domain}: not connected", status=401)
    if shop.token_invalid_at is not None and shop.refresh_token_encrypted:
        # Its refresh was refused: asking again each step would only be refused again, until
        # the merchant opens the app (which stores a new pair and clears the mark).
        raise ShopifyTokenRevoked(f"{shop.domain}: connect the store again", status=401)
    if not _needs_new(shop, force):
        return security.decrypt(shop.access_token_encrypted)
    # One renewal at a time per shop in this process; another process's is seen in the row.
    async with _renewing(shop.id), sessionmaker()() as session:
        stored = await shops.get(session, shop.id)
        if stored is None or not stored.access_token_encrypted:
            raise ShopifyTokenRevoked(f"{shop.domain}: not connected", status=401)
        renewed_meanwhile = stored.access_token_encrypted != shop.access_token_encrypted
        if renewed_meanwhile or not _needs_new(stored, force):
            _adopt(shop, stored)
            return security.decrypt(stored.access_token_encrypted)
        grant = await _renewal(stored)
        if grant is None:
            return security.decrypt(stored.access_token_encrypted)
        keep_grant(stored, grant)
        await session.commit()
        _adopt(shop, stored)
    return grant.access_token


async def _renewal(shop: Shop) -> Grant | None:
    """A refresh or a client credentials grant (expiring token), or a migration (non-expiring);
    None when Shopify refused the migration, whose token is then used as it is."""
    assert shop.id is not None and shop.access_token_encrypted
    if _renewable(shop):
        try:
            if shop.refresh_token_encrypted:
                return await refresh(shop.domain, security.decrypt(shop.refresh_token_encrypted))
            assert shop.client_id and shop.api_secret_encrypted
            secret = security.decrypt(shop.api_secret_encrypted)
            return await client_credentials(shop.domain, shop.client_id, secret)
        except ShopifyApiError as exc:
            if exc.status in (400, 401):  # invalid_grant: expired or revoked; invalid_client
                raise ShopifyTokenRevoked(str(exc), status=401) from exc
            raise
    try:
        grant = await migrate(shop.domain, security.decrypt(shop.access_token_encrypted))
    except ShopifyApiError as exc:
        if exc.status is None or exc.status >= 500:
            raise
        _unmigratable.add(shop.id)
        log.warning("could not move %s to an expiring token: %s", shop.domain, exc)
        return None
    log.info("%s moved to an expiring offline token", shop.domain)
    return grant


def _adopt(shop: Shop, stored: Shop) -> None:
    """The caller's copy of the row takes the stored tokens, without becoming a change of its
    session's (which would write them again, or stale ones, with its next flush)."""
    for column in TOKEN_COLUMNS:
        set_committed_value(shop, column, getattr(stored, column))


async def with_admin_token(shop: Shop, call: Callable[[str], Awaitable[T]]) -> T:
    """`call(token)`, asked once more with a renewed token if Shopify refuses an expiring one
    (it expired early, or another process renewed it)."""
    token = await admin_token(shop)  # a refused renewal raises here, and is not asked again
    try:
        return await call(token)
    except ShopifyTokenRevoked:
        if not _renewable(shop):
            raise
        return await call(await admin_token(shop, force=True))


# --- the daily renewal ---------------------------------------------------------------------

# A refresh restarts the 90 days; a shop that made no Admin API call for that long would
# otherwise have to be installed again.
REFRESH_TOKEN_KEPT = timedelta(days=30)


def _due_for_renewal(shop: Shop, now: datetime) -> bool:
    if (
        shop.platform != "shopify"
        or shop.uninstalled_at is not None
        or shop.token_invalid_at is not None
        or not shop.access_token_encrypted
    ):
        return False
    if shop.refresh_token_encrypted:
        expires = shop.refresh_token_expires_at
        return expires is None or expires - now < REFRESH_TOKEN_KEPT
    return shop.token_expires_at is None and is_public_install(shop)


async def renew_tokens(ctx: dict[str, object]) -> str:
    """Daily: renew refresh tokens with less than REFRESH_TOKEN_KEPT left, and move public
    installs still holding a non-expiring token onto an expiring pair before Shopify stops
    accepting them."""
    now = utcnow()
    async with sessionmaker()() as session:
        due = [shop for shop in await shops.list_all(session) if _due_for_renewal(shop, now)]
    renewed = refused = 0
    for shop in due:
        try:
            await admin_token(shop, force=True)
        except ShopifyApiError as exc:
            refused += 1
            log.warning("token of %s not renewed: %s", shop.domain, exc)
            if isinstance(exc, ShopifyTokenRevoked):
                await _mark_refused(shop)
            continue
        renewed += shop.refresh_token_encrypted is not None
    return f"{renewed} Shopify token(s) renewed, {refused} refused, {len(due)} due"


async def _mark_refused(shop: Shop) -> None:
    """Shopify refused the refresh token: the merchant must open (or reinstall) the app."""
    assert shop.id is not None
    async with sessionmaker()() as session:
        stored = await shops.get(session, shop.id)
        if stored is not None and stored.token_invalid_at is None:
            stored.token_invalid_at = utcnow()
            await session.commit()
