"""Turn flow steps into complete messages: subject, preheader, HTML and text parts, headers."""

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.commerce.catalog import VariantDetails
from app.commerce.models import Checkout
from app.commerce.offers import DiscountCode
from app.links.urls import restore_url, unsubscribe_url
from app.settings import get_settings
from app.shops.models import Shop
from flows.models import Send

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# Long header lines (List-Unsubscribe URLs) stay plain ASCII instead of RFC 2047 encoded words.
SMTP_POLICY = policy.SMTP.clone(max_line_length=998)

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def abandoned_cart(
    shop: Shop,
    checkout: Checkout,
    send: Send,
    step: dict[str, Any],
    details: dict[str, VariantDetails] | None = None,
    discount: DiscountCode | None = None,
) -> EmailMessage:
    """The reminder for one step. `details` is what the store says now about each variant;
    `discount` the code made for this recipient, when the step has an offer."""
    assert shop.id is not None and send.id is not None and checkout.email is not None
    locale = _locale(checkout.locale or shop.locale)
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
        "restore_url": restore_url(shop.id, send.id),
        "offer": _offer(discount, checkout.currency, locale) if discount else None,
        "unsubscribe_url": unsubscribe_url(shop.id, checkout.email),
    }
    template = step.get("template", "abandoned_cart")
    return _message(shop, checkout.email, f"email/{template}", context)


def _message(shop: Shop, to: str, template: str, context: dict[str, Any]) -> EmailMessage:
    subject = _one_line(environment.get_template(f"{template}.subject.txt").render(context))
    context = {**context, "subject": subject}
    _, sender = parseaddr(get_settings().mail_from)
    domain = sender.rpartition("@")[2] or "localhost"

    message = EmailMessage(policy=SMTP_POLICY)
    message["Subject"] = subject
    message["From"] = formataddr((_one_line(shop.name), sender))
    message["To"] = to
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=domain)
    # RFC 2369 and RFC 8058: mail clients show an unsubscribe button and POST to the https URL.
    message["List-Unsubscribe"] = (
        f"<{context['unsubscribe_url']}>, <mailto:{sender}?subject=unsubscribe>"
    )
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(environment.get_template(f"{template}.txt").render(context))
    message.add_alternative(
        environment.get_template(f"{template}.html").render(context), subtype="html"
    )
    return message


def _offer(discount: DiscountCode, currency: str, locale: Locale) -> dict[str, str]:
    offer = discount.offer
    if offer.kind == "percentage":
        headline = f"{offer.value.normalize():f}% off your order"
    elif offer.kind == "fixed_amount":
        headline = f"{_money(str(offer.value), currency, locale)} off your order"
    else:
        headline = "Free shipping on your order"
    return {
        "headline": headline,
        "code": discount.code,
        "until": format_date(discount.ends_at, format="long", locale=locale),
    }


def _one_line(text: str) -> str:
    # Header values never carry line breaks: names come from merchants and shoppers.
    return " ".join(text.split())


def _locale(code: str | None) -> Locale:
    try:
        return Locale.parse((code or "en").replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


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
