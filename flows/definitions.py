"""What a flow is: its trigger, steps, exit rules and settings, as data, and the defaults every
shop starts with. The engine interprets these; changing a flow never needs code.

A step is a dict:
- `key`: names the step within its flow (stable across edits; shown to the merchant)
- `template`: the email template under templates/email/
- `delay`: seconds after the step's anchor
- `after`: the anchor. `trigger` (the cart's last activity, the order, the lapse scan),
  `shipped` or `delivered` (post-purchase steps that wait for the parcel), `replenish` (when the
  order's consumables run out, from the flow's `replenish_days` per product, less the lead time)
- `enabled`: a switched-off step is passed over
- `marketing`: marketing steps honour unsubscribes, smart sending and quiet hours;
  transactional ones (a shipping notice) go to every customer of the order
- `offer`: {kind, value[, expires_hours, minimum_subtotal]} or absent; win-back steps may
  instead have `offers` by customer segment (`top`, `regular`, `one_time`)
- `conditions`: {min_total, international, segment, min_orders, nth_order, preference} all
  optional, all must hold. Orders are counted up to the series' own order, so `nth_order: 5` is
  once per customer, on their 5th; `segment` outside win-back is the customer's standing when
  the step falls due; `preference` is {key: value} matched against the customer's stored answers
- `question`: for a preference question, {key, text, options}: the answer clicked is stored
- `variants`: A/B copies of the step ([{key, weight, template}]), for the admin's tests
- `action`: instead of an email, `suppress_marketing` (win-back: ignored the goodbye)
- `overrides`: the merchant's own words per language, {"sv": {"subject": …, "intro": …,
  "preheader": …}}; a subject may use {{ first_name }} and {{ shop_name }}
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from app.commerce.offers import Offer, OfferError

ABANDONED_CART = "abandoned_cart"
POST_PURCHASE = "post_purchase"
WINBACK = "winback"

HOUR = 3600
DAY = 24 * HOUR

# What starts a flow. What ends it early is in its settings (`exit_on_order`,
# `exit_on_unsubscribe`), with the rest of what a merchant may change.
TRIGGERS = {ABANDONED_CART: "checkout", POST_PURCHASE: "order", WINBACK: "lapse"}

ANCHORS = ("trigger", "shipped", "delivered", "replenish")
# What each flow's steps may send and count from: a template reads what its flow has (a cart,
# an order and its parcels, a lapsed customer), so a cart reminder cannot be a shipping notice.
TEMPLATES = {
    ABANDONED_CART: ("abandoned_cart",),
    POST_PURCHASE: ("thank_you", "surprise_reward", "shipping_notice", "care_guide",
                    "preference_question", "review_request", "ugc_request", "nps_survey",
                    "cross_sell", "replenishment"),
    WINBACK: ("winback_offer", "winback_values", "winback_goodbye"),
}  # fmt: skip
FLOW_ANCHORS = {ABANDONED_CART: ("trigger",), POST_PURCHASE: ANCHORS, WINBACK: ("trigger",)}
FLOW_ACTIONS = {ABANDONED_CART: (), POST_PURCHASE: (), WINBACK: ("suppress_marketing",)}
STEP_FIELDS = frozenset({
    "key", "template", "delay", "after", "enabled", "marketing", "offer", "offers",
    "conditions", "question", "variants", "action", "overrides",
})  # fmt: skip
SEGMENTS = ("top", "regular", "one_time")
MAX_STEPS = 10
MAX_DELAY = 365 * DAY
MAX_PERCENT = Decimal(90)


def N_(text: str) -> str:  # noqa: N802 - gettext's name for "extract this, translate it later"
    """Default words stored in flows: extracted for the catalogs, translated when an email is
    written (a merchant's own words are not in the catalogs and stay as they wrote them)."""
    return text


def _step(key: str, template: str, delay: int, **more: Any) -> dict[str, Any]:
    return {"key": key, "template": template, "delay": delay, "after": "trigger",
            "enabled": True, "marketing": True, **more}  # fmt: skip


DEFAULT_STEPS: dict[str, list[dict[str, Any]]] = {
    ABANDONED_CART: [
        _step("reminder", "abandoned_cart", 1 * HOUR),
        _step("still_there", "abandoned_cart", 24 * HOUR),
        _step("last_call", "abandoned_cart", 72 * HOUR,
              offer={"kind": "percentage", "value": "10"}),
    ],
    # In the order they fall due; the switched-off ones are there for the merchant to turn on.
    POST_PURCHASE: [
        _step("thank_you", "thank_you", 0, enabled=False, marketing=False),
        _step("reward", "surprise_reward", 1 * DAY, enabled=False,
              conditions={"nth_order": 5},
              offer={"kind": "percentage", "value": "15", "expires_hours": 30 * 24}),
        _step("shipping_notice", "shipping_notice", 0, after="shipped", marketing=False),
        _step("care", "care_guide", 2 * DAY, after="delivered"),
        _step("preference", "preference_question", 3 * DAY, after="delivered", enabled=False,
              question={"key": "interest",
                        "text": N_("What would you like to hear about from us?"),
                        "options": [N_("New arrivals"), N_("Offers"), N_("Care tips")]}),
        _step("review", "review_request", 7 * DAY, after="delivered"),
        _step("share_photo", "ugc_request", 10 * DAY, after="delivered", enabled=False),
        _step("nps", "nps_survey", 14 * DAY, after="delivered"),
        _step("cross_sell", "cross_sell", 21 * DAY, after="delivered"),
        _step("replenish", "replenishment", 0, after="replenish", enabled=False),
    ],
    WINBACK: [
        _step("we_miss_you", "winback_offer", 0, offers={
            "top": {"kind": "percentage", "value": "20", "expires_hours": 14 * 24},
            "regular": {"kind": "percentage", "value": "15", "expires_hours": 14 * 24},
            "one_time": {"kind": "percentage", "value": "10", "expires_hours": 14 * 24},
        }),
        _step("our_values", "winback_values", 7 * DAY),
        _step("goodbye", "winback_goodbye", 14 * DAY),
        _step("goodbye_ignored", "", 28 * DAY, action="suppress_marketing"),
    ],
}  # fmt: skip

DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    ABANDONED_CART: {
        "exit_on_order": True,  # any order by the customer ends the series
        "exit_on_unsubscribe": True,
        "min_cart_value": "0",
        "reenroll_after_days": 7,
        "cart_kept_days": 30,
        "offer_guard_days": 90,  # no offer to someone who got one this recently
        "offer_guard_max_bought_with_code": 1,  # nor to someone who bought with one more often
        "alert_email": None,  # the shop's customer-service address
        "alert_min_total": None,
    },
    POST_PURCHASE: {
        # The customer's next order starts its own series; an unsubscribe skips marketing steps
        # while the service emails (the shipping notice) still go.
        "exit_on_order": False,
        "exit_on_unsubscribe": False,
        "transit_days": 5,  # delivery assumed this long after shipping when no event comes
        "international_extra_days": 7,
        "cross_sell_count": 3,
        "replenish_days": {},  # product id → days one purchase lasts (consumables)
        "replenish_lead_days": 5,  # the reminder comes this long before it runs out
        "referral_url": None,  # a refer-a-friend link mentioned in post-purchase emails
        "referral_text": None,
    },
    WINBACK: {
        "exit_on_order": True,
        "exit_on_unsubscribe": True,
        "lapse_factor": 2.0,  # lapsed after k × the customer's median gap between orders
        "min_lapse_days": 30,  # but never sooner: two orders a day apart are not a rhythm
        "one_time_after_days": 90,
        "top_share": 0.02,
        "cooldown_days": 180,
    },
}

# The demo store plays a whole abandoned-cart series in about two minutes.
DEMO_DELAYS = {ABANDONED_CART: [15, 45, 90]}

FLOW_NAMES = tuple(DEFAULT_STEPS)


class FlowDefinitionError(ValueError):
    """A flow edit that cannot be applied; the message says which step and why."""


def validate_steps(name: str, steps: list[dict[str, Any]]) -> None:
    if not isinstance(steps, list):
        raise FlowDefinitionError(f"{name}'s steps are a list")
    if not steps:
        raise FlowDefinitionError(f"{name} needs at least one step")
    if len(steps) > MAX_STEPS:
        raise FlowDefinitionError(f"{name} has {len(steps)} steps; at most {MAX_STEPS}")
    # Steps saved before keys existed are named by their place.
    keys = [step.get("key") or f"step_{number}" for number, step in enumerate(steps, start=1)]
    if len(set(keys)) != len(keys):
        raise FlowDefinitionError(f"{name} has two steps with the same key")
    for number, step in enumerate(steps, start=1):
        try:
            _validate_step(name, step)
        except FlowDefinitionError as exc:
            raise FlowDefinitionError(f"{name} step {number}: {exc}") from None


def _validate_step(name: str, step: dict[str, Any]) -> None:
    _validate_fields(step)
    delay = step.get("delay")
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        raise FlowDefinitionError(f"delay must be zero or more seconds, not {delay!r}")
    if delay > MAX_DELAY:
        raise FlowDefinitionError("delay is longer than a year")
    if step.get("after", "trigger") not in FLOW_ANCHORS[name]:
        raise FlowDefinitionError(f"after must be one of {', '.join(FLOW_ANCHORS[name])}")
    _validate_sending(name, step)
    offers = step.get("offers") or {}
    if not isinstance(offers, dict) or set(offers) - set(SEGMENTS):
        raise FlowDefinitionError(f"offers are by segment: {', '.join(SEGMENTS)}")
    for offer in (step.get("offer"), *offers.values()):
        validate_offer(offer)
    _validate_conditions(step.get("conditions") or {})
    _validate_question(step.get("question"))
    _validate_overrides(step.get("overrides") or {})
    _validate_variants(name, step.get("variants") or [])


def _validate_fields(step: Any) -> None:
    """The step's shape, for steps written by hand: known fields of the right kinds."""
    if not isinstance(step, dict):
        raise FlowDefinitionError("a step is an object of fields")
    unknown = set(step) - STEP_FIELDS
    if unknown:
        raise FlowDefinitionError(
            f"unknown field {sorted(unknown)[0]!r}; a step has {', '.join(sorted(STEP_FIELDS))}"
        )
    if "key" in step and not str(step["key"] or "").isidentifier():
        raise FlowDefinitionError("key is a name of letters, digits and _")
    for flag in ("enabled", "marketing"):
        if not isinstance(step.get(flag, True), bool):
            raise FlowDefinitionError(f"{flag} must be true or false")
    for field, kind in (("conditions", dict), ("overrides", dict), ("variants", list)):
        if not isinstance(step.get(field) or kind(), kind):
            raise FlowDefinitionError(
                f"{field} must be {'a list' if kind is list else 'an object'}"
            )


def _validate_variants(name: str, variants: list[Any]) -> None:
    for variant in variants:
        if not isinstance(variant, dict) or not str(variant.get("key") or "").isidentifier():
            raise FlowDefinitionError("each variant needs a key")
        weight = variant.get("weight", 1)
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
            raise FlowDefinitionError("a variant's weight must be zero or more")
        if "template" in variant:
            _validate_template(name, variant["template"])


def _validate_sending(name: str, step: dict[str, Any]) -> None:
    """What the step does: an action, or an email from one of its flow's templates."""
    action = step.get("action")
    if action is not None:
        if action not in FLOW_ACTIONS[name]:
            actions = ", ".join(FLOW_ACTIONS[name]) or "none"
            raise FlowDefinitionError(f"unknown action {action!r}; {name} has: {actions}")
        return
    _validate_template(name, step.get("template"))
    if step["template"] == "preference_question" and step.get("question") is None:
        raise FlowDefinitionError("a preference question needs its question")


def _validate_template(name: str, template: Any) -> None:
    if template not in TEMPLATES[name]:
        raise FlowDefinitionError(
            f"template {template!r} is not one of {name}'s: {', '.join(TEMPLATES[name])}"
        )


OFFER_FIELDS = frozenset({"kind", "value", "expires_hours", "minimum_subtotal"})


def validate_offer(offer: Any) -> None:
    """One stored offer (or None), as a step's `offer` or one of its `offers`."""
    if offer is None:
        return
    if not isinstance(offer, dict) or set(offer) - OFFER_FIELDS:
        raise FlowDefinitionError(f"an offer has {', '.join(sorted(OFFER_FIELDS))}")
    hours = offer.get("expires_hours", 1)
    if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= MAX_DELAY // HOUR:
        raise FlowDefinitionError("an offer's expires_hours is a whole number of 1 to 8760 hours")
    try:
        parsed = Offer.from_step({"offer": offer})
    except OfferError as exc:
        raise FlowDefinitionError(str(exc)) from None
    if parsed and parsed.kind == "percentage" and parsed.value > MAX_PERCENT:
        raise FlowDefinitionError(f"a discount above {MAX_PERCENT}% gives the store away")


def _validate_question(question: Any) -> None:
    if question is None:
        return
    if not isinstance(question, dict) or not str(question.get("key") or "").isidentifier():
        raise FlowDefinitionError("a question needs a key")
    if not str(question.get("text") or "").strip():
        raise FlowDefinitionError("a question needs its text")
    options = question.get("options")
    if not isinstance(options, list) or not 2 <= len(options) <= 6:
        raise FlowDefinitionError("a question needs 2 to 6 options")
    if not all(isinstance(o, str) and o.strip() and len(o) <= 100 for o in options):
        raise FlowDefinitionError("each option is a short text")


def _validate_overrides(overrides: Any) -> None:
    from app.mail.i18n import LANGUAGES
    from app.mail.render import merchant_text

    if not isinstance(overrides, dict):
        raise FlowDefinitionError("overrides are by language")
    for lang, words in overrides.items():
        if lang not in LANGUAGES:
            raise FlowDefinitionError(f"overrides are for {', '.join(LANGUAGES)}, not {lang!r}")
        if not isinstance(words, dict) or set(words) - {"subject", "intro", "preheader"}:
            raise FlowDefinitionError("an override has a subject, an intro, a preheader or some")
        preheader = words.get("preheader")
        if preheader is not None and (
            not isinstance(preheader, str) or "\n" in preheader or len(preheader) > 150
        ):
            raise FlowDefinitionError("a preheader is one line of at most 150 characters")
        subject, intro = words.get("subject"), words.get("intro")
        if subject is not None:
            if not isinstance(subject, str) or not subject.strip() or len(subject) > 200:
                raise FlowDefinitionError("a subject is one line of at most 200 characters")
            try:  # rendered now with what it may use, so it never fails at send time
                merchant_text.from_string(subject).render(first_name="Alex", shop_name="Shop")
            except Exception as exc:
                raise FlowDefinitionError(
                    f"the {lang} subject may use {{{{ first_name }}}} and {{{{ shop_name }}}} "
                    f"only: {exc}"
                ) from None
        if intro is not None and (not isinstance(intro, str) or len(intro) > 2000):
            raise FlowDefinitionError("an intro is a text of at most 2000 characters")


def _validate_conditions(conditions: dict[str, Any]) -> None:
    unknown = set(conditions) - {
        "min_total",
        "international",
        "segment",
        "min_orders",
        "nth_order",
        "preference",
    }
    if unknown:
        raise FlowDefinitionError(f"unknown condition {sorted(unknown)[0]!r}")
    if "min_total" in conditions:
        try:
            if Decimal(str(conditions["min_total"])) < 0:
                raise FlowDefinitionError("min_total must not be negative")
        except InvalidOperation:
            raise FlowDefinitionError("min_total must be an amount") from None
    if "international" in conditions and not isinstance(conditions["international"], bool):
        raise FlowDefinitionError("international must be true or false")
    if conditions.get("segment", "top") not in SEGMENTS:
        raise FlowDefinitionError(f"segment must be one of {', '.join(SEGMENTS)}")
    for key in ("min_orders", "nth_order"):
        count = conditions.get(key, 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise FlowDefinitionError(f"{key} must be a whole number of at least 1")
    preference = conditions.get("preference", {})
    if not isinstance(preference, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in preference.items()
    ):
        raise FlowDefinitionError("preference must map a question's key to an answer")


def validate_settings(name: str, settings: dict[str, Any]) -> None:
    defaults = DEFAULT_SETTINGS[name]
    unknown = set(settings) - set(defaults)
    if unknown:
        raise FlowDefinitionError(f"{name} has no setting {sorted(unknown)[0]!r}")
    for key, value in settings.items():
        if value is None:
            if not key.startswith(OPTIONAL_SETTINGS):
                raise FlowDefinitionError(f"{key} needs a value; only alert_* and referral_* clear")
            continue
        try:
            _validate_setting(key, value)
        except FlowDefinitionError:
            raise
        except (TypeError, ValueError):
            raise FlowDefinitionError(f"{key} cannot be {value!r}") from None


# Settings a merchant may clear (no alert, no referral link); every other one needs a value.
OPTIONAL_SETTINGS = ("alert_", "referral_")


def _validate_setting(key: str, value: Any) -> None:
    if key.startswith("exit_on_"):
        if not isinstance(value, bool):
            raise FlowDefinitionError(f"{key} must be true or false")
    elif key in ("min_cart_value", "alert_min_total"):
        try:
            if Decimal(str(value)) < 0:
                raise FlowDefinitionError(f"{key} must not be negative")
        except InvalidOperation:
            raise FlowDefinitionError(f"{key} must be an amount") from None
    elif key == "alert_email":
        if "@" not in str(value) or any(c in str(value) for c in "\r\n <>"):
            raise FlowDefinitionError("alert_email must be an email address")
    elif key == "top_share":
        if not 0 < float(value) <= 0.2:
            raise FlowDefinitionError("top_share must be above 0 and at most 0.2 (20 %)")
    elif key == "lapse_factor":
        if not 1 <= float(value) <= 10:
            raise FlowDefinitionError("lapse_factor must be between 1 and 10")
    elif key == "replenish_days":
        if not isinstance(value, dict) or not all(
            isinstance(days, int) and not isinstance(days, bool) and 0 < days <= 365
            for days in value.values()
        ):
            raise FlowDefinitionError("replenish_days maps product ids to 1–365 days")
    elif key == "referral_url":
        if not str(value).startswith("https://") or any(c in str(value) for c in " <>\"'"):
            raise FlowDefinitionError("referral_url must be an https:// link")
    elif key == "referral_text":
        if not isinstance(value, str) or len(value) > 300:
            raise FlowDefinitionError("referral_text is a short text")
    elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FlowDefinitionError(f"{key} must be a whole number of zero or more")


def validate_timing(name: str, steps: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Steps and settings together: a cart reminder due after `cart_kept_days` could never go
    (the cart is gone by then, and the email would promise a date already past)."""
    if name != ABANDONED_CART:
        return
    kept = settings_for(name, settings)["cart_kept_days"]
    for number, step in enumerate(steps, start=1):
        if step.get("enabled", True) and step["delay"] > kept * DAY:
            raise FlowDefinitionError(
                f"{name} step {number} is due after the cart is no longer kept "
                f"(cart_kept_days is {kept}): a shorter delay, or keep carts longer"
            )


def settings_for(name: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The flow's settings: the stored ones over the defaults, so new settings get a value."""
    return {**DEFAULT_SETTINGS[name], **(stored or {})}
