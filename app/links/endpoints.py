"""Where email links land: the restore redirect, tracked clicks and opens, one-click
unsubscribe (RFC 8058), NPS scores, preference answers and "keep me on the list"."""

import base64
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

import integrations
from app.commerce import repository as commerce
from app.commerce.models import Checkout
from app.db import SessionDep
from app.links.pages import InvalidLink, page
from app.links.urls import (
    NPS,
    PREFERENCE,
    STAY,
    Recipient,
    SendRef,
    read_restore,
    read_send_ref,
    read_unsubscribe,
)
from app.mail import compose, i18n, tracking
from app.mail.compose import step_label
from app.shops import repository as shops
from app.shops.models import Shop
from flows import engine
from flows import repository as flows
from flows.models import Send

router = APIRouter(tags=["links"])


@dataclass(frozen=True)
class Landing:
    """What a signed link to one send leads to, and the language its page speaks."""

    send: Send
    shop: Shop
    lang: str


async def _landing(session: SessionDep, ref: SendRef | None) -> Landing:
    send = await flows.get_send(session, ref.shop_id, ref.send_id) if ref else None
    shop = await shops.get(session, send.shop_id) if send else None
    if ref is None or send is None or shop is None:
        raise InvalidLink(ref.lang if ref else None)
    # Links older than the signed language speak the shop's (then English).
    return Landing(send, shop, i18n.language(ref.lang, shop.locale))


@router.get("/r/{token}", status_code=303)
async def restore_cart(token: str, session: SessionDep) -> RedirectResponse:
    """Record the click, then send the shopper to their own checkout (or, from an email that
    is not about a cart, to the store). Logs no one in."""
    landing = await _landing(session, read_restore(token))
    send, shop = landing.send, landing.shop
    enrollment = await flows.get_enrollment(session, send.enrollment_id)
    if enrollment is None:
        raise InvalidLink(landing.lang)
    checkout = (
        await commerce.get_checkout(session, shop.id or 0, enrollment.checkout_id)
        if enrollment.checkout_id is not None
        else None
    )
    target = (
        _restore_target(shop, checkout) if checkout else await _order_target(session, shop, send)
    )
    if target is None:
        raise InvalidLink(landing.lang)
    if send.discount_code:
        target = await integrations.apply_discount(
            shop, checkout.token if checkout else "", target, send.discount_code
        )
    if shop.tracking:
        step = step_label(enrollment.steps[send.step], send.step) if send.step >= 0 else "alert"
        campaign = tracking.Campaign(shop.id or 0, send.id or 0, enrollment.flow, step)
        target = tracking.with_utm(target, campaign)
    flows.add_click(session, send)
    await session.commit()
    return RedirectResponse(target, status_code=303)


async def _order_target(session: SessionDep, shop: Shop, send: Send) -> str:
    """From a replenishment reminder, a cart refilled with what runs out; else the store."""
    enrollment = await flows.get_enrollment(session, send.enrollment_id)
    order = (
        await commerce.get_order_by_id(session, shop.id or 0, enrollment.order_id)
        if enrollment and enrollment.order_id
        else None
    )
    if enrollment is None or order is None:
        return compose.storefront_url(shop)
    if enrollment.steps[send.step].get("template") != "replenishment":
        return compose.storefront_url(shop)
    wanted = (enrollment.context.get("settings") or {}).get("replenish_days") or {}
    lines = [
        (str(item["variant_id"]), int(item.get("quantity") or 1))
        for item in order.line_items
        if item.get("variant_id") and str(item.get("product_id")) in wanted
    ]
    return integrations.cart_permalink(shop, lines) or compose.storefront_url(shop)


def _restore_target(shop: Shop, checkout: Checkout) -> str | None:
    """The platform's recovery URL for this checkout, else a link that refills the cart."""
    lines = [
        (str(item["variant_id"]), int(item.get("quantity") or 0))
        for item in checkout.line_items
        if item.get("variant_id")
    ]
    return checkout.restore_url or integrations.cart_permalink(shop, lines)


@router.get("/c/{token}", status_code=303)
async def tracked_click(token: str, session: SessionDep) -> RedirectResponse:
    """A tracked link: record the click, then go where Rebound signed it to go, never elsewhere."""
    found = tracking.read_click(token)
    send = await flows.get_send(session, found[0], found[1]) if found else None
    if found is None or send is None:
        raise InvalidLink()
    flows.add_click(session, send, url=found[2])
    await session.commit()
    return RedirectResponse(found[2], status_code=303)


# The smallest transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@router.get("/o/{token}")
async def opened(token: str, session: SessionDep) -> Response:
    """The open pixel: recorded for the merchant's figures, answered with a 1×1 GIF always, so
    a mail program never shows a broken image."""
    found = tracking.read_open(token)
    send = await flows.get_send(session, found[0], found[1]) if found else None
    if send is not None:
        flows.add_open(session, send)
        await session.commit()
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@router.get("/nps/{token}/{score}", response_class=HTMLResponse)
async def nps_answer(token: str, score: int, session: SessionDep) -> HTMLResponse:
    """A score link from an NPS survey: the click is the answer (a later click replaces it)."""
    landing = await _landing(session, read_send_ref(NPS, token))
    if not 0 <= score <= 10:
        raise InvalidLink(landing.lang)
    await flows.record_nps(session, landing.send, score)
    flows.add_click(session, landing.send)
    await session.commit()
    return page("nps_thanks", landing.lang, {"shop_name": landing.shop.name, "score": score})


@router.get("/pref/{token}/{option}", response_class=HTMLResponse)
async def preference_answer(token: str, option: int, session: SessionDep) -> HTMLResponse:
    """An answer to a preference question: stored on the customer, usable in conditions."""
    landing = await _landing(session, read_send_ref(PREFERENCE, token))
    send = landing.send
    enrollment = await flows.get_enrollment(session, send.enrollment_id)
    question = enrollment.steps[send.step].get("question") if enrollment else None
    if enrollment is None or not question or not 0 <= option < len(question["options"]):
        raise InvalidLink(landing.lang)
    # The page shows the answer as the email offered it: in the email's language.
    answer = question["options"][option]
    await flows.save_preference(session, send.shop_id, enrollment.email, question["key"], answer)
    flows.add_click(session, send)
    await session.commit()
    shown = i18n.translations(landing.lang).gettext(answer)
    return page("preference_saved", landing.lang, {"shop_name": landing.shop.name, "answer": shown})


@router.get("/stay/{token}", response_class=HTMLResponse)
async def stay_subscribed(token: str, session: SessionDep) -> HTMLResponse:
    """The win-back goodbye's "keep me on the list": the click itself is the answer."""
    landing = await _landing(session, read_send_ref(STAY, token))
    flows.add_click(session, landing.send)
    await session.commit()
    return page(
        "stayed", landing.lang, {"shop_name": landing.shop.name, "email": landing.send.email}
    )


async def _recipient(session: SessionDep, token: str) -> tuple[Shop, Recipient, str]:
    """The shop, the address and the page's language of an unsubscribe link."""
    recipient = read_unsubscribe(token)
    shop = await shops.get(session, recipient.shop_id) if recipient else None
    if recipient is None or shop is None:
        raise InvalidLink(recipient.lang if recipient else None)
    return shop, recipient, i18n.language(recipient.lang, shop.locale)


@router.get("/u/{token}", response_class=HTMLResponse)
async def confirm_unsubscribe(token: str, session: SessionDep) -> HTMLResponse:
    # GET only asks: link scanners in mail filters follow links and must not unsubscribe anyone.
    shop, recipient, lang = await _recipient(session, token)
    return page("unsubscribe", lang, {"shop_name": shop.name, "email": recipient.email})


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, session: SessionDep) -> HTMLResponse:
    """The confirmation form and mail clients' one-click POST both land here."""
    shop, recipient, lang = await _recipient(session, token)
    assert shop.id is not None
    await engine.unsubscribe(session, shop.id, recipient.email)
    await session.commit()
    return page("unsubscribed", lang, {"shop_name": shop.name, "email": recipient.email})
