"""How flows, steps, settings and figures read to a merchant: names, words for offers and
delays, the label and help of each setting, amounts and shares."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

from app import security
from app.settings import Settings
from app.shops.models import Shop
from flows.service import format_duration

FLOW_SUMMARIES = {
    "abandoned_cart": "Reminds shoppers who left a checkout with their email address, with a "
    "link back to the same cart.",
    "post_purchase": "Shipping notice, care tips, a review request, an NPS survey and a "
    "cross-sell after an order.",
    "winback": "Wins back customers who stayed away longer than their own rhythm: an offer, "
    "the brand's story, then a goodbye.",
}

# What a step's delay counts from, per anchor (and, for the first, per flow).
TRIGGER_ANCHORS = {
    "abandoned_cart": "the cart's last activity",
    "post_purchase": "the order",
    "winback": "the start of win-back",
}
ANCHORS = {
    "shipped": "shipping",
    "delivered": "delivery",
    "replenish": "the product running out (less the lead time)",
}


def anchor_text(flow: str, after: str | None) -> str:
    if not after or after == "trigger":
        return TRIGGER_ANCHORS.get(flow, "the trigger")
    return ANCHORS.get(after, after)


STEP_TITLES = {"nps": "NPS survey", "cross_sell": "Cross-sell", "share_photo": "Photo ask"}


def step_title(step: dict[str, Any], number: int) -> str:
    """still_there → Still there; a step saved before keys existed is "Step 2"."""
    key = str(step.get("key") or "")
    if not key:
        return f"Step {number}"
    return STEP_TITLES.get(key, key.replace("_", " ").capitalize())


def delay_text(seconds: int | None) -> str:
    return format_duration(int(seconds or 0))


def wait_text(seconds: int | None, anchor: str) -> str:
    """A step's wait in words: "1d after the order", or "Right after the order"."""
    return f"{delay_text(seconds)} after {anchor}" if seconds else f"Right after {anchor}"


def offer_words(offer: dict[str, Any] | None) -> str:
    """A stored offer in the words the editor takes back: 10%, 5.00, free-shipping, or ""."""
    if not offer:
        return ""
    if offer.get("kind") == "percentage":
        return f"{offer.get('value')}%"
    if offer.get("kind") == "free_shipping":
        return "free-shipping"
    return str(offer.get("value", ""))


SEGMENT_NAMES = {
    "top": "Top customers",
    "regular": "Regular customers",
    "one_time": "One-time buyers",
}


def segment_offers(step: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Win-back's offers by customer segment, every segment, as (segment, name, words)."""
    offers = step.get("offers") or {}
    return [
        (segment, name, offer_words(offers.get(segment))) for segment, name in SEGMENT_NAMES.items()
    ]


def sends_email(step: dict[str, Any]) -> bool:
    return not step.get("action")


@dataclass(frozen=True)
class SettingField:
    label: str
    hint: str
    kind: str  # bool, int, float, amount, email, url, text, json


SETTINGS: dict[str, SettingField] = {
    "exit_on_order": SettingField(
        "End the series on the customer's next order", "Any order by them stops the emails.", "bool"
    ),
    "exit_on_unsubscribe": SettingField(
        "End the series when the customer unsubscribes",
        "Otherwise only marketing steps are skipped; service emails still go.",
        "bool",
    ),
    "min_cart_value": SettingField(
        "Smallest cart to remind", "Carts below this total get no reminders.", "amount"
    ),
    "reenroll_after_days": SettingField(
        "Days before a customer's next cart is reminded", "", "int"
    ),
    "cart_kept_days": SettingField(
        "Days the cart is kept", "The “kept until” date in the email.", "int"
    ),
    "offer_guard_days": SettingField(
        "No offer to anyone who got one in the last (days)",
        "Some shoppers learn to abandon carts for a discount.",
        "int",
    ),
    "offer_guard_max_bought_with_code": SettingField(
        "No offer to anyone who bought with a reminder's code more than (times)", "", "int"
    ),
    "alert_email": SettingField(
        "Customer-service alert address",
        "Hears of carts above the alert total when the first reminder goes. Empty: off.",
        "email",
    ),
    "alert_min_total": SettingField("Alert for carts from (total)", "Empty: no alerts.", "amount"),
    "transit_days": SettingField(
        "Days a parcel takes", "Delivery is assumed this long after shipping.", "int"
    ),
    "international_extra_days": SettingField("Extra days for orders shipped abroad", "", "int"),
    "cross_sell_count": SettingField("Products in the cross-sell email", "", "int"),
    "replenish_days": SettingField(
        "How long one purchase lasts, per product id",
        'JSON, e.g. {"801": 30}. The reorder reminder uses it.',
        "json",
    ),
    "replenish_lead_days": SettingField(
        "Days before it runs out that the reminder comes", "", "int"
    ),
    "referral_url": SettingField(
        "Refer-a-friend link", "An https:// link mentioned in post-purchase emails.", "url"
    ),
    "referral_text": SettingField("Refer-a-friend text", "", "text"),
    "lapse_factor": SettingField(
        "Lapsed after this many times the customer's usual gap", "Between 1 and 10.", "float"
    ),
    "min_lapse_days": SettingField("No one lapses sooner than (days)", "", "int"),
    "one_time_after_days": SettingField("One-time buyers lapse after (days)", "", "int"),
    "top_share": SettingField(
        "Share of customers who get the richer offer",
        "By money spent; 0.02 is the top 2 %.",
        "float",
    ),
    "cooldown_days": SettingField("At most one win-back per customer in (days)", "", "int"),
}


def setting_field(key: str, value: Any) -> SettingField:
    known = SETTINGS.get(key)
    if known is not None:
        return known
    kind = (
        "bool"
        if isinstance(value, bool)
        else "int"
        if isinstance(value, int)
        else "float"
        if isinstance(value, float)
        else "json"
        if isinstance(value, dict | list)
        else "text"
    )
    return SettingField(key.replace("_", " ").capitalize(), "", kind)


def percent(share: float | Decimal | None, digits: int = 1) -> str:
    if share is None:
        return "–"
    return f"{float(share) * 100:.{digits}f} %"


def mail_transport_kind(shop: Shop, settings: Settings) -> str:
    """Which kind of transport the shop's emails leave by, never its URL (it holds secrets)."""
    if shop.mail_transport_encrypted:
        scheme = urlparse(security.decrypt(shop.mail_transport_encrypted)).scheme
        return f"{_TRANSPORTS.get(scheme.lower(), OUTBOX)} (this shop's own)"
    if settings.mail_transport is not None:
        scheme = urlparse(settings.mail_transport.get_secret_value().strip()).scheme
        return _TRANSPORTS.get(scheme.lower(), OUTBOX)
    if settings.smtp_url is not None:
        return "SMTP"
    return OUTBOX


_TRANSPORTS = {"smtp": "SMTP", "smtps": "SMTP (TLS)", "postmark": "Postmark", "ses": "Amazon SES"}
OUTBOX = "Outbox folder: emails are saved on the server, not sent"

NETWORKS = {"tiktok": "TikTok", "youtube": "YouTube", "linkedin": "LinkedIn", "x": "X"}


def network_name(network: str) -> str:
    return NETWORKS.get(network, network.capitalize())
