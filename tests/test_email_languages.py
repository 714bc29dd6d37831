"""Each customer reads their own language: Shopify's customer_locale, else the shop's; an
unknown language falls back to English, never to a broken email. Merchants write their own
subject and opening per language, checked before they are kept."""

import re
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage

import httpx
import pytest

from app import security
from app.db import sessionmaker
from app.links import urls
from app.mail import i18n
from app.mail.repository import is_unsubscribed
from app.mail.transport import SmtpTransport
from flows.service import FlowSettingError
from integrations.shopify.standin import ShopifyStandin
from tests.conftest import Mailbox
from tests.test_flows import (
    ADA,
    BO,
    SWEATER,
    apply,
    change_shop,
    checkout,
    edit_flow,
    now,
    only,
    open_shop,
    order,
    run,
    shipped,
    switch_off,
    text,
)

CARL = "carl@example.com"
APP = "https://rebound.test"


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


# --- the pages links lead to -------------------------------------------------------------------

LINK = re.compile(r"https://rebound\.test(/(?:u|nps)/[A-Za-z0-9_.-]+(?:/\d+)?)")
# A phrase of each page in each language, from the catalogs' translations.
ASK = {"sv": "Vill du avregistrera dig från Nordic Wool?", "ru": "Отписаться от рассылки магазина"}
DONE = {"sv": "Du är avregistrerad", "ru": "Вы отписались от рассылки"}
THANKS = {"sv": "Du gav Nordic Wool 9 av 10.", "ru": "Вы оценили магазин Nordic Wool на 9 из 10."}


def links(message: EmailMessage, kind: str) -> list[str]:
    return [path for path in LINK.findall(text(message)) if path.startswith(f"/{kind}/")]


@pytest.mark.parametrize(("locale", "lang"), [("sv-SE", "sv"), ("ru-RU", "ru")])
async def test_the_unsubscribe_pages_speak_the_language_of_the_email(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str, server: httpx.AsyncClient,
    locale: str, lang: str,
) -> None:  # fmt: skip
    await reminders(standin, smtp_url, locale)
    (path,) = set(links(only_message(mailbox), "u"))

    asked = await server.get(path)
    assert asked.status_code == 200 and f'<html lang="{lang}">' in asked.text
    assert ASK[lang] in asked.text and "Unsubscribe from" not in asked.text
    done = await server.post(path)
    assert done.status_code == 200 and f'<html lang="{lang}">' in done.text
    assert DONE[lang] in done.text and ADA in done.text


@pytest.mark.parametrize(("locale", "lang"), [("sv-SE", "sv"), ("ru", "ru")])
async def test_the_nps_thanks_page_speaks_the_language_of_the_email(
    standin: ShopifyStandin, mailbox: Mailbox, smtp_url: str, server: httpx.AsyncClient,
    locale: str, lang: str,
) -> None:  # fmt: skip
    shop = await open_shop(standin)
    await switch_off(shop, "post_purchase", "shipping_notice", "care", "review")
    placed_at = now() - timedelta(days=20)
    delivered_at = placed_at + timedelta(days=2)
    await apply(
        shop,
        replace(order("5001", ADA, [SWEATER], placed_at=placed_at), locale=locale),
        shipped("5001", placed_at + timedelta(days=1), delivered_at=delivered_at),
    )
    assert await run(await only("post_purchase", ADA), "nps", SmtpTransport(smtp_url)) == "sent"
    nine = next(path for path in links(only_message(mailbox), "nps") if path.endswith("/9"))

    answered = await server.get(nine)
    assert answered.status_code == 200 and f'<html lang="{lang}">' in answered.text
    assert THANKS[lang] in answered.text and "out of 10" not in answered.text
    # A score off the scale, from a good token: the error page in the email's language too.
    wrong = await server.get(nine.removesuffix("/9") + "/11")
    assert wrong.status_code == 404 and f'<html lang="{lang}">' in wrong.text


@pytest.mark.parametrize(("shop_locale", "lang", "phrase"), [
    ("de-DE", "de", "Von Nordic Wool abmelden?"), (None, "en", "Unsubscribe from Nordic Wool?"),
])  # fmt: skip
async def test_a_link_from_before_links_carried_a_language_speaks_the_shops_then_english(
    standin: ShopifyStandin, server: httpx.AsyncClient,
    shop_locale: str | None, lang: str, phrase: str,
) -> None:  # fmt: skip
    shop = await open_shop(standin)
    await change_shop(shop, locale=shop_locale)
    assert shop.id is not None
    old = security.sign(urls.UNSUBSCRIBE, {"shop": shop.id, "email": ADA})

    asked = await server.get(f"/u/{old}")
    assert asked.status_code == 200 and f'<html lang="{lang}">' in asked.text
    assert phrase in asked.text
    done = await server.post(f"/u/{old}")
    assert done.status_code == 200 and f'<html lang="{lang}">' in done.text
    async with sessionmaker()() as session:
        assert await is_unsubscribed(session, shop.id, ADA)


async def test_forged_links_are_404_pages_in_the_browsers_language(
    standin: ShopifyStandin, server: httpx.AsyncClient
) -> None:
    shop = await open_shop(standin)
    assert shop.id is not None
    good = urls.unsubscribe_token(shop.id, ADA, lang="sv")
    forged = security.sign(urls.UNSUBSCRIBE, {"shop": shop.id, "email": BO, "lang": "sv"})
    forged = forged.split(".")[0] + "." + good.split(".")[1]  # another payload, a real MAC

    for method in ("GET", "POST"):
        page = await server.request(method, f"/u/{forged}")
        assert page.status_code == 404 and '<html lang="en">' in page.text
        assert "This link doesn't work" in page.text
    nps = await server.get(f"/nps/{forged}/9", headers={"Accept-Language": "fr, nb;q=0.8"})
    assert nps.status_code == 404 and '<html lang="nb">' in nps.text
    assert "Denne lenken virker ikke" in nps.text
    async with sessionmaker()() as session:
        assert not await is_unsubscribed(session, shop.id, BO)


async def test_a_signed_link_whose_send_is_gone_is_a_404_in_its_own_language(
    standin: ShopifyStandin, server: httpx.AsyncClient
) -> None:
    shop = await open_shop(standin)
    assert shop.id is not None
    gone = await server.get(urls.restore_url(shop.id, 999, lang="ru").removeprefix(APP))
    assert gone.status_code == 404 and '<html lang="ru">' in gone.text
    assert "Эта ссылка не работает" in gone.text


def only_message(mailbox: Mailbox) -> EmailMessage:
    (message,) = mailbox.messages
    return message
