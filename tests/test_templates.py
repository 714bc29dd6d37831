"""Every email and page template renders with the real Jinja environment (StrictUndefined, i18n)
from a full sample context, with optional values both absent (None) and set, and every HTML part
goes through the real CSS inliner. Customer and merchant strings are escaped in HTML; images keep
their alt text; styles come from the one stylesheet in base.html, coloured by the shop's brand;
messages stay under Gmail's clip; every default string reads in the customer's language, and
falls back to English where a catalog lacks it."""

import itertools
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po, write_po

from app.mail import i18n
from app.mail.render import DEFAULT_ACCENT, INLINER, TEMPLATES, environment

ROOT = TEMPLATES.parent
SCRIPT = "<script>alert(1)</script>"
BOLD = "<b>Bold</b> mug"
REFERRAL_TEXT = "Give them 15% off <i>their</i> first order & get $10."
QUESTION_TEXT = "Which <em>scents</em> should we tell you about?"
SHOP_NAME = "Fern & Moss"
GMAIL_CLIP = 102 * 1024
ACCENT = "#123456"
INTRO = "Hej <b>Ana</b> & welcome back!\r\n\r\n   We have news for you. \n"

ORDER_TEMPLATES = (
    "thank_you",
    "shipping_notice",
    "care_guide",
    "review_request",
    "nps_survey",
    "cross_sell",
    "preference_question",
    "replenishment",
    "surprise_reward",
    "ugc_request",
)
WINBACK_TEMPLATES = ("winback_offer", "winback_values", "winback_goodbye")
CUSTOMER_TEMPLATES = ("abandoned_cart", *ORDER_TEMPLATES, *WINBACK_TEMPLATES)
SEGMENTS = ("top", "regular", "one_time")
# The surveys and the goodbye keep to their one question; these also link to the store.
SHOP_BUTTON = {
    "thank_you",
    "shipping_notice",
    "care_guide",
    "cross_sell",
    "surprise_reward",
    "winback_offer",
    "winback_values",
}
SHOWS_ITEMS = {
    "abandoned_cart",
    "thank_you",
    "shipping_notice",
    "care_guide",
    "review_request",
    "cross_sell",
    "replenishment",
    "ugc_request",
}
# Link to the review page, or to the store when no product page is known.
REVIEW_BUTTON = {"review_request", "ugc_request"}
# A phrase of each template's default opening (of the sample contexts), which `intro` replaces.
OPENINGS = {
    "abandoned_cart": "is still here, just as you left it",
    "thank_you": "We've received your order",
    "shipping_notice": "has shipped and is on its way to you",
    "care_guide": "Here are a few tips to help you get the most out of it",
    "review_request": "Would you take a minute to tell us",
    "nps_survey": "answering takes a single click",
    "cross_sell": "we think you might like these too",
    "preference_question": "We'd like our emails to be about things you actually care about",
    "replenishment": "Reorder now and you won't have to go without",
    "surprise_reward": "customers like you are the reason we do what we do",
    "ugc_request": "We'd love to see your order",
    "winback_offer": "we'd love to show you what's new",
    "winback_values": "We don't often write about ourselves",
    "winback_goodbye": "we don't want to fill your inbox",
}


class Tags(HTMLParser):
    """The elements of a document (attributes entities decoded) and its <style> text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {key: value or "" for key, value in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)

    @property
    def images(self) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.elements if tag == "img"]

    @property
    def anchors(self) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.elements if tag == "a" and attrs.get("href")]

    @property
    def links(self) -> list[str]:
        return [anchor["href"] for anchor in self.anchors]

    def with_class(self, name: str, tag: str | None = None) -> list[dict[str, str]]:
        return [
            attrs
            for element, attrs in self.elements
            if name in attrs.get("class", "").split() and tag in (None, element)
        ]


def tags(html: str) -> Tags:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser


def outside_at_rules(css: str) -> str:
    """A stylesheet without its @media blocks."""
    kept, depth, inside = [], 0, False
    for char in css:
        if char == "@" and depth == 0:
            inside = True
        if not inside:
            kept.append(char)
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            inside = depth > 0
    return "".join(kept)


def without_preheader(html: str) -> str:
    return re.sub(r'<div style="display:none.*?</div>', "", html, count=1, flags=re.S)


def render(name: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """Subject, text and HTML as app.mail.render.message makes them: written in the context's
    language, the HTML given the one-line subject and its styles inlined."""
    with i18n.writing_in(context["lang"]):
        subject = environment.get_template(f"email/{name}.subject.txt").render(context)
        full = {**context, "subject": " ".join(subject.split())}
        text = environment.get_template(f"email/{name}.txt").render(full)
        html = environment.get_template(f"email/{name}.html").render(full)
    return subject, text, INLINER.inline(html)


def brand(*, extras: bool = False) -> dict[str, Any]:
    """The shop as app.mail.render.brand gives it to templates: every key, and with `extras` a
    logo, the ways to reach the shop, social links and a postal address."""
    return {
        "name": SHOP_NAME,
        "logo_url": "https://cdn.example/logo.png" if extras else None,
        "accent": ACCENT,
        "accent_text": "#ffffff",
        "phone": "+44 20 7946 0001" if extras else None,
        "email": "help@fern.example" if extras else None,
        "chat_url": "https://fern.example/chat?a=1&b=2" if extras else None,
        "social": [
            {"name": "Instagram", "url": "https://instagram.example/fern"},
            {"name": "Tiktok", "url": "https://tiktok.example/@fern"},
        ]
        if extras
        else [],
        "address_lines": ["1 Mill Lane", "Bristol <BS1>"] if extras else [],
    }


def brand_links(context: dict[str, Any]) -> set[str]:
    """The links the base template adds for the shop: contact ways and social networks."""
    shop = context["brand"]
    found = {network["url"] for network in shop["social"]}
    if shop["phone"]:
        found.add("tel:" + shop["phone"].replace(" ", ""))
    if shop["email"]:
        found.add("mailto:" + shop["email"])
    if shop["chat_url"]:
        found.add(shop["chat_url"])
    return found


def common(*, optional: bool, transactional: bool = False) -> dict[str, Any]:
    return {
        "lang": "en",
        "brand": brand(extras=optional),
        "intro": None,
        "shop_name": SHOP_NAME,
        "shop_url": "https://rebound.test/c/shop?s=1&t=abc",
        "first_name": SCRIPT if optional else None,
        "unsubscribe_url": "https://rebound.test/u/token?a=1&b=2",
        "transactional": transactional,
        "step": 1,
    }


def cart_context(step: int, *, optional: bool) -> dict[str, Any]:
    return {
        **common(optional=optional),
        "step": step,
        "items": [
            {
                "title": BOLD,
                "variant_title": "Large" if optional else None,
                "quantity": 2,
                "price": "$12.00",
                "line_total": "$24.00",
                "image_url": "https://cdn.example/c0.jpg" if optional else None,
                "image_alt": "Photo of a mug",
                "sold_out": optional,
                "gone": False,
            },
            {
                "title": "Teapot",
                "variant_title": None,
                "quantity": 1,
                "price": "$30.00",
                "line_total": "$30.00",
                "image_url": "https://cdn.example/c1.jpg",
                "image_alt": "Photo of a teapot",
                "sold_out": False,
                "gone": optional,
            },
        ],
        "item_count": 3,
        "subtotal": "$54.00",
        "total": "$59.00",
        "restore_url": "https://rebound.test/r/tok?s=1&t=abc",
        "offer": {"headline": "10% off your order", "code": "COMEBACK-4X", "until": "1 May 2027"}
        if optional
        else None,
        "kept_until": "30 November 2026" if optional else None,
    }


def item(n: int, *, optional: bool) -> dict[str, Any]:
    return {
        "title": BOLD if n == 0 else f"Linen apron {n}",
        "variant_title": "Large / Sage" if optional else None,
        "quantity": n + 1,
        "image_url": f"https://cdn.example/{n}.jpg" if optional else None,
        "image_alt": f"Photo of item {n}",
        "product_url": f"https://rebound.test/c/p{n}?x=1&y=2" if optional else None,
    }


def options(count: int) -> list[dict[str, str]]:
    return [
        {
            "label": "<b>Citrus</b> & herbs" if n == 0 else f"Scent {n}",
            "url": f"https://rebound.test/pref/tok/{n}?a=1&b=2",
        }
        for n in range(count)
    ]


def step_context(name: str, *, optional: bool) -> dict[str, Any]:
    """The keys only one template gets."""
    if name == "preference_question":
        return {"question": {"text": QUESTION_TEXT, "options": options(6 if optional else 2)}}
    if name == "replenishment":
        return {
            "reorder_url": "https://rebound.test/c/reorder?s=1&t=abc",
            "runs_out_on": "14 December 2026",
        }
    if name == "surprise_reward":
        return {
            "order_count": 5,
            "offer": {"headline": "20% off your order", "code": "THANKS-8K1", "until": "1 May 2027"}
            if optional
            else None,
        }
    return {}


def order_context(
    name: str, *, optional: bool, transactional: bool, referred: bool = False
) -> dict[str, Any]:
    tracking: list[dict[str, Any]] = []
    if optional:
        tracking = [
            {
                "company": "DHL <Express>",
                "number": "JD0123",
                "url": "https://dhl.example/t?n=1&a=b",
            },
            {"company": None, "number": "ZX99", "url": None},
            {"company": None, "number": None, "url": "https://post.example/t/2"},
            {"company": "Royal Mail", "number": None, "url": None},
        ]
    return {
        **common(optional=optional, transactional=transactional),
        "order": {"name": "#1001", "total": "$42.00", "placed_on": "23 November 2026"},
        "items": [item(n, optional=optional) for n in range(3)],
        "tracking": tracking,
        "delivered": optional,
        "review_url": "https://rebound.test/c/review?o=1&p=2" if optional else None,
        "nps_links": [
            {"score": score, "url": f"https://rebound.test/nps/tok?score={score}&s=x"}
            for score in range(11)
        ]
        if name == "nps_survey"
        else [],
        "recommendations": [
            {
                "title": BOLD if n == 0 else f"Oak board {n}",
                "price": "$18.00" if optional else None,
                "image_url": f"https://cdn.example/r{n}.jpg" if optional else None,
                "image_alt": f"Photo of recommendation {n}",
                "url": f"https://rebound.test/c/r{n}?a=1&b=2",
            }
            for n in range(3)
        ]
        if name == "cross_sell"
        else [],
        "care_text": "Wash at 30 °C <gently>.\r\n\r\n  Dry flat & away from heat.\n"
        if optional
        else None,
        "referral": {"text": REFERRAL_TEXT, "url": "https://rebound.test/c/refer?s=1&t=abc"}
        if referred
        else None,
        **step_context(name, optional=optional),
    }


def winback_context(segment: str, *, optional: bool) -> dict[str, Any]:
    return {
        **common(optional=optional),
        "segment": segment,
        "offer": {"headline": "15% off your order", "code": "MISSYOU-7Q2", "until": "1 May 2027"}
        if optional
        else None,
        "stay_url": "https://rebound.test/stay/tok?a=1&b=2" if optional else None,
        "last_order_on": "2 March 2026" if optional else None,
    }


def alert_context(*, optional: bool) -> dict[str, Any]:
    return {
        "lang": "en",
        "brand": brand(extras=optional),
        "shop_name": SHOP_NAME,
        "shop_url": "https://shop.example",
        "customer": {
            "name": SCRIPT if optional else None,
            "email": "ana@example.com",
            "phone": "+44 20 7946 0000" if optional else None,
            "phone_url": "tel:+442079460000" if optional else None,
        },
        "items": [
            {
                "title": BOLD,
                "variant_title": "Large" if optional else None,
                "quantity": 2,
                "price": "$250.00",
                "line_total": "$500.00",
                "image_url": "https://cdn.example/a.jpg" if optional else None,
                "image_alt": "Photo of a mug",
                "sold_out": optional,
                "gone": False,
            },
            {
                "title": "Teapot",
                "variant_title": None,
                "quantity": 1,
                "price": "$90.00",
                "line_total": "$90.00",
                "image_url": "https://cdn.example/b.jpg",
                "image_alt": "Photo of a teapot",
                "sold_out": False,
                "gone": True,
            },
        ],
        "total": "$590.00",
        "started_on": "23 November 2026, 14:05",
        "reach_out_url": "mailto:ana@example.com?subject=Your%20cart&body=Hi",
        "unsubscribe_url": "https://rebound.test/u/x",
    }


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(id, template, context) for every template and combination of optional values."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for step, optional in itertools.product((0, 1, 2), (False, True)):
        found.append(
            (
                f"abandoned_cart-{step}-{'set' if optional else 'none'}",
                "abandoned_cart",
                cart_context(step, optional=optional),
            )
        )
    for name, optional, transactional, referred in itertools.product(
        ORDER_TEMPLATES, (False, True), (False, True), (False, True)
    ):
        context = order_context(
            name, optional=optional, transactional=transactional, referred=referred
        )
        kind = "transactional" if transactional else "marketing"
        parts = [name, "set" if optional else "none", kind, "referral" if referred else ""]
        found.append(("-".join(filter(None, parts)), name, context))
    for name, segment, optional in itertools.product(WINBACK_TEMPLATES, SEGMENTS, (False, True)):
        found.append(
            (
                f"{name}-{segment}-{'set' if optional else 'none'}",
                name,
                winback_context(segment, optional=optional),
            )
        )
    for optional in (False, True):
        found.append(
            (
                f"internal_alert-{'set' if optional else 'none'}",
                "internal_alert",
                alert_context(optional=optional),
            )
        )
    return found


CASES = [(name, context) for _, name, context in cases()]
IDS = [case_id for case_id, _, _ in cases()]


@pytest.mark.parametrize(("name", "context"), CASES, ids=IDS)
def test_renders_safely(name: str, context: dict[str, Any]) -> None:
    subject, text, html = render(name, context)

    assert subject and "\n" not in subject and "\r" not in subject
    assert subject == subject.strip() and "  " not in subject
    assert len(html.encode()) < GMAIL_CLIP
    assert '<html lang="en">' in html

    # Customer- and merchant-controlled strings are escaped in HTML, left alone in text.
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "Fern &amp; Moss" in html and "Fern & Moss" in text
    assert "&amp;" not in text and "&lt;" not in text
    if context.get("first_name") or context.get("customer", {}).get("name"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert SCRIPT in text
    if name in SHOWS_ITEMS or name == "internal_alert":
        assert "&lt;b&gt;Bold&lt;/b&gt; mug" in html
        assert BOLD in text
    if context.get("referral"):
        assert "15% off &lt;i&gt;their&lt;/i&gt; first order &amp; get $10." in html
        assert REFERRAL_TEXT in text
    if name == "preference_question":
        assert "Which &lt;em&gt;scents&lt;/em&gt;" in html and "<em>" not in html
        assert "&lt;b&gt;Citrus&lt;/b&gt; &amp; herbs" in html
        assert QUESTION_TEXT in text and "<b>Citrus</b> & herbs" in text
    assert "\n\n\n" not in text

    parsed = tags(html)
    assert all(image.get("alt") for image in parsed.images)
    assert all(link.startswith(("https://", "mailto:", "tel:")) for link in parsed.links)
    # One stylesheet, inlined: only the @media rules stay in a <style> tag.
    assert "<link" not in html and len(parsed.styles) == 1
    assert "@media" in parsed.styles[0] and not outside_at_rules(parsed.styles[0]).strip()
    # Buttons and links take the shop's accent colour from the classes, never a fixed one.
    body = html[html.index("</style>") :]
    assert DEFAULT_ACCENT not in body
    buttons = parsed.with_class("btn", "a") + parsed.with_class("btn-small", "a")
    assert all(f"background: {ACCENT}" in button["style"] for button in buttons)
    assert all("color: #ffffff" in button["style"] for button in buttons)
    assert all(f"color: {ACCENT}" in link["style"] for link in parsed.with_class("link", "a"))
    assert all(f"2px dashed {ACCENT}" in offer["style"] for offer in parsed.with_class("offer"))


@pytest.mark.parametrize(("name", "context"), CASES, ids=IDS)
def test_links_reach_both_parts(name: str, context: dict[str, Any]) -> None:
    _, text, html = render(name, context)
    links = set(tags(html).links)
    if name == "internal_alert":
        expected = {context["reach_out_url"]}
    else:
        expected = {context["unsubscribe_url"]}
    if name == "abandoned_cart":
        expected.add(context["restore_url"])
    if name in SHOP_BUTTON or (name in REVIEW_BUTTON and not context["review_url"]):
        expected.add(context["shop_url"])
    if name == "shipping_notice":
        expected |= {parcel["url"] for parcel in context["tracking"] if parcel["url"]}
    if name in REVIEW_BUTTON and context["review_url"]:
        expected.add(context["review_url"])
    if name == "cross_sell":
        expected |= {product["url"] for product in context["recommendations"]}
    if name == "nps_survey":
        expected |= {link["url"] for link in context["nps_links"]}
    if name == "winback_goodbye" and context["stay_url"]:
        expected.add(context["stay_url"])
    if name == "preference_question":
        expected |= {option["url"] for option in context["question"]["options"]}
    if name == "replenishment":
        expected.add(context["reorder_url"])
    if context.get("referral"):
        expected.add(context["referral"]["url"])
    # The base footer carries the unsubscribe link; the text part has it in its own footer.
    assert expected - {context["unsubscribe_url"]} <= links
    assert all(url in text for url in expected)


def test_order_images_have_their_alt_text() -> None:
    _, _, html = render("thank_you", order_context("thank_you", optional=True, transactional=True))
    alts = [image.get("alt") for image in tags(html).images]
    assert alts == [
        SHOP_NAME,
        "Photo of item 0",
        "Photo of item 1",
        "Photo of item 2",
    ]  # logo first


@pytest.mark.parametrize("optional", [False, True])
def test_nps_survey_has_eleven_score_links(optional: bool) -> None:
    context = order_context("nps_survey", optional=optional, transactional=False)
    _, text, html = render("nps_survey", context)
    scores = [link for link in tags(html).links if "/nps/" in link]
    assert scores == [link["url"] for link in context["nps_links"]]
    assert len(scores) == 11
    assert f"How likely are you to recommend {SHOP_NAME.replace('&', '&amp;')} to a friend?" in html
    assert "Not likely" in html and "Very likely" in html
    assert sum(link["url"] in text for link in context["nps_links"]) == 11
    assert "0 (Not likely): " in text and "10 (Very likely): " in text


@pytest.mark.parametrize("segment", SEGMENTS)
def test_goodbye_offers_staying_and_leaving_in_the_body(segment: str) -> None:
    context = winback_context(segment, optional=True)
    _, text, html = render("winback_goodbye", context)
    links = tags(html).links
    assert context["stay_url"] in links
    # In the body, not only in the footer.
    assert links.count(context["unsubscribe_url"]) >= 2
    assert "Keep me on the list" in html and "Keep me on the list" in text
    assert context["stay_url"] in text and context["unsubscribe_url"] in text


@pytest.mark.parametrize("segment", SEGMENTS)
def test_winback_offer_speaks_to_each_segment(segment: str) -> None:
    subject, text, html = render("winback_offer", winback_context(segment, optional=True))
    vip = "one of our best customers"
    assert (vip in html) == (segment == "top") and (vip in text) == (segment == "top")
    assert ("see what's new" in subject) == (segment == "one_time")
    assert "MISSYOU-7Q2" in html and "MISSYOU-7Q2" in text and "1 May 2027" in html
    _, text, html = render("winback_offer", winback_context(segment, optional=False))
    assert "MISSYOU" not in html and "Use code" not in text


def test_shipping_notice_without_tracking_says_so() -> None:
    context = order_context("shipping_notice", optional=False, transactional=True)
    _, text, html = render("shipping_notice", context)
    assert "Tracking isn't available" in html and "Tracking isn't available" in text
    assert "Track your parcel" not in html

    context = order_context("shipping_notice", optional=True, transactional=True)
    _, text, html = render("shipping_notice", context)
    assert html.count("Track your parcel") == 2 and text.count("Track your parcel") == 2
    assert "DHL &lt;Express&gt;" in html and "JD0123" in text and "4 parcels" in html


def test_care_guide_uses_the_merchant_copy_or_a_generic_one() -> None:
    _, text, html = render(
        "care_guide", order_context("care_guide", optional=True, transactional=False)
    )
    assert "Wash at 30 °C &lt;gently&gt;." in html and "Dry flat &amp; away from heat." in html
    assert "Wash at 30 °C <gently>.\nDry flat & away from heat.\n" in text
    assert "care labels" not in text
    _, text, html = render(
        "care_guide", order_context("care_guide", optional=False, transactional=False)
    )
    assert "care labels" in html and "care labels" in text


def test_review_request_falls_back_to_the_store() -> None:
    context = order_context("review_request", optional=False, transactional=False)
    _, _, html = render("review_request", context)
    assert context["shop_url"] in tags(html).links
    assert "Write a review" in html and "photo" in html


def test_cross_sell_without_picks_still_sends_to_the_store() -> None:
    context = order_context("cross_sell", optional=True, transactional=False)
    _, text, html = render("cross_sell", {**context, "recommendations": []})
    assert context["shop_url"] in tags(html).links and context["shop_url"] in text


def test_html_stays_under_the_clip_with_a_big_order() -> None:
    context = order_context("thank_you", optional=True, transactional=True)
    context["items"] = [item(n, optional=True) for n in range(60)]
    for name in ("thank_you", "shipping_notice", "care_guide", "review_request"):
        _, _, html = render(name, context)
        assert len(html.encode()) < GMAIL_CLIP


@pytest.mark.parametrize("transactional", [False, True])
def test_text_footer_says_why(transactional: bool) -> None:
    context = order_context("shipping_notice", optional=True, transactional=transactional)
    _, text, _ = render("shipping_notice", context)
    assert "because you placed order #1001" in text
    assert ("Unsubscribe from marketing emails" in text) == transactional


def test_html_footer_says_why() -> None:
    context = order_context("shipping_notice", optional=True, transactional=True)
    _, _, html = render("shipping_notice", context)
    assert "because you placed order #1001" in html
    assert "Unsubscribe from marketing emails" in html
    assert "started a checkout" not in html


@pytest.mark.parametrize("score", range(11))
def test_nps_thanks_page(score: int) -> None:
    page = environment.get_template("pages/nps_thanks.html").render(
        shop_name=SHOP_NAME + SCRIPT, score=score
    )
    assert f"{score} out of 10" in page
    assert "Fern &amp; Moss&lt;script&gt;" in page and "<script>" not in page


def test_stayed_page() -> None:
    page = environment.get_template("pages/stayed.html").render(
        shop_name=SHOP_NAME, email="<b>ana</b>@example.com"
    )
    assert "still on the list" in page
    assert "&lt;b&gt;ana&lt;/b&gt;@example.com" in page and "Fern &amp; Moss" in page


@pytest.mark.parametrize("name", ORDER_TEMPLATES)
@pytest.mark.parametrize("optional", [False, True])
def test_referral_mention_only_when_set(name: str, optional: bool) -> None:
    context = order_context(name, optional=optional, transactional=False, referred=True)
    url = context["referral"]["url"]
    _, text, html = render(name, context)
    assert f"Know someone who'd love {SHOP_NAME.replace('&', '&amp;')}?" in html
    assert "&lt;i&gt;their&lt;/i&gt;" in html
    assert f"Know someone who'd love {SHOP_NAME}? {REFERRAL_TEXT}\nRefer a friend: {url}\n" in text
    # At the end of the body: the last link before the footer's (the shop's own contact and
    # social links, when it has them, come between).
    links = [link for link in tags(html).links if link not in brand_links(context)]
    assert links[-2:] == [url, context["unsubscribe_url"]]
    assert text.index(url) > max(text.rfind(link) for link in links[:-2])
    assert text.index(url) < text.index("\n--\n")
    assert "\n\n\n" not in text

    _, text, html = render(name, {**context, "referral": None})
    for part in (text, html):
        assert "Know someone" not in part and "Refer a friend" not in part
        assert url not in part and url.replace("&", "&amp;") not in part
    assert "\n\n\n" not in text


def test_referral_without_text_still_reads_well() -> None:
    context = order_context("thank_you", optional=True, transactional=True, referred=True)
    context["referral"] = {"text": "", "url": "https://rebound.test/c/refer?s=1"}
    _, text, html = render("thank_you", context)
    assert "Know someone who'd love Fern &amp; Moss?</strong><br>" in html
    assert "Know someone who'd love Fern & Moss?\nRefer a friend: https://rebound.test/" in text


@pytest.mark.parametrize("name", ORDER_TEMPLATES)
def test_order_footers_say_why(name: str) -> None:
    for transactional in (False, True):
        context = order_context(name, optional=True, transactional=transactional)
        _, text, html = render(name, context)
        assert "because you placed order #1001" in text and "because you placed order #1001" in html
        assert ("Unsubscribe from marketing emails" in text) == transactional
        assert ("Unsubscribe from marketing emails" in html) == transactional
        assert "started a checkout" not in html


@pytest.mark.parametrize("count", [2, 3, 6])
def test_preference_question_has_one_link_per_option(count: int) -> None:
    context = order_context("preference_question", optional=False, transactional=False)
    context["question"]["options"] = options(count)
    urls = [option["url"] for option in context["question"]["options"]]
    _, text, html = render("preference_question", context)
    parsed = tags(html)
    assert [link for link in parsed.links if link != context["unsubscribe_url"]] == urls
    # One outlined choice per option, in the shop's accent colour.
    choices = parsed.with_class("choice", "a")
    assert [choice["href"] for choice in choices] == urls
    assert all(f"border: 1px solid {ACCENT}" in choice["style"] for choice in choices)
    assert all(f"{option['label']}: {option['url']}\n" in text for option in options(count))
    assert sum(line.startswith(("<b>Citrus", "Scent ")) for line in text.splitlines()) == count
    assert (
        "One click on your answer saves it" in html and "One click on your answer saves it" in text
    )
    assert html.index("Which &lt;em&gt;scents") < html.index(urls[0].replace("&", "&amp;"))


def test_preference_question_with_a_referral_adds_only_that_link() -> None:
    context = order_context(
        "preference_question", optional=True, transactional=False, referred=True
    )
    links = tags(render("preference_question", context)[2]).links
    urls = [option["url"] for option in context["question"]["options"]]
    links = [link for link in links if link not in brand_links(context)]
    assert links == [*urls, context["referral"]["url"], context["unsubscribe_url"]]


@pytest.mark.parametrize("optional", [False, True])
def test_replenishment_reorders_in_one_click(optional: bool) -> None:
    context = order_context("replenishment", optional=optional, transactional=False)
    context["items"] = context["items"][:2]
    subject, text, html = render("replenishment", context)
    assert "running low?" in subject.lower()
    assert "Running low?" in html and "14 December 2026" in html and "14 December 2026" in text
    reorder = context["reorder_url"].replace("&", "&amp;")
    button = next(a for a in tags(html).anchors if a["href"] == context["reorder_url"])
    assert button["class"] == "btn" and f"background: {ACCENT}" in button["style"]
    assert ">Reorder</a>" in html
    # The button comes before the list, up where it is seen first.
    assert html.index(reorder) < html.index("&lt;b&gt;Bold&lt;/b&gt; mug")
    assert "Linen apron 1" in html and "Linen apron 2" not in html
    assert "Linen apron 1" in text and "Linen apron 2" not in text
    assert "Reorder in one click: your cart is filled with these items" in text
    assert context["reorder_url"] in text


def test_replenishment_images_have_their_alt_text() -> None:
    context = order_context("replenishment", optional=True, transactional=False)
    _, _, html = render("replenishment", context)
    alts = [image.get("alt") for image in tags(html).images]
    assert alts == [
        SHOP_NAME,
        "Photo of item 0",
        "Photo of item 1",
        "Photo of item 2",
    ]  # logo first


def test_replenishment_without_a_date() -> None:
    context = order_context("replenishment", optional=True, transactional=False)
    _, text, html = render("replenishment", {**context, "runs_out_on": None})
    assert "None" not in html and "None" not in text
    assert "running low by now" in html and "running low by now" in text


def test_surprise_reward_with_a_code() -> None:
    context = order_context("surprise_reward", optional=True, transactional=False)
    subject, text, html = render("surprise_reward", context)
    assert "surprise" in subject
    assert "THANKS-8K1" in html and "THANKS-8K1" in text
    assert "20% off your order" in html and "1 May 2027" in html and "1 May 2027" in text
    assert "5 times" in html and "5 times" in text
    assert "no code" not in html


@pytest.mark.parametrize("order_count", [1, 2, 12])
def test_surprise_reward_without_a_code_is_a_heartfelt_thanks(order_count: int) -> None:
    context = order_context("surprise_reward", optional=False, transactional=False)
    context["order_count"] = order_count
    subject, text, html = render("surprise_reward", context)
    assert "thank-you" in subject and "surprise" not in subject
    assert "heartfelt thank-you" in html and "heartfelt thank-you" in text
    assert "code" not in text.replace("no code", "") and "THANKS" not in html
    assert (f"{order_count} times" in text) == (order_count > 1)
    assert context["shop_url"] in tags(html).links


@pytest.mark.parametrize("optional", [False, True])
def test_ugc_request_asks_for_photos(optional: bool) -> None:
    context = order_context("ugc_request", optional=optional, transactional=False)
    _, text, html = render("ugc_request", context)
    target = context["review_url"] or context["shop_url"]
    assert target in tags(html).links and target in text
    assert "photo" in html and "reply to this email" in html and "reply to this email" in text
    if optional:
        assert context["shop_url"] not in tags(html).links
    else:
        assert "on each item's page" in html and "on each item's page" in text


def test_ugc_request_images_have_their_alt_text() -> None:
    context = order_context("ugc_request", optional=True, transactional=False)
    _, _, html = render("ugc_request", context)
    alts = [image.get("alt") for image in tags(html).images]
    assert alts == [
        SHOP_NAME,
        "Photo of item 0",
        "Photo of item 1",
        "Photo of item 2",
    ]  # logo first


def test_new_order_emails_stay_under_the_clip_with_a_big_order() -> None:
    for name in ("replenishment", "ugc_request", "preference_question", "surprise_reward"):
        context = order_context(name, optional=True, transactional=False, referred=True)
        context["items"] = [item(n, optional=True) for n in range(60)]
        _, _, html = render(name, context)
        assert len(html.encode()) < GMAIL_CLIP


def test_preference_saved_page() -> None:
    page = environment.get_template("pages/preference_saved.html").render(
        shop_name=SHOP_NAME + SCRIPT, answer="<b>Citrus</b> & herbs"
    )
    assert "Thanks, we'll keep that in mind" in page
    assert "&lt;b&gt;Citrus&lt;/b&gt; &amp; herbs" in page and "<b>" not in page
    assert "Fern &amp; Moss&lt;script&gt;" in page and "<script>" not in page


def test_child_templates_write_no_styles_of_their_own() -> None:
    """Styles are written once, in base.html: the other templates only name its classes."""
    base = (TEMPLATES / "email" / "base.html").read_text()
    assert base.count("<style>") == 1 and "{{ brand.accent }}" in base
    children = [path for path in (TEMPLATES / "email").iterdir() if path.name != "base.html"]
    assert len(children) > 40
    for path in children:
        source = path.read_text()
        assert "style=" not in source and "<style" not in source, path.name
        assert not re.search(r"#[0-9a-fA-F]{3,6}\b", source), path.name
    # Every HTML email but the partials is laid out by the base template.
    for path in children:
        if path.suffix == ".html" and not path.name.startswith("_"):
            assert path.read_text().startswith('{% extends "email/base.html" %}'), path.name


@pytest.mark.parametrize("accent", [ACCENT, "#e8590c"])
def test_classes_become_inline_styles_in_the_brand_colour(accent: str) -> None:
    context = cart_context(0, optional=True)
    context["brand"] = {**brand(), "accent": accent, "accent_text": "#111111"}
    _, _, html = render("abandoned_cart", context)
    parsed = tags(html)
    restore = next(a for a in parsed.anchors if a["href"] == context["restore_url"])
    assert restore["class"] == "btn"
    assert f"background: {accent}" in restore["style"] and "color: #111111" in restore["style"]
    assert "padding: 14px 28px" in restore["style"]
    (offer,) = parsed.with_class("offer", "table")
    assert f"border: 2px dashed {accent}" in offer["style"]
    (code,) = parsed.with_class("code")
    assert "font-family: monospace" in code["style"]
    images = parsed.with_class("item-image", "td")
    assert images and all("border-bottom: 1px solid #e3e3e3" in td["style"] for td in images)
    assert all("width: 72px" in image["style"] for image in parsed.images)
    # The @media rules survive in the one <style> tag for the mail programs that honour them.
    (style,) = parsed.styles
    assert "@media only screen and (max-width: 620px)" in style
    assert "@media (prefers-color-scheme: dark)" in style
    assert ".btn { display: block !important; }" in style


def test_internal_alert_is_laid_out_by_the_base_without_customer_parts() -> None:
    context = alert_context(optional=True)
    _, text, html = render("internal_alert", context)
    parsed = tags(html)
    (button,) = parsed.with_class("btn", "a")
    assert button["href"] == context["reach_out_url"] and ">Email the customer</a>" in html
    assert f"background: {ACCENT}" in button["style"]
    assert "Internal alert for Fern &amp; Moss" in html and "Internal alert for Fern & Moss" in text
    # To the shop's own staff: no "questions?" block, social links or unsubscribe link.
    assert "Questions?" not in html and "Unsubscribe" not in html and "Unsubscribe" not in text
    assert not brand_links(context) & set(parsed.links)
    assert "High-value cart abandoned at Fern &amp; Moss: $590.00" in html
    assert "tel:+442079460000" in parsed.links and "+44 20 7946 0000</a>" in html
    assert "Phone: +44 20 7946 0000" in text


def test_internal_alert_shows_a_phone_it_cannot_dial_without_a_link() -> None:
    context = alert_context(optional=True)
    context["customer"] |= {"phone": "555-555-BILL", "phone_url": None}
    _, text, html = render("internal_alert", context)
    assert "555-555-BILL" in html and "tel:" not in html
    assert "Phone: 555-555-BILL" in text


@pytest.mark.parametrize(
    ("phone", "link"),
    [
        ("+44 20 7946 0000", "tel:+442079460000"),
        ("(555) 555-5555", "tel:5555555555"),
        ("070-123.45/67", "tel:0701234567"),
        ("555-555-BILL", None),  # letters would be dialled wrong
        ("+46 70 123 45 67 ext. 12", None),
        ("١٢٣٤٥٦٧", None),  # only ASCII digits reach the link
        ("+1", None),  # too short to be anyone's number
        ("tel:911;x=javascript:alert(1)", None),
        (None, None),
    ],
)
def test_the_alert_links_only_numbers_it_can_dial(phone: str | None, link: str | None) -> None:
    from app.mail.compose import tel_url

    assert tel_url(phone) == link


def test_the_alert_names_the_customer_in_full_from_the_parts_it_has() -> None:
    from app.mail.compose import full_name

    assert full_name("Ada", "Lovelace") == "Ada Lovelace"
    assert full_name(" Ada ", None) == "Ada" and full_name(None, "Lovelace") == "Lovelace"
    assert full_name(None, " ") is None


def test_internal_alert_has_no_phone_line_when_no_phone_is_known() -> None:
    _, text, html = render("internal_alert", alert_context(optional=False))
    assert "Phone" not in html and "Phone" not in text and "tel:" not in html


@pytest.mark.parametrize("extras", [False, True])
def test_logo_contact_social_and_address_only_when_set(extras: bool) -> None:
    context = order_context("thank_you", optional=False, transactional=True)
    context["brand"] = brand(extras=extras)
    _, text, html = render("thank_you", context)
    parsed = tags(html)
    assert ("Questions? We're happy to help." in html) == extras
    assert ("tel:+442079460001" in parsed.links) == extras
    assert ("mailto:help@fern.example" in parsed.links) == extras
    assert ("https://fern.example/chat?a=1&b=2" in parsed.links) == extras
    assert ("Chat with us" in html) == extras
    assert ('>Instagram</a> · <a href="https://tiktok.example/@fern"' in html) == extras
    assert ("Fern &amp; Moss, 1 Mill Lane, Bristol &lt;BS1&gt;" in html) == extras
    logos = [image for image in parsed.images if image["src"] == "https://cdn.example/logo.png"]
    assert len(logos) == int(extras) and all(logo["alt"] == SHOP_NAME for logo in logos)
    if extras:
        contact = [a for a in parsed.anchors if a["href"].startswith(("tel:", "mailto:"))]
        assert all(f"color: {ACCENT}" in link["style"] for link in contact)
    else:
        assert re.search(r'class="header"[^>]*>\s*Fern &amp; Moss\s*</td>', html)
    assert "None" not in html and "None" not in text


@pytest.mark.parametrize("name", CUSTOMER_TEMPLATES)
def test_intro_replaces_the_default_opening(name: str) -> None:
    if name == "abandoned_cart":
        context = cart_context(1, optional=False)
    elif name in WINBACK_TEMPLATES:
        context = winback_context("regular", optional=False)
    else:
        context = order_context(name, optional=False, transactional=False)
    opening = OPENINGS[name]

    for intro in (None, "", "  \n\t"):
        _, text, html = render(name, {**context, "intro": intro})
        assert opening in without_preheader(html) and opening in text

    _, text, html = render(name, {**context, "intro": INTRO})
    # Escaped, one paragraph a line, blank lines dropped, after the greeting.
    body = without_preheader(html)
    assert opening not in body and opening not in text
    assert "<b>" not in html
    first = re.search(r"<p[^>]*>Hej &lt;b&gt;Ana&lt;/b&gt; &amp; welcome back!</p>", body)
    second = re.search(r"<p[^>]*>We have news for you\.</p>", body)
    assert first and second and first.end() < second.start()
    assert body.index(">Hi") < first.start()
    # In text, as the merchant wrote it.
    assert INTRO.strip() in text and text.index("Hi") < text.index(INTRO.strip())
    assert "\n\n\n" not in text.replace(INTRO.strip(), "(intro)")


@pytest.mark.parametrize(("count", "words"), [(1, "1 item"), (3, "3 items")])
def test_item_count_is_singular_or_plural(count: int, words: str) -> None:
    context = {**cart_context(0, optional=False), "item_count": count}
    _, text, html = render("abandoned_cart", context)
    assert f"You left {words} in your cart. Pick up where you left off." in html
    assert f"You left {words} in your cart at Fern &amp; Moss." in html
    assert f"You left {words} in your cart at Fern & Moss." in text


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_email_renders_in_every_language(lang: str) -> None:
    """With the catalogs under locales/ as they are: no placeholder a translation misnamed, no
    template syntax left, the language in <html lang>."""
    for name, context in CASES:
        subject, text, html = render(name, {**context, "lang": lang})
        assert f'<html lang="{lang}">' in html
        for part in (subject, text, html):
            assert "%(" not in part and "{{" not in part and "{%" not in part


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Swedish from a catalog of this test's own (sv/LC_MESSAGES/messages.po in a temporary
    LOCALES) holding just the given translations, as translators would leave it halfway."""

    def write(translations: dict[Any, Any]) -> None:
        sv = Catalog(locale="sv", fuzzy=False)
        for msgid, msgstr in translations.items():
            sv.add(msgid, msgstr)
        folder = tmp_path / "sv" / "LC_MESSAGES"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "messages.po").open("wb") as po:
            write_po(po, sv)
        i18n.translations.cache_clear()

    monkeypatch.setattr(i18n, "LOCALES", tmp_path)
    i18n.translations.cache_clear()
    yield write
    i18n.translations.cache_clear()


def test_a_missing_translation_falls_back_to_english(catalog: Callable[..., None]) -> None:
    catalog({})
    for name, context in CASES:
        english = render(name, context)
        with i18n.writing_in("sv"):
            assert i18n.current() == "sv"
            subject, text, html = render(name, {**context, "lang": "sv"})
        assert (subject, text) == english[:2], name
        assert html == english[2].replace('<html lang="en">', '<html lang="sv">'), name


def test_a_partial_catalog_translates_what_it_has(catalog: Callable[..., None]) -> None:
    catalog(
        {
            "Hi %(first_name)s,": "Hej %(first_name)s,",
            "Return to your cart": "Tillbaka till varukorgen",
            (
                "You left %(count)s item in your cart at %(shop_name)s. We saved it for you.",
                "You left %(count)s items in your cart at %(shop_name)s. We saved them for you.",
            ): (
                "Du lämnade %(count)s vara i varukorgen hos %(shop_name)s.",
                "Du lämnade %(count)s varor i varukorgen hos %(shop_name)s.",
            ),
        }
    )
    context = {**cart_context(0, optional=True), "lang": "sv"}
    subject, text, html = render("abandoned_cart", context)
    assert '<html lang="sv">' in html
    # Translated, with the customer's and merchant's data still escaped in HTML.
    assert "Hej &lt;script&gt;alert(1)&lt;/script&gt;," in html and f"Hej {SCRIPT}," in text
    assert "Du lämnade 3 varor i varukorgen hos Fern &amp; Moss." in html
    assert "Du lämnade 3 varor i varukorgen hos Fern & Moss." in text
    assert ">Tillbaka till varukorgen</a>" in html and "Tillbaka till varukorgen:\n" in text
    # What the catalog lacks is English.
    assert subject == f"{SCRIPT}, your items are waiting at Fern & Moss"
    assert "Subtotal" in html and "Subtotal: $54.00" in text
    assert "We'll keep your cart until 30 November 2026." in text

    _, text, _ = render("abandoned_cart", {**context, "item_count": 1})
    assert "Du lämnade 1 vara i varukorgen hos Fern & Moss." in text


def test_babel_extracts_templates_and_python_into_the_catalogs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """babel.cfg finds the strings of every template and of app/mail/compose.py, and the
    catalogs under locales/ hold them all. When this fails, extract and update again:
    pybabel extract -F babel.cfg -k _ -k gettext_ -k ngettext_:1,2 -k N_ -o locales/messages.pot .
    pybabel update -i locales/messages.pot -d locales"""
    monkeypatch.chdir(ROOT)
    pot = tmp_path / "messages.pot"
    CommandLineInterface().run(
        ["pybabel", "-q", "extract", "-F", "babel.cfg", "-k", "_", "-k", "gettext_"]
        + ["-k", "ngettext_:1,2", "-k", "N_", "-o", str(pot), "."]
    )
    with pot.open("rb") as source:
        extracted = {message.id for message in read_po(source) if message.id}
    assert "Return to your cart" in extracted  # templates/email/abandoned_cart.html
    assert "Hi %(first_name)s," in extracted  # .txt and .html
    assert "Free shipping on your order" in extracted  # app/mail/compose.py
    assert (
        "You left %(count)s item in your cart. Pick up where you left off.",
        "You left %(count)s items in your cart. Pick up where you left off.",
    ) in extracted
    assert not [msgid for msgid in extracted if "\n" in str(msgid) or "<" in str(msgid)]
    for lang in i18n.LANGUAGES:
        path = ROOT / "locales" / lang / "LC_MESSAGES" / "messages.po"
        if lang == i18n.DEFAULT:
            assert not path.exists()
            continue
        with path.open("rb") as source:
            known = {message.id for message in read_po(source, locale=lang) if message.id}
        assert extracted <= known, f"{lang}: {sorted(map(str, extracted - known))[:5]}"


def test_a_merchant_subject_greets_a_customer_without_a_name_without_none() -> None:
    from app.mail.render import merchant_text

    subject = "{{ first_name }}, your cart is waiting"
    assert merchant_text.from_string(subject).render(first_name=None) == ", your cart is waiting"
    assert merchant_text.from_string(subject).render(first_name="Ana").startswith("Ana, ")


@pytest.mark.parametrize(("name", "context"), CASES, ids=IDS)
def test_the_text_part_says_how_to_reach_the_shop_when_the_html_does(
    name: str, context: dict[str, Any]
) -> None:
    if name == "internal_alert":
        return  # written to the shop's own staff
    _, text, _ = render(name, context)
    shop = context["brand"]
    if shop["phone"]:
        assert f"Call: {shop['phone']}" in text
        assert f"Email: {shop['email']}" in text and f"Chat with us: {shop['chat_url']}" in text
    else:
        assert "Questions? We're happy to help." not in text


def test_dates_in_emails_are_the_shops_day_not_utcs() -> None:
    from datetime import UTC, datetime

    from babel import Locale

    from app.mail.compose import _date

    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert _date(late, Locale("en"), "Europe/Stockholm") == "March 2, 2026"
    assert _date(late, Locale("en"), None) == "March 1, 2026"
    assert _date(late, Locale("en"), "Not/AZone") == "March 1, 2026"
