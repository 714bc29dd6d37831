"""Who is calling: one shop, from a Shopify session (id) token, a Rebound API token, or the
admin's session cookie.

- Inside the Shopify admin, App Bridge sends the session token as `Authorization: Bearer …`;
  shopifyapp verifies it. The embedded document load itself carries it as `id_token` + `shop`.
- Elsewhere (WooCommerce stores, scripts) `rebound api-token --shop S` issues a signed, expiring
  token for one shop.
- Merchants outside Shopify sign in to the admin with a one-time link (`rebound admin-link`,
  or the WooCommerce connect flow's done page). It sets the `rebound_admin` cookie. A request
  that uses the cookie to change anything must also send `X-Rebound-CSRF`, a token derived from
  the cookie (`csrf_token`): another site can make the browser send the cookie, never the header.
  Signing out (`end_session`) revokes the cookie's session id in Redis until the cookie would
  have expired, so a copy of the cookie stops working too.
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Literal

import shopify_app
from fastapi import Depends, HTTPException, Request, Response

from app import security
from app.db import SessionDep
from app.redis import RedisDep
from app.settings import get_settings
from app.shops import repository as shops
from app.shops.models import Shop

API_TOKEN = "api"  # noqa: S105  (the purpose a token is signed for, not a secret)
PREFIX = "rb_"

LOGIN_TOKEN = "admin-login"  # noqa: S105  (a purpose, not a secret)
LOGIN_TTL = 15 * 60  # seconds a sign-in link works, once
SESSION = "admin-session"
SESSION_COOKIE = "rebound_admin"
SESSION_TTL = 8 * 3600
CSRF_HEADER = "X-Rebound-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Shopify's answer to a bad session token on a fetch: App Bridge retries with a fresh token.
RETRY_INVALID_SESSION = {"X-Shopify-Retry-Invalid-Session-Request": "1"}


def issue_token(shop: Shop, days: int = 30) -> str:
    assert shop.id is not None
    expires = int(time.time()) + days * 86400
    return PREFIX + security.sign(API_TOKEN, {"shop": shop.id, "exp": expires})


def _signed_shop_id(purpose: str, token: str) -> int | None:
    """The shop a token signed for `purpose` names, while it has not expired."""
    payload = security.unsign(purpose, token)
    if not payload or not isinstance(payload.get("shop"), int):
        return None
    if not isinstance(payload.get("exp"), int) or payload["exp"] < time.time():
        return None
    return int(payload["shop"])


# --- the admin's sign-in link and session cookie ---------------------------------------------


def admin_login_link(shop: Shop) -> str:
    """APP_URL/admin/login?token=…: signs the merchant in to the admin once, within 15 minutes."""
    assert shop.id is not None
    payload = {
        "shop": shop.id,
        "exp": int(time.time()) + LOGIN_TTL,
        "nonce": secrets.token_urlsafe(16),
    }
    return f"{get_settings().public_url}/admin/login?token={security.sign(LOGIN_TOKEN, payload)}"


@dataclass(frozen=True)
class LoginToken:
    shop_id: int
    nonce: str
    seconds_left: int


def read_login_token(token: str) -> LoginToken | None:
    """A sign-in token this server made and that has not expired; whether it was used already
    is Redis's to say (`admin-login:<nonce>`)."""
    shop_id = _signed_shop_id(LOGIN_TOKEN, token)
    payload = security.unsign(LOGIN_TOKEN, token) or {}
    if shop_id is None or not isinstance(payload.get("nonce"), str):
        return None
    return LoginToken(shop_id, payload["nonce"], max(1, payload["exp"] - int(time.time())))


def session_cookie(shop: Shop) -> str:
    """The value of the admin's session cookie: signed, naming the shop, expiring in 8 hours.
    Its random id makes each sign-in's CSRF token its own."""
    assert shop.id is not None
    payload = {"shop": shop.id, "exp": int(time.time()) + SESSION_TTL, "sid": secrets.token_hex(16)}
    return security.sign(SESSION, payload)


@dataclass(frozen=True)
class AdminSession:
    shop_id: int
    sid: str
    seconds_left: int


def read_session_cookie(cookie: str) -> AdminSession | None:
    """A session cookie this server signed and that has not expired; whether it was signed out
    is Redis's to say (`admin-session-ended:<sid>`)."""
    shop_id = _signed_shop_id(SESSION, cookie)
    payload = security.unsign(SESSION, cookie) or {}
    if shop_id is None or not isinstance(payload.get("sid"), str):
        return None
    return AdminSession(shop_id, payload["sid"], max(1, payload["exp"] - int(time.time())))


def _ended_key(sid: str) -> str:
    return f"admin-session-ended:{sid}"


async def end_session(redis: RedisDep, cookie: str) -> None:
    """Sign the cookie's session out on the server: its id is refused until it would have
    expired anyway, whoever holds a copy."""
    admin_session = read_session_cookie(cookie)
    if admin_session is not None:
        await redis.set(_ended_key(admin_session.sid), "1", ex=admin_session.seconds_left)


def set_session_cookie(response: Response, shop: Shop) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(shop),
        max_age=SESSION_TTL,
        httponly=True,
        secure=get_settings().public_url.startswith("https://"),
        samesite="lax",
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        httponly=True,
        secure=get_settings().public_url.startswith("https://"),
        samesite="lax",
        path="/",
    )


def csrf_token(session_cookie: str) -> str:
    """The token a cookie session sends back as `X-Rebound-CSRF` when it changes anything:
    an HMAC of the cookie, which pages can show and other sites cannot read or make."""
    digest = hashlib.sha256(session_cookie.encode()).hexdigest()
    return security.sign("admin-csrf", {"session": digest}).rpartition(".")[2]


# --- the dependencies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The authenticated shop and how it proved itself; `csrf` only for cookie sessions."""

    shop: Shop
    via: Literal["token", "cookie"]
    csrf: str | None = None


def _shopify_domain(request: Request) -> str | None:
    """The shop a Shopify session token (in the Authorization header, or the `id_token` query of
    an embedded document load) names, when it verifies with the app secret."""
    from integrations.shopify.install import PATCH_ID_TOKEN_PATH, app_config_or_none

    config = app_config_or_none()
    if config is None:
        return None
    result = shopify_app.verify_app_home_req(_request_input(request), config, PATCH_ID_TOKEN_PATH)
    # shopifyapp names the shop without its .myshopify.com
    return f"{result.shop}.myshopify.com" if result.ok and result.shop else None


def _request_input(request: Request) -> shopify_app.RequestInput:
    return shopify_app.RequestInput(
        method=request.method, headers=dict(request.headers), url=str(request.url), body=""
    )


def _installed(shop: Shop | None) -> Shop | None:
    return shop if shop is not None and shop.uninstalled_at is None else None


async def _api_token_shop(session: SessionDep, token: str) -> Shop:
    """The installed shop a Rebound API token (`rb_…`) names, or 401."""
    shop_id = _signed_shop_id(API_TOKEN, token.removeprefix(PREFIX))
    shop = _installed(await shops.get(session, shop_id) if shop_id else None)
    if shop is None:
        raise HTTPException(401, "this token is not valid for any installed shop")
    return shop


async def _session_token_shop(request: Request, session: SessionDep) -> Shop:
    """The installed shop a Shopify session token names, or 401. A token that is missing,
    expired or does not verify gets Shopify's retry header: App Bridge then fetches a fresh
    token and sends the request once more (session tokens live a minute)."""
    domain = _shopify_domain(request)
    if domain is None:
        raise HTTPException(
            401, "the Shopify session token is missing, expired or not valid", RETRY_INVALID_SESSION
        )
    shop = _installed(await shops.get_by_domain(session, "shopify", domain))
    if shop is None:  # a fresh token would name the same shop: no retry
        raise HTTPException(401, "Rebound is not installed on this store")
    return shop


async def _cookie_shop(session: SessionDep, redis: RedisDep, cookie: str) -> Shop | None:
    admin_session = read_session_cookie(cookie)
    if admin_session is None or await redis.exists(_ended_key(admin_session.sid)):
        return None
    return await shops.get(session, admin_session.shop_id)


def _check_csrf(request: Request, cookie: str) -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), csrf_token(cookie).encode()):
        raise HTTPException(403, f"send the {CSRF_HEADER} header from GET /api/session")


async def current_caller(request: Request, session: SessionDep, redis: RedisDep) -> Caller:
    header = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise HTTPException(401, "send Authorization: Bearer <token>")
        if token.strip().startswith(PREFIX):
            return Caller(await _api_token_shop(session, token.strip()), "token")
        # Anything else, an empty token too, is App Bridge's (its token may not have come yet).
        return Caller(await _session_token_shop(request, session), "token")
    if cookie:
        shop = _installed(await _cookie_shop(session, redis, cookie))
        if shop is None:
            raise HTTPException(401, "your admin session has ended: sign in again")
        _check_csrf(request, cookie)
        return Caller(shop, "cookie", csrf_token(cookie))
    raise HTTPException(401, "send Authorization: Bearer <token>, or sign in to the admin")


async def current_shop(caller: Annotated[Caller, Depends(current_caller)]) -> Shop:
    return caller.shop


CallerDep = Annotated[Caller, Depends(current_caller)]
ShopDep = Annotated[Shop, Depends(current_shop)]


# --- HTML pages ------------------------------------------------------------------------------


class PageAuthError(Exception):
    """An admin page cannot be shown to this browser; `response` says what to do instead:
    shopifyapp's bounce to fetch a fresh id token, or a 401 page (app.main handles it)."""

    def __init__(self, response: Response) -> None:
        super().__init__("not signed in")
        self.response = response


async def page_shop(
    request: Request, response: Response, session: SessionDep, redis: RedisDep
) -> Shop:
    """The shop an admin page is for: the session cookie, or Shopify's embedded document load
    (`id_token` + `shop` in the query, verified by shopifyapp). For an embedded load, the headers
    Shopify requires (Content-Security-Policy frame-ancestors, …) are in
    `request.state.page_headers`: a page that returns its own Response must copy them."""
    # An id token names the store the merchant is looking at in Shopify's admin: it wins over a
    # cookie another store's sign-in may have left in the same browser.
    request.state.embedded = False
    if "id_token" in request.query_params:
        return await _embedded_shop(request, response, session)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        shop = _installed(await _cookie_shop(session, redis, cookie))
        if shop is not None:
            _check_csrf(request, cookie)
            request.state.page_headers = {}
            return shop
    if "shop" in request.query_params:
        return await _embedded_shop(request, response, session)
    raise PageAuthError(_sign_in_page())


async def _embedded_shop(request: Request, response: Response, session: SessionDep) -> Shop:
    from integrations.shopify.install import PATCH_ID_TOKEN_PATH, app_config_or_none

    config = app_config_or_none()
    if config is None:
        raise PageAuthError(_sign_in_page())
    result = shopify_app.verify_app_home_req(_request_input(request), config, PATCH_ID_TOKEN_PATH)
    if not result.ok or not result.shop:
        # A missing or expired id token: shopifyapp's answer fetches a fresh one and comes back.
        raise PageAuthError(
            Response(
                content=result.response.body,
                status_code=result.response.status,
                headers=result.response.headers,
            )
        )
    domain = f"{result.shop}.myshopify.com"
    shop = _installed(await shops.get_by_domain(session, "shopify", domain))
    if shop is None or shop.access_token_encrypted is None:
        raise PageAuthError(_sign_in_page("Rebound is not installed on this store yet."))
    headers = dict(result.response.headers)
    request.state.embedded = True  # verified: the page may load App Bridge and be framed
    request.state.page_headers = headers
    response.headers.update(headers)
    return shop


def _sign_in_page(reason: str = "You are not signed in to Rebound.") -> Response:
    from app.api.login import signed_out_page

    return signed_out_page(reason)


PageShop = Annotated[Shop, Depends(page_shop)]
