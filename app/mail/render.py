"""From a template and its context to a message ready to send: the language, the shop's
branding, styles inlined, links tracked, headers set. compose.py decides what an email says;
this decides how every email is made."""

import re
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr, make_msgid
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from app.mail import i18n, tracking
from app.mail.dkim import dkim_sign
from app.mail.headers import list_id
from app.settings import get_settings
from app.shops.models import Shop

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

BODY_LINE = 998  # the longest line SMTP carries (RFC 5321 4.5.3.1.6)


class _SmtpPolicy(EmailPolicy):
    """SMTP's policy, remembering what header values parse to. Serialising a message asks each
    part for its Content-Type several times, and every ask parsed it again: a third of the
    time a message took to write (bench/send.py --cprofile). Parsed headers are immutable."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        if hasattr(value, "name"):  # parsed already
            return value
        return _parsed_header(self, name, value)


@lru_cache(maxsize=1024)
def _parsed_header(smtp_policy: _SmtpPolicy, name: str, value: str) -> str:
    return EmailPolicy.header_fetch_parse(smtp_policy, name, value)


# Long header lines (List-Unsubscribe URLs) stay plain ASCII instead of RFC 2047 encoded words.
SMTP_POLICY = _SmtpPolicy(linesep="\r\n", max_line_length=BODY_LINE)
# Header lines up to this long are written as they are (RFC 5322 2.1.1: "SHOULD" fold at 78).
HEADER_LINE = 78
# An address without a name, quotes or anything the email package would rewrite (RFC 5322
# dot-atom characters; ASCII).
BARE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
DEFAULT_ACCENT = "#111111"
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
    # The templates ship with the code: no stat of each file on every email to see whether it
    # changed (a restart loads new ones).
    auto_reload=False,
)
environment.install_gettext_callables(i18n.gettext_, i18n.ngettext_, newstyle=True)  # type: ignore[attr-defined]

# Merchants' own subject lines run sandboxed: they can use {{ first_name }}, not Python.
# A merchant writes "{{ first_name }}, your cart…": a customer without a name reads ", your
# cart…", never "None, your cart…".
merchant_text = SandboxedEnvironment(
    autoescape=False,
    undefined=StrictUndefined,
    finalize=lambda value: "" if value is None else value,
)


@lru_cache(maxsize=512)
def merchant_subject(source: str) -> Template:
    """A merchant's subject line, compiled once: every email of the step uses it, and the
    sandbox compiles a template anew for each from_string."""
    return merchant_text.from_string(source)


# Styles are written once, in base.html, and inlined per email: the stylesheet takes the shop's
# accent colour and the HTML depends on the email's data. bench/inline.py measured inlining once
# per template (rendered with placeholders, values filled in): about 6x faster, but a different
# email for half the defaults (filters, paragraphs, conditions on words), so per email it is.
INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def brand(shop: Shop) -> dict[str, Any]:
    """The shop as its emails show it: name, logo, accent colour, contact and address."""
    profile = shop.profile or {}
    accent = profile.get("accent_color") if COLOR.match(str(profile.get("accent_color"))) else None
    return {
        "name": profile.get("sender_name") or shop.name,
        "logo_url": profile.get("logo_url"),
        "accent": accent or DEFAULT_ACCENT,
        "accent_text": _readable_on(accent or DEFAULT_ACCENT),
        "phone": profile.get("phone"),
        "email": profile.get("contact_email"),
        "chat_url": profile.get("chat_url"),
        "social": [
            {"name": name.title(), "url": url}
            for name, url in sorted((profile.get("social") or {}).items())
        ],
        "address_lines": list(shop.address or []),
    }


META_CHARSET = '<meta charset="utf-8">'


def _charset_first(html: str) -> str:
    """css-inline puts the @media rules it keeps first in <head>; the charset must come within
    the first 1024 bytes, so it goes back to the top."""
    if META_CHARSET not in html or "<head>" not in html:
        return html
    return html.replace(META_CHARSET, "", 1).replace("<head>", "<head>" + META_CHARSET, 1)


def _readable_on(color: str) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#111111" if 0.299 * red + 0.587 * green + 0.114 * blue > 160 else "#ffffff"


def message(
    shop: Shop,
    to: str,
    template: str,
    context: dict[str, Any],
    *,
    lang: str,
    campaign: tracking.Campaign | None = None,
    subject: str | None = None,
) -> EmailMessage:
    """The email `template` makes of `context`, written in `lang`. With a campaign (and the shop's
    tracking on) links to other sites go through click redirects and an open pixel is added.
    `subject` is the merchant's own subject line for this language, when they wrote one."""
    with i18n.writing_in(lang):
        full = {**context, "lang": i18n.language(lang), "brand": brand(shop)}
        full["subject"] = _one_line(
            merchant_subject(subject).render(full)
            if subject
            else environment.get_template(f"{template}.subject.txt").render(full)
        )
        text = environment.get_template(f"{template}.txt").render(full)
        html = _charset_first(
            INLINER.inline(environment.get_template(f"{template}.html").render(full))
        )
    if campaign is not None and shop.tracking:
        html = tracking.track_html(html, campaign)
        text = tracking.track_text(text, campaign)
    return _envelope(shop, to, full, text, html)


def may_send_as(shop: Shop, address: str) -> bool:
    """Whether the shop's emails may come from `address`: any address through the shop's own
    provider (which checks its domain, SPF and DKIM are theirs); through Rebound's transport only
    one on MAIL_FROM's domain, which Rebound's SPF and DKIM cover."""
    if shop.mail_transport_encrypted:
        return True
    domain = address.rpartition("@")[2].lower()
    return domain == get_settings().mail_from_domain.lower()


def sender_address(shop: Shop) -> str:
    """The address the shop's emails come from now: its own when allowed, else MAIL_FROM's."""
    own = (shop.profile or {}).get("sender_address")
    if own and may_send_as(shop, own):
        return str(own)
    return get_settings().mail_from_address


def _envelope(shop: Shop, to: str, context: dict[str, Any], text: str, html: str) -> EmailMessage:
    sender = sender_address(shop)
    domain = sender.rpartition("@")[2] or "localhost"
    profile = shop.profile or {}
    name = _one_line(context["brand"]["name"])
    message = EmailMessage(policy=SMTP_POLICY)
    _set_header(message, "Subject", context["subject"])
    _set_header(message, "From", formataddr((name, sender)), plain=name.isascii())
    # Who the mail is from, as an organisation: mail filters weigh a shop's images hosted on its
    # platform's CDN (cdn.shopify.com) differently when the sender names itself.
    _set_header(message, "Organization", name)
    if profile.get("reply_to"):
        message["Reply-To"] = _one_line(str(profile["reply_to"]))
    if BARE_ADDRESS.fullmatch(to) and len(to) + 4 <= HEADER_LINE:
        message.set_raw("To", to)  # as the parser writes a bare address, without parsing it
    else:
        message["To"] = to
    message.set_raw("Date", format_datetime(datetime.now(UTC)))
    message.set_raw("Message-ID", make_msgid(domain=domain))
    if context.get("unsubscribe_url"):
        # RFC 2369 and RFC 8058: mail programs show an unsubscribe button and POST to the URL.
        # No mailto: alternative: Rebound does not read the sender's mailbox, so a request sent
        # there would wait for someone to act on it by hand; the URL takes effect at once.
        _set_header(message, "List-Unsubscribe", f"<{context['unsubscribe_url']}>")
        message.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    message.set_raw("MIME-Version", "1.0")
    boundary = _boundary(text, html)
    message.set_raw("Content-Type", f'multipart/alternative; boundary="{boundary}"')
    message.set_payload([_text_part(text, "plain"), _text_part(html, "html")])
    return finish(message, context["brand"]["name"], shop.domain)


def _set_header(message: EmailMessage, name: str, value: str, *, plain: bool = True) -> None:
    """A header as the email package would write it, without its parser where that changes
    nothing: a short ASCII value is set raw (parsing and refolding headers was most of a
    message's making, bench/send.py). Anything else goes through the parser, which encodes and
    folds it. Line breaks are refused either way, as the parser refuses them."""
    if "\r" in value or "\n" in value:
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    length = len(name) + 2 + len(value)
    # A value without spaces cannot be folded: the parser writes it on one line as it is, up
    # to the longest line SMTP carries (a List-Unsubscribe URL).
    unfoldable = length <= BODY_LINE and " " not in value and "\t" not in value
    if plain and value.isascii() and (length <= HEADER_LINE or unfoldable):
        message.set_raw(name, value)
    else:
        message[name] = value


def _text_part(body: str, subtype: str) -> EmailMessage:
    """A UTF-8 text part, the same bytes as EmailMessage.set_content makes (7bit when ASCII,
    else 8bit, LF line ends until sent), built without re-parsing its own headers. Lines too
    long for SMTP take set_content's own way (quoted-printable or base64)."""
    part = EmailMessage(policy=SMTP_POLICY)
    lines = body.encode().splitlines()
    if max((len(line) for line in lines), default=0) > BODY_LINE:
        part.set_content(body, subtype=subtype)
        del part["MIME-Version"]  # set_content's; only the top level needs one
        return part
    encoded = b"\n".join(lines) + b"\n"
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    part.set_raw("Content-Transfer-Encoding", "7bit" if encoded.isascii() else "8bit")
    part.set_payload(encoded.decode("ascii", "surrogateescape"))
    return part


def _boundary(*bodies: str) -> str:
    """A MIME boundary as the email package makes one (19 random digits), found in no body. Set
    here because the generator checks only the boundaries it makes itself."""
    while True:
        boundary = "=" * 15 + f"{secrets.randbelow(10**19):019d}" + "=="
        if not any(boundary in body for body in bodies):
            return boundary


def finish(message: EmailMessage, shop_name: str, shop_domain: str) -> EmailMessage:
    """The last touch before a message leaves: List-Id (RFC 2919), then a DKIM signature when
    DKIM_PRIVATE_KEY is set. Nothing may change the message afterwards: it would break the
    signature. Safe to call again (both are replaced)."""
    settings = get_settings()
    del message["List-Id"]
    # Raw: the value is ASCII already, and the email package would re-encode a quoted name.
    message.set_raw("List-Id", list_id(shop_name, shop_domain, settings.mail_from_domain))
    dkim_sign(message, settings)
    return message


def _one_line(text: str) -> str:
    # Header values never carry line breaks: names come from merchants and shoppers.
    return " ".join(text.split())
