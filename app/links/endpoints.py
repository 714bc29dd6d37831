"""Where email links land: the restore redirect and one-click unsubscribe (RFC 8058)."""

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

import integrations
from app.commerce import repository as commerce
from app.commerce.models import Checkout
from app.db import SessionDep
from app.links.urls import read_restore, read_unsubscribe
from app.mail.compose import TEMPLATES
from app.shops import repository as shops
from app.shops.models import Shop
from flows import engine
from flows import repository as flows

router = APIRouter(tags=["links"])
pages = Jinja2Templates(directory=TEMPLATES)


@router.get("/r/{token}", status_code=303)
async def restore_cart(token: str, session: SessionDep) -> RedirectResponse:
    """Record the click, then send the shopper to their own checkout. Logs no one in."""
    ref = read_restore(token)
    send = await flows.get_send(session, ref.shop_id, ref.send_id) if ref else None
    enrollment = await flows.get_enrollment(session, send.enrollment_id) if send else None
    checkout = (
        await commerce.get_checkout(session, enrollment.shop_id, enrollment.checkout_id)
        if enrollment
        else None
    )
    shop = await shops.get(session, checkout.shop_id) if checkout else None
    target = _restore_target(shop, checkout) if shop and checkout else None
    if send is None or target is None or shop is None:
        raise HTTPException(404, "this link is not valid")
    if send.discount_code:
        target = integrations.apply_discount(shop, target, send.discount_code)
    flows.add_click(session, send)
    await session.commit()
    return RedirectResponse(target, status_code=303)


def _restore_target(shop: Shop, checkout: Checkout) -> str | None:
    """The platform's recovery URL for this checkout, else a link that refills the cart."""
    lines = [
        (str(item["variant_id"]), int(item.get("quantity") or 0))
        for item in checkout.line_items
        if item.get("variant_id")
    ]
    return checkout.restore_url or integrations.cart_permalink(shop, lines)


async def _recipient(session: SessionDep, token: str) -> tuple[Shop, str]:
    recipient = read_unsubscribe(token)
    shop = await shops.get(session, recipient.shop_id) if recipient else None
    if recipient is None or shop is None:
        raise HTTPException(404, "this link is not valid")
    return shop, recipient.email


@router.get("/u/{token}", response_class=HTMLResponse)
async def confirm_unsubscribe(token: str, request: Request, session: SessionDep) -> HTMLResponse:
    # GET only asks: link scanners in mail filters follow links and must not unsubscribe anyone.
    shop, email = await _recipient(session, token)
    return pages.TemplateResponse(
        request, "pages/unsubscribe.html", {"shop_name": shop.name, "email": email}
    )


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, session: SessionDep) -> HTMLResponse:
    """The confirmation form and mail clients' one-click POST both land here."""
    shop, email = await _recipient(session, token)
    assert shop.id is not None
    await engine.unsubscribe(session, shop.id, email)
    await session.commit()
    return pages.TemplateResponse(
        request, "pages/unsubscribed.html", {"shop_name": shop.name, "email": email}
    )
