"""The envelope of every email (app.mail.render._envelope) sets short ASCII headers and its
text parts without the email package's parser, for speed. It must come out as the email
package's own API makes it: these compare the bytes sent with a reference built by
EmailMessage's API, for ASCII and non-ASCII names and subjects, long headers and long lines."""

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import formataddr

import pytest
from aiosmtplib.email import extract_recipients

from app.mail import render
from app.mail.transport import _bare_recipient, seven_bit_bodies, wire_bytes
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
    # wire_bytes writes Rebound's messages itself: byte for byte what the generator writes.
    assert wire_bytes(built) == built.as_bytes(policy=render.SMTP_POLICY)
    assert _bare_recipient(built) in (None, extract_recipients(built))
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


def _composed(to: str = "ana@example.com") -> EmailMessage:
    shop = Shop(platform="shopify", domain="fern-moss.myshopify.com", name="Fern")
    context = {"subject": "Your cart", "brand": {"name": "Fern"}}
    return render._envelope(shop, to, context, TEXT, HTML)


def _other_shapes() -> list[EmailMessage]:
    """Messages wire_bytes must leave to the generator, or write as it would."""
    quoted = _composed()
    seven_bit_bodies(quoted)  # parts re-encoded by set_content, as DKIM signing does
    with_preamble = _composed()
    with_preamble.preamble = "This is a multi-part message in MIME format."
    forwarded = EmailMessage(policy=render.SMTP_POLICY)
    forwarded["Subject"] = "Fwd"
    forwarded.set_content("see below")
    forwarded.add_attachment(_composed())  # a message/rfc822 part
    parsed_type = _composed()
    boundary = parsed_type.get_boundary()
    del parsed_type["Content-Type"]
    parsed_type["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
    single = EmailMessage(policy=render.SMTP_POLICY)
    single.set_content("just text\n")
    return [quoted, with_preamble, forwarded, parsed_type, single]


@pytest.mark.parametrize("message", _other_shapes())
def test_any_other_message_comes_out_as_the_generator_writes_it(message: EmailMessage) -> None:
    assert wire_bytes(message) == message.as_bytes(policy=render.SMTP_POLICY)


@pytest.mark.parametrize(
    ("to", "bare"),
    [
        ("ana@example.com", True),
        ("#!$%&'*+/=?^_`{|}~-@a-b.example", True),
        ("a..b@x.io", False),  # not a dot-atom: the parser decides
        ('"Ana B" <ana@example.com>', False),
        ("ana@example.com, bo@example.com", False),
    ],
)
def test_a_bare_recipient_is_read_as_the_parser_reads_it(to: str, bare: bool) -> None:
    message = _composed()
    del message["To"]
    message.set_raw("To", to)  # as render sets a bare address
    assert (_bare_recipient(message) is not None) is bare
    assert (_bare_recipient(message) or extract_recipients(message)) == extract_recipients(message)
    message["Cc"] = "carl@example.com"
    assert _bare_recipient(message) is None  # any other recipient: the parser reads them all


def test_a_line_break_in_a_header_is_refused() -> None:
    shop = Shop(platform="shopify", domain="fern-moss.myshopify.com", name="Fern")
    context = {"subject": "Hi\r\nBcc: victim@example.com", "brand": {"name": "Fern"}}
    with pytest.raises(ValueError, match="linefeed"):
        render._envelope(shop, "ana@example.com", context, TEXT, HTML)
