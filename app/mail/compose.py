"""What each flow's emails say: the context of every template, in the customer's language.
How a message is then made (branding, styles, tracking, headers) is app/mail/render.py."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from email.message import EmailMessage
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from app.commerce.catalog import VariantDetails
from app.commerce.models import Checkout, Order, Shipment
from app.commerce.offers import DiscountCode
from app.links.urls import nps_url, preference_url, restore_url, stay_url, unsubscribe_url
from app.mail import i18n, render
from app.mail.i18n import gettext_ as _
from app.mail.render import TEMPLATES
from app.mail.tracking import Campaign
from app.shops.models import Shop
from flows.models import Enrollment, Send

__all__ = ["TEMPLATES", "abandoned_cart", "internal_alert", "order_email", "winback_email"]

# What a phone number may look like to get a tel: link: digits, spaces and ( ) . - /, with an
# optional leading +. ASCII digits only: \d would let other scripts' digits through.
PHONE = re.compile(r"\+?[0-9 ().\-/]+")
MIN_PHONE_DIGITS = 3  # emergency and short service numbers are the shortest worth dialling


def abandoned_cart(
    shop: Shop,
    checkout: Checkout,
    send: Send,
    step: dict[str, Any],
    details: dict[str, VariantDetails] | None = None,
    discount: DiscountCode | None = None,
    kept_until: datetime | None = None,
) -> EmailMessage:
    """The reminder for one step. `details` is what the store says now about each variant;
    `discount` the code made for this recipient, when the step has an offer; `kept_until`
    when the cart stops being kept."""
    assert shop.id is not None and send.id is not None and checkout.email is not None
    lang = i18n.language(checkout.locale, shop.locale)
    locale = _locale(checkout.locale or shop.locale, lang)
    # The store's prices are in its own currency; they replace the checkout's only when the
    # shopper saw that currency too.
    current = details or {}
    same_currency = shop.currency == checkout.currency
    context = {
        "shop_name": shop.name,
        "first_name": (checkout.first_name or "").strip() or None,
        "step": send.step,
        "items": [
            _line(item, checkout.currency, locale, current, same_currency)
            for item in checkout.line_items
        ],
        "item_count": sum(int(item.get("quantity") or 0) for item in checkout.line_items),
        "subtotal": _money(checkout.subtotal_price, checkout.currency, locale),
        "total": _money(checkout.total_price, checkout.currency, locale),
        "restore_url": restore_url(shop.id, send.id, lang=lang),
        "offer": _offer(discount, checkout.currency, locale, lang, shop.timezone)
        if discount
        else None,
        "kept_until": _date(kept_until, locale, shop.timezone) if kept_until else None,
        "unsubscribe_url": unsubscribe_url(shop.id, checkout.email, lang=lang),
    }
    return _render(
        shop, checkout.email, step, context, lang, _campaign(shop, send, step, "abandoned_cart")
    )


@dataclass(frozen=True)
class Recommended:
    title: str
    details: VariantDetails | None


def order_email(
    shop: Shop,
    order: Order,
    send: Send,
    step: dict[str, Any],
    details: dict[str, VariantDetails],
    shipments: list[Shipment],
    recommendations: list[Recommended],
    discount: DiscountCode | None = None,
    settings: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> EmailMessage:
    """A post-purchase step: the order, its parcels, and what the step asks or offers.
    `extra` holds what one template alone needs (the products to reorder, the order count)."""
    assert shop.id is not None and send.id is not None and order.email is not None
    lang = i18n.language(order.locale, shop.locale)
    locale = _locale(order.locale or shop.locale, lang)
    settings, extra = settings or {}, extra or {}
    lines = order.line_items
    if "replenish" in extra:
        lines = [i for i in lines if str(i.get("product_id")) in extra["replenish"]]
    items = [_order_item(item, details) for item in lines]
    template = step["template"]
    question = step.get("question") if template == "preference_question" else None
    context = {
        **_common(shop, send, order.email, lang, transactional=not step.get("marketing", True)),
        "first_name": order.first_name,
        "order": {
            "name": order.name,
            "total": _money(order.total_price, order.currency, locale),
            "placed_on": _date(order.placed_at, locale, shop.timezone),
        },
        "items": items,
        "tracking": [t for shipment in shipments for t in shipment.tracking],
        "delivered": any(shipment.delivered_at for shipment in shipments),
        "review_url": next((i["product_url"] for i in items if i["product_url"]), None),
        "nps_links": (
            [{"score": n, "url": nps_url(shop.id, send.id, n, lang=lang)} for n in range(11)]
            if template == "nps_survey"
            else []
        ),
        "recommendations": [_recommended(r, order.currency, locale) for r in recommendations],
        "care_text": step.get("content"),
        "referral": (
            {"text": settings.get("referral_text") or "", "url": settings["referral_url"]}
            if settings.get("referral_url")
            else None
        ),
        "question": (
            {
                "text": _translated(question["text"], lang),
                "options": [
                    {
                        "label": _translated(label, lang),
                        "url": preference_url(shop.id, send.id, n, lang=lang),
                    }
                    for n, label in enumerate(question["options"])
                ],
            }
            if question
            else None
        ),
        "reorder_url": restore_url(shop.id, send.id, lang=lang) if "replenish" in extra else None,
        "runs_out_on": _date(extra["runs_out"], locale, shop.timezone)
        if "runs_out" in extra
        else None,
        "order_count": extra.get("order_count"),
        "offer": _offer(discount, order.currency, locale, lang, shop.timezone)
        if discount
        else None,
    }
    return _render(
        shop, order.email, step, context, lang, _campaign(shop, send, step, "post_purchase")
    )


def winback_email(
    shop: Shop,
    enrollment: Enrollment,
    send: Send,
    step: dict[str, Any],
    discount: DiscountCode | None,
) -> EmailMessage:
    assert shop.id is not None and send.id is not None
    lang = i18n.language(enrollment.context.get("locale"), shop.locale)
    locale = _locale(enrollment.context.get("locale") or shop.locale, lang)
    currency = shop.currency or "USD"
    last_order = enrollment.context.get("last_order_at")
    context = {
        **_common(shop, send, enrollment.email, lang, transactional=False),
        "first_name": enrollment.context.get("first_name"),
        "segment": enrollment.context.get("segment", "regular"),
        "offer": _offer(discount, currency, locale, lang, shop.timezone) if discount else None,
        "stay_url": stay_url(shop.id, send.id, lang=lang)
        if step["template"] == "winback_goodbye"
        else None,
        "last_order_on": (
            _date(datetime.fromisoformat(last_order), locale, shop.timezone) if last_order else None
        ),
    }
    return _render(
        shop, enrollment.email, step, context, lang, _campaign(shop, send, step, "winback")
    )


def internal_alert(
    shop: Shop, checkout: Checkout, to: str, details: dict[str, VariantDetails]
) -> EmailMessage:
    """For the shop's customer service: a big cart was left; who, what, and how to reach them."""
    assert shop.id is not None and checkout.email is not None
    lang = i18n.language(shop.locale)
    locale = _locale(shop.locale, lang)
    same_currency = shop.currency == checkout.currency
    context = {
        "shop_name": shop.name,
        "shop_url": storefront_url(shop),
        "customer": {
            "name": full_name(checkout.first_name, checkout.last_name),
            "email": checkout.email,
            "phone": checkout.phone,
            "phone_url": tel_url(checkout.phone),
        },
        "items": [
            _line(item, checkout.currency, locale, details, same_currency)
            for item in checkout.line_items
        ],
        "total": _money(checkout.total_price, checkout.currency, locale),
        "started_on": _date(checkout.started_at, locale, shop.timezone),
        "reach_out_url": "mailto:" + quote(checkout.email, safe="@"),
        "unsubscribe_url": "",  # to the shop's own staff: no list, no unsubscribe
    }
    return render.message(shop, to, "email/internal_alert", context, lang=lang)


def full_name(first_name: str | None, last_name: str | None) -> str | None:
    return (
        " ".join(part.strip() for part in (first_name, last_name) if part and part.strip()) or None
    )


def tel_url(phone: str | None) -> str | None:
    """A tel: link for a number written with digits and the usual separators, or None. Anything
    else (a vanity number like 555-BILL, an extension in words) is shown without a link rather
    than dialled wrong; only digits and a leading + reach the link, never the shopper's text."""
    number = (phone or "").strip()
    if not PHONE.fullmatch(number):
        return None
    digits = re.sub(r"[^0-9]", "", number)
    if len(digits) < MIN_PHONE_DIGITS:
        return None
    return "tel:" + ("+" if number.startswith("+") else "") + digits


def storefront_url(shop: Shop) -> str:
    return shop.base_url or f"https://{shop.domain}"


def _common(
    shop: Shop, send: Send, email: str, lang: str, *, transactional: bool
) -> dict[str, Any]:
    assert shop.id is not None and send.id is not None
    return {
        "shop_name": shop.name,
        "shop_url": restore_url(
            shop.id, send.id, lang=lang
        ),  # records the click, then the storefront
        "step": send.step,
        "transactional": transactional,
        "unsubscribe_url": unsubscribe_url(shop.id, email, lang=lang),
    }


def _order_item(item: dict[str, Any], details: dict[str, VariantDetails]) -> dict[str, Any]:
    now = details.get(str(item.get("variant_id")))
    title = item.get("title") or "Item"
    return {
        "title": title,
        "variant_title": item.get("variant_title"),
        "quantity": int(item.get("quantity") or 0),
        "image_url": (now.image_url if now else None) or item.get("image_url"),
        "image_alt": (now.image_alt if now else None) or title,
        "product_url": now.product_url if now and not now.gone else None,
    }


def _recommended(pick: Recommended, currency: str, locale: Locale) -> dict[str, Any]:
    now = pick.details
    return {
        "title": pick.title,
        "price": _money(str(now.price), currency, locale) if now and now.price else None,
        "image_url": now.image_url if now else None,
        "image_alt": (now.image_alt if now else None) or pick.title,
        "url": now.product_url if now else None,
    }


def _translated(text: str, lang: str) -> str:
    """Default words stored in a flow, in the customer's language when the catalogs have them."""
    with i18n.writing_in(lang):
        return _(text)


def _date(moment: datetime, locale: Locale, zone: str | None) -> str:
    """The day `moment` is in the shop's time zone: an offer ending at 23:00 UTC ends on the
    next day in Stockholm. Some long formats end in an abbreviation's full stop (Russian
    "2026 г."); dates end the sentences they are in, whose own full stop then serves both."""
    local = moment.astimezone(_zone(zone)) if moment.tzinfo else moment
    return format_date(local, format="long", locale=locale).rstrip(".")


def _zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _render(
    shop: Shop,
    to: str,
    step: dict[str, Any],
    context: dict[str, Any],
    lang: str,
    campaign: Campaign,
) -> EmailMessage:
    """The step's template, with the merchant's own subject and opening for this language when
    they wrote them (step `overrides`: {"sv": {"subject": …, "intro": …, "preheader": …}})."""
    override = (step.get("overrides") or {}).get(lang) or {}
    context = {**context, "intro": override.get("intro"), "preheader": override.get("preheader")}
    return render.message(
        shop, to, f"email/{step['template']}", context, lang=lang, campaign=campaign,
        subject=override.get("subject"),
    )  # fmt: skip


def _campaign(shop: Shop, send: Send, step: dict[str, Any], flow: str) -> Campaign:
    assert shop.id is not None and send.id is not None
    return Campaign(shop.id, send.id, flow, step_label(step, send.step))


def step_label(step: dict[str, Any], index: int) -> str:
    """A step's name in utm_content: its key, else its number counted from 1."""
    return str(step.get("key") or index + 1)


def _offer(
    discount: DiscountCode, currency: str, locale: Locale, lang: str, zone: str | None
) -> dict[str, str]:
    offer = discount.offer
    with i18n.writing_in(lang):
        if offer.kind == "percentage":
            headline = _("%(percent)s%% off your order") % {
                "percent": format_decimal(offer.value.normalize(), locale=locale)
            }
        elif offer.kind == "fixed_amount":
            headline = _("%(amount)s off your order") % {
                "amount": _money(str(offer.value), currency, locale)
            }
        else:
            headline = _("Free shipping on your order")
    return {
        "headline": headline,
        "code": discount.code,
        "until": _date(discount.ends_at, locale, zone),
    }


def _locale(code: str | None, lang: str) -> Locale:
    """How money and dates are written: the customer's own locale (en-GB, de-AT) when it is in
    the email's language, else that language's default."""
    try:
        parsed = Locale.parse((code or lang).replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        parsed = None
    same = parsed is not None and i18n.ALIASES.get(parsed.language, parsed.language) == lang
    return parsed if parsed is not None and same else Locale.parse(lang)


# Carts repeat the catalogue's prices: babel's formatting was a sixth of composing an email
# (bench/send.py --cprofile), and a price formats the same every time.
@lru_cache(maxsize=4096)
def _money(amount: str, currency: str, locale: Locale) -> str:
    try:
        return format_currency(Decimal(amount), currency, locale=locale)
    except (InvalidOperation, ValueError):
        return f"{amount} {currency}"


def _line(
    item: dict[str, Any],
    currency: str,
    locale: Locale,
    details: dict[str, VariantDetails],
    same_currency: bool,
) -> dict[str, Any]:
    quantity = int(item.get("quantity") or 0)
    now = details.get(str(item.get("variant_id")))
    price = (
        str(now.price) if now and same_currency and not now.gone else str(item.get("price", "0"))
    )
    try:
        line_total = str(Decimal(price) * quantity)
    except (InvalidOperation, TypeError):
        line_total = price
    title = item.get("title") or "Item"
    return {
        "title": title,
        "variant_title": item.get("variant_title"),
        "quantity": quantity,
        "price": _money(price, currency, locale),
        "line_total": _money(line_total, currency, locale),
        "image_url": (now.image_url if now else None) or item.get("image_url"),
        "image_alt": (now.image_alt if now else None) or title,
        "sold_out": bool(now and not now.available and not now.gone),
        "gone": bool(now and now.gone),
    }
