"""Each customer reads their own language: Shopify's customer_locale, else the shop's; an
unknown language falls back to English, never to a broken email. Merchants write their own
subject and opening per language, checked before they are kept."""

import re
from dataclasses import replace
from email.message import EmailMessage

import pytest

from app.mail import i18n
from app.mail.transport import SmtpTransport
from flows.service import FlowSettingError
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import Mailbox
from tests.test_flows import ADA, BO, apply, checkout, edit_flow, only, open_shop, run, text

CARL = "carl@example.com"


def html(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def test_customer_locales_map_to_the_languages_rebound_writes() -> None:
    assert i18n.language("sv-SE") == "sv" and i18n.language("nb_NO") == "nb"
    assert i18n.language("no") == "nb" and i18n.language("IS") == "is"
    assert i18n.language("fr-FR", "de") == "de"  # the shop's language when the customer's isn't
    assert i18n.language(None, "pt-BR") == "en"


async def reminders(standin: ShopifyStandin, smtp_url: str, *locales: str) -> None:
    shop = await open_shop(standin)
    for number, (email, locale) in enumerate(zip((ADA, BO, CARL), locales, strict=False)):
        await apply(shop, replace(checkout(f"tok{number}", email), locale=locale))
    for email in (ADA, BO, CARL)[: len(locales)]:
        assert await run(await only("abandoned_cart", email), 0, SmtpTransport(smtp_url)) == "sent"


async def test_each_customer_gets_their_language_and_an_unknown_one_english(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    await reminders(standin, smtp_url, "sv-SE", "de", "fr")
    swedish, german, french = (
        next(m for m in mailbox.messages if m["To"] == email) for email in (ADA, BO, CARL)
    )

    assert '<html lang="sv">' in html(swedish) and '<html lang="de">' in html(german)
    assert '<html lang="en">' in html(french)
    english_subject = french["Subject"]
    assert "waiting" in english_subject.lower() or "cart" in english_subject.lower()
    assert swedish["Subject"] != english_subject and german["Subject"] != english_subject
    # Money in the customer's locale: a decimal comma in Swedish and German.
    lines = [next(line for line in text(m).splitlines() if "Merino" in line)
             for m in (swedish, german, french)]  # fmt: skip
    assert "120,00" in lines[0] and "120,00" in lines[1] and "120.00" in lines[2], lines


async def test_the_merchants_own_swedish_words_go_to_swedish_customers_only(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str
) -> None:
    shop = await open_shop(standin)
    await edit_flow(
        shop, "set_step_words", "abandoned_cart", 1, "sv",
        "{{ first_name }}, din varukorg väntar", "Vi sparade allt åt dig.\nVälkommen tillbaka!",
        "Fri frakt <i>hela</i> veckan",
    )  # fmt: skip
    await apply(shop, replace(checkout("tok-sv", ADA), locale="sv"))
    await apply(shop, replace(checkout("tok-en", BO), locale="en"))
    for email in (ADA, BO):
        assert await run(await only("abandoned_cart", email), 0, SmtpTransport(smtp_url)) == "sent"

    swedish = next(m for m in mailbox.messages if m["To"] == ADA)
    english = next(m for m in mailbox.messages if m["To"] == BO)
    assert swedish["Subject"] == "Ada, din varukorg väntar"
    assert re.search(r"<p[^>]*>Vi sparade allt åt dig\.</p>", html(swedish))
    assert re.search(r"<p[^>]*>Välkommen tillbaka!</p>", html(swedish))  # a paragraph a line
    # The preview line inboxes show, escaped like every merchant word, in place of the default.
    preheader = re.search(r'<div style="display:none[^>]*>([^<]*?)\u034f', html(swedish))
    assert preheader and preheader.group(1) == "Fri frakt &lt;i&gt;hela&lt;/i&gt; veckan"
    assert "Fri frakt" not in html(english) and "Pick up where you left off" in html(english)
    assert "Vi sparade" not in text(english) and english["Subject"] != swedish["Subject"]


@pytest.mark.parametrize(
    ("lang", "subject", "message"),
    [
        ("fr", "Bonjour", "overrides are for en, sv, de, nb, ru, is"),
        ("sv", "{{ order.secret }}", "may use {{ first_name }} and {{ shop_name }} only"),
        ("sv", "{{ ''.__class__ }}", "may use {{ first_name }} and {{ shop_name }} only"),
        ("sv", "x" * 201, "at most 200 characters"),
    ],
)
async def test_merchant_words_that_cannot_be_used_are_refused(
    standin: ShopifyStandin, lang: str, subject: str, message: str
) -> None:
    shop = await open_shop(standin)
    with pytest.raises(FlowSettingError, match=message.replace("{", r"\{").replace("}", r"\}")):
        await edit_flow(shop, "set_step_words", "abandoned_cart", 1, lang, subject, None)


@pytest.mark.parametrize("preheader", ["two\nlines", "x" * 151])
async def test_a_preheader_is_one_short_line(standin: ShopifyStandin, preheader: str) -> None:
    shop = await open_shop(standin)
    with pytest.raises(FlowSettingError, match="one line of at most 150 characters"):
        await edit_flow(shop, "set_step_words", "abandoned_cart", 1, "sv", None, None, preheader)


def test_a_language_without_a_catalog_entry_reads_english() -> None:
    with i18n.writing_in("is"):
        assert i18n.gettext_("A sentence no catalog has") == "A sentence no catalog has"
