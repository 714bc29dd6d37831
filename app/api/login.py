"""Signing in to the admin outside Shopify: a one-time link sets the session cookie; the admin's
pages ask `GET /api/session` who they are and for the CSRF token, and sign out with
`POST /api/session/sign-out`."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from app.api.auth import (
    SESSION_COOKIE,
    CallerDep,
    clear_session_cookie,
    end_session,
    read_login_token,
    set_session_cookie,
)
from app.api.errors import RESPONSES
from app.db import SessionDep
from app.mail.render import TEMPLATES
from app.redis import RedisDep
from app.shops import repository as shops

router = APIRouter()
pages = Jinja2Templates(directory=TEMPLATES)


@router.get("/admin/login", tags=["admin"], response_class=HTMLResponse, status_code=303)
async def admin_login(
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    token: Annotated[str, Query(max_length=1000)] = "",
) -> Response:
    """Spend a sign-in link from `rebound admin-link`: once, within 15 minutes. Sets the
    `rebound_admin` cookie (8 hours) and goes on to the admin."""
    login = read_login_token(token)
    shop = await shops.get(session, login.shop_id) if login else None
    if login is None or shop is None or shop.uninstalled_at is not None:
        return signed_out_page("This sign-in link has expired or is not valid.")
    # SET NX: of two requests with the same link, exactly one signs in.
    first = await redis.set(f"admin-login:{login.nonce}", "1", nx=True, ex=login.seconds_left)
    if not first:
        return signed_out_page("This sign-in link was used already.")
    response = RedirectResponse("/admin", status_code=303)
    set_session_cookie(response, shop)
    return response


def signed_out_page(reason: str, status_code: int = 401) -> HTMLResponse:
    """401, with what to do to get in."""
    template = pages.get_template("pages/admin_signed_out.html")
    return HTMLResponse(template.render(reason=reason), status_code=status_code)


@router.get("/admin/signed-out", tags=["admin"], response_class=HTMLResponse)
async def signed_out() -> HTMLResponse:
    """Where signing out lands: said plainly, with how to sign in again."""
    return signed_out_page("You have signed out of Rebound.", status_code=200)


class SessionInfo(BaseModel):
    shop: str  # the shop's domain
    platform: str
    csrf: str | None  # send as X-Rebound-CSRF on changes (cookie sessions only)


@router.get("/api/session", tags=["api"])
async def who_am_i(caller: CallerDep) -> SessionInfo:
    """The shop this request is signed in as, and the CSRF token a cookie session sends with
    every change (null for bearer tokens, which need none)."""
    return SessionInfo(shop=caller.shop.domain, platform=caller.shop.platform, csrf=caller.csrf)


@router.post("/api/session/sign-out", tags=["api"], status_code=204, responses=RESPONSES)
async def sign_out(request: Request, caller: CallerDep, redis: RedisDep) -> Response:
    """End the admin's cookie session on the server (a copy of the cookie stops working too)
    and drop the cookie. Bearer tokens have no session here: Rebound's expire by themselves,
    Shopify's sessions are the Shopify admin's."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if caller.via != "cookie" or cookie is None:
        raise HTTPException(400, "only an admin session signs out; bearer tokens expire")
    await end_session(redis, cookie)
    response = Response(status_code=204)
    clear_session_cookie(response)
    return response
