"""The envelope of every email (app.mail.render._envelope) sets short ASCII headers and its
text parts without the email package's parser, for speed. It must come out as the email
package's own API makes it: these compare the bytes sent with a reference built by
EmailMessage's API, for ASCII and non-ASCII names and subjects, long headers and long lines."""

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import formataddr

import pytest

from app.mail import render
from app.mail.transport import wire_bytes
from app.shops.models import Shop

TEXT = "Hi Ana,\nyour cart is waiting.\r\nTotal: $10.00\n"
HTML = "<html><head></head><body><p>Wool Beanie — 24,50 €</p>\n<p>Hi</p></body></html>"
UNSUBSCRIBE = "https://rebound.example/u/" + "t" * 150


def _reference(shop: Shop, to: str, context: dict[str, object], text: str, html: str) -> bytes:
    """What the envelope made before: every header and part through the parser."""
    built = render._envelope(shop, to, context, text, html)
    sender = render.sender_address(shop)
    name = " ".join(str(context["brand"]["name"]).split())  # type: ignore[index]
    message = EmailMessage(policy=render.SMTP_POLICY)
    message["Subject"] = context["subject"]
    message["From"] = formataddr((name, sender))
    message["Organization"] = name
    message["To"] = to
    for header in ("Date", "Message-ID"):
        message[header] = built[header]
    if context.get("unsubscribe_url"):
        message["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    render.finish(message, str(context["brand"]["name"]), shop.domain)  # type: ignore[index]
    # set_content also writes MIME-Version into each part, which only the top level needs.
    boundary = re.escape(built.get_boundary() or "")
    reference = wire_bytes(message)
    reference = re.sub(
        rb"(?m)^(--=+\d+==\r\n(?:[^\r\n]+\r\n)*?)MIME-Version: 1.0\r\n", rb"\1", reference
    )
    ours = re.sub(boundary.encode(), message.get_boundary().encode(), wire_bytes(built))
    assert ours == reference
    return ours


@pytest.mark.parametrize(
    ("shop_name", "subject"),
    [
        ("Fern & Moss", "Your cart at Fern & Moss"),
        ('Jörg, "Laden"', "Dein Warenkorb wartet – komm zurück, bevor er weg ist"),
        ("Fern & Moss", "A subject line long enough that the email package folds it " * 2),
        ("店", "カートに商品が残っています"),
    ],
)
@pytest.mark.parametrize(
    ("text", "html"),
    [(TEXT, HTML), ("ascii only\n", "<p>ascii</p>"), ("x" * 1200 + "\n", "é" * 1200)],
)
@pytest.mark.parametrize(
    "to", ["ana@example.com", "o'brien+cart@mail.example.co.uk", "jörg@exämple.de", "a..b@x.io"]
)
def test_envelope_makes_what_the_email_package_makes(
    shop_name: str, subject: str, text: str, html: str, to: str
) -> None:
    shop = Shop(platform="shopify", domain="fern-moss.myshopify.com", name=shop_name)
    subject = " ".join(subject.split())  # as render.message leaves it
    context = {"subject": subject, "brand": {"name": shop_name}, "unsubscribe_url": UNSUBSCRIBE}
    sent = _reference(shop, to, context, text, html)
    parsed = message_from_bytes(sent, policy=render.SMTP_POLICY)
    assert parsed["Subject"] == subject
    parts = list(parsed.iter_parts())  # type: ignore[attr-defined]
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[1].get_content().replace("\r\n", "\n") == html + "\n"


def test_a_line_break_in_a_header_is_refused() -> None:
    shop = Shop(platform="shopify", domain="fern-moss.myshopify.com", name="Fern")
    context = {"subject": "Hi\r\nBcc: victim@example.com", "brand": {"name": "Fern"}}
    with pytest.raises(ValueError, match="linefeed"):
        render._envelope(shop, "ana@example.com", context, TEXT, HTML)
