"""Where email leaves: an SMTP server, Postmark's or Amazon SES's HTTP API, or the outbox folder.

MAIL_TRANSPORT (or SMTP_URL) chooses the default; a shop may have its own (`transport_for_shop`).
Every transport raises PermanentDeliveryError when the recipient is refused for good, and any
other exception when a later try may succeed (the job retries with backoff)."""

import asyncio
import base64
import contextlib
import copy
import functools
import json
import os
import re
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

import aiosmtplib
import httpx
from aiosmtplib.email import extract_recipients, extract_sender

from app import security
from app.db import utcnow
from app.mail.sigv4 import signed_headers
from app.settings import Settings, get_settings
from app.shops.models import Shop

POSTMARK_URL = "https://api.postmarkapp.com/email"
# Postmark's API error codes that refuse the recipient itself (its "API error codes" table).
POSTMARK_INACTIVE_RECIPIENT = 406
POSTMARK_INVALID_EMAIL_REQUEST = 300
# A header that picks the Postmark message stream (and one for its Tag); never sent on.
STREAM_HEADER = "X-Rebound-Stream"
TAG_HEADER = "X-Rebound-Tag"
# Headers Postmark builds itself from its JSON fields, or that its rebuilt message would break.
POSTMARK_OWN_HEADERS = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",
    STREAM_HEADER.lower(),
    TAG_HEADER.lower(),
}
# SES's wording when it refuses an address rather than the message (bad syntax).
SES_BAD_ADDRESS = re.compile(
    r"illegal address|missing final '@domain'|local address contains|domain contains illegal",
    re.IGNORECASE,
)


@functools.cache
def _tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The system's CAs, plus SMTP_CA_FILE's when set. Loading the system's certificates takes
    tens of milliseconds: once per process, not per message (bench/send.py found it was most
    of a worker's time)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


class PermanentDeliveryError(Exception):
    """The server refused the message for good (5xx): retrying would not help.
    `recipient_refused` says the address itself was refused (a bounce), not the message."""

    def __init__(self, detail: str, *, recipient_refused: bool = True) -> None:
        super().__init__(detail)
        self.recipient_refused = recipient_refused


class DeliveryError(Exception):
    """The provider did not take the message this time (5xx, 429, a refusal of ours to fix)."""


class UncertainDelivery(Exception):
    """The hand-off began and broke before the server answered (a dropped connection or a
    timeout during DATA, or while the HTTP request was out): the message may have been taken.
    Never retried, so it is never sent twice."""


class Transport(Protocol):
    async def deliver(self, message: EmailMessage, *, shop_domain: str) -> None: ...


# Called, and awaited, at the last moment before the message leaves: when it returns, the server
# may have the message; if it raises, nothing was handed over. The engine records it durably.
Handoff = Callable[[], Awaitable[None]]


async def deliver(
    transport: Transport, message: EmailMessage, *, shop_domain: str, handoff: Handoff
) -> None:
    """Deliver through `transport`, calling `handoff` right before the message leaves. Rebound's
    transports call it as late as they can (SMTP: once every recipient is accepted, before DATA);
    any other transport gets it before `deliver`, the safe side."""
    if isinstance(transport, SmtpTransport | PostmarkTransport | SesTransport | OutboxTransport):
        await transport.deliver(message, shop_domain=shop_domain, handoff=handoff)
        return
    await handoff()
    await transport.deliver(message, shop_domain=shop_domain)


async def _no_handoff() -> None:
    return None


async def _post(http: httpx.AsyncClient, url: str, handoff: Handoff, **kw: Any) -> httpx.Response:
    """POST after the hand-off is recorded. A connection never made delivered nothing (retried
    as before); a request broken once out may have been taken (UncertainDelivery)."""
    await handoff()
    try:
        return await http.post(url, **kw)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise
    except httpx.TransportError as exc:
        raise UncertainDelivery(f"the request broke before an answer: {exc!r}") from exc


def wire_bytes(message: EmailMessage, **policy: Any) -> bytes:
    """The message as it goes out, with CRLF line ends: what DKIM signs is what is sent."""
    wanted = {"linesep": "\r\n", **policy}
    writing = message.policy
    # Cloned only when it differs: Rebound's own messages have the SMTP policy already, whose
    # memory of parsed headers (app/mail/render.py) a clone, a new policy, would not share.
    if any(getattr(writing, name) != value for name, value in wanted.items()):
        writing = writing.clone(**wanted)
    written = _written(message, writing)
    return message.as_bytes(policy=writing) if written is None else written


# A multipart Content-Type as app/mail/render.py sets it, raw: one quoted boundary (RFC 2046
# bchars, no space). Parsing it was the costliest part of writing a message: each boundary is
# new, so the parsed-header memory never has it.
_MULTIPART = re.compile(r'multipart/[a-z]+; boundary="([0-9A-Za-z\'()+_,./:=?-]{1,70})"')
_LINE_END = re.compile(r"\r\n|\r|\n")  # the generator's NLCRE


def _written(message: EmailMessage, policy: Any) -> bytes | None:
    """What the email package's BytesGenerator writes for a message of the shape Rebound
    composes (a multipart of parts with text bodies, an 8bit policy), byte for byte, in a
    third of its time (bench/send.py: the generator was a fifth of a worker's time); None for
    any other message, which the generator writes. tests/test_envelope.py holds the two equal."""
    boundary = _raw_boundary(message)
    parts = message._payload  # type: ignore[attr-defined]
    if (
        boundary is None
        or policy.cte_type != "8bit"
        or message.preamble is not None
        or message.epilogue is not None
        or not isinstance(parts, list)
        or not all(_plain_part(part) for part in parts)
    ):
        return None
    linesep = policy.linesep
    opening = f"--{boundary}{linesep}"
    between = f"{linesep}--{boundary}{linesep}".encode()
    closing = f"{linesep}--{boundary}--{linesep}".encode()
    bodies = between.join(_headers(part, policy) + _body(part, linesep) for part in parts)
    return _headers(message, policy) + opening.encode() + bodies + closing


def raw_header(message: EmailMessage, name: str) -> Any:
    """The first `name` header's value as it was set, without parsing it: a string, or a parsed
    header object. Headers that are new in every message (boundaries, Message-IDs) are never in
    the parsed-header memory (app/mail/render.py), and parsing one is costly."""
    wanted = name.lower()
    return next((value for key, value in message.raw_items() if key.lower() == wanted), None)


def _raw_boundary(message: EmailMessage) -> str | None:
    value = raw_header(message, "Content-Type")
    # A parsed header object is left to the generator.
    matched = _MULTIPART.fullmatch(value) if type(value) is str else None
    return matched.group(1) if matched else None


def _plain_part(part: Any) -> bool:
    # Parts the generator writes as their text: a string body, not a message or a multipart.
    return (
        isinstance(part, EmailMessage)
        and isinstance(part._payload, str)  # type: ignore[attr-defined]
        and part.get_content_maintype() not in ("message", "multipart")
    )


def _headers(message: EmailMessage, policy: Any) -> bytes:
    folded = b"".join(policy.fold_binary(name, value) for name, value in message.raw_items())
    return folded + policy.linesep.encode()


def _body(part: EmailMessage, linesep: str) -> bytes:
    # As the generator: its own line ends, and surrogates back to the bytes they stand for.
    text: str = part._payload  # type: ignore[attr-defined]
    # Rebound's bodies end their lines with \n alone: a plain replace, not the regex (a
    # tenth of writing the message).
    lines = text.replace("\n", linesep) if "\r" not in text else _LINE_END.sub(linesep, text)
    return lines.encode("ascii", "surrogateescape")


def seven_bit_bodies(message: EmailMessage) -> None:
    """8bit text parts become quoted-printable: a relay that downgrades 8bit to 7bit (as RFC
    6152 lets it) cannot change a signed body, and SES gets the 7-bit parts it asks for."""
    for part in message.walk():
        if part.is_multipart() or part.get("Content-Transfer-Encoding", "").lower() != "8bit":
            continue
        if part.get_content_maintype() == "text":
            part.set_content(
                part.get_content(),
                subtype=part.get_content_subtype(),
                cte="quoted-printable",
            )


def _seven_bit(message: EmailMessage) -> bytes:
    """The message's bytes with 8bit text parts made quoted-printable (a copy: a signed
    message is 7-bit already, and stays byte for byte as signed)."""
    raw = wire_bytes(message)
    if raw.isascii():
        return raw
    converted = copy.deepcopy(message)
    seven_bit_bodies(converted)
    return wire_bytes(converted)


# Connections are kept open between messages: a new one costs a TCP handshake and EHLO (and
# STARTTLS and AUTH) every time, and servers rate-limit clients that connect per message. An
# idle connection is dropped before servers usually time it out (Postfix's smtpd_timeout is
# 300 s, busy servers go lower), and one connection carries at most POOL_MESSAGES, as bulk
# senders do, so no session grows unbounded.
POOL_IDLE_SECONDS = 20.0
POOL_MESSAGES = 100
# What a server that dropped an idle connection answers with, before anything was handed over.
_STALE = (aiosmtplib.SMTPServerDisconnected, ConnectionError)
_SERVICE_CLOSING = 421


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    loop: asyncio.AbstractEventLoop  # a connection belongs to the event loop that opened it
    idle_since: float = 0.0
    messages: int = 0


# A dot-atom address (RFC 5322 3.4.1) and nothing else: what the address parser makes of it is
# itself, so the parser (a fortieth of a worker's time, bench/send.py) need not run.
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"{_DOT_ATOM}(?:\.{_DOT_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_RECIPIENT_HEADERS = {"to", "cc", "bcc", "resent-date"}


def _bare_recipient(message: EmailMessage) -> list[str] | None:
    """[the address] when the message's only recipient header is a To of one bare address set
    as it is (app/mail/render.py does for most); None otherwise, for aiosmtplib to read."""
    found = [
        (name, value) for name, value in message.raw_items() if name.lower() in _RECIPIENT_HEADERS
    ]
    if len(found) != 1 or found[0][0].lower() != "to":
        return None
    value = found[0][1]
    return [value] if type(value) is str and _BARE_ADDRESS.fullmatch(value) else None


class SmtpTransport:
    """`ca_file` adds CAs to the system's for verifying the server (SMTP_CA_FILE). Keeps up to
    as many connections open as messages were in flight at once (the worker's concurrent jobs)."""

    def __init__(self, url: str, *, ca_file: Path | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
        self.implicit_tls = parsed.scheme == "smtps"
        self.hostname = parsed.hostname
        self.port = parsed.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        self.ca_file = ca_file
        self._idle: list[_Connection] = []

    async def deliver(
        self, message: EmailMessage, *, shop_domain: str, handoff: Handoff = _no_handoff
    ) -> None:
        sender = extract_sender(message)
        recipients = _bare_recipient(message) or extract_recipients(message)
        if not sender or not recipients:
            raise ValueError("a message needs a From and a recipient")
        if "Bcc" in message:
            message = copy.copy(message)  # deleting rebinds the header list: the original keeps it
            del message["Bcc"]
        try:
            await self._send(message, sender, recipients, handoff)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            if all(500 <= code < 600 for code in codes):
                raise PermanentDeliveryError(str(exc)) from exc
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The shop's own login was refused: every message would be, until it is fixed.
            # Retried with backoff (no customer's series ends over it), saying what to fix.
            raise DeliveryError(
                f"the SMTP server refused the user name or password ({exc.code} {exc.message})"
            ) from exc
        except aiosmtplib.SMTPSenderRefused:
            # Likewise the shop's sender address: retried, never the customer's fault.
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                # The sender, the content or the connection was refused, not the address.
                raise PermanentDeliveryError(
                    f"{exc.code} {exc.message}", recipient_refused=False
                ) from exc
            raise

    async def _send(
        self, message: EmailMessage, sender: str, recipients: list[str], handoff: Handoff
    ) -> None:
        """Over a kept connection when there is one; if the server had dropped it, which shows
        before anything is handed over, once more over a new one."""
        kept = self._take()
        if kept is not None:
            handed_off = False

            async def noting_handoff() -> None:
                nonlocal handed_off
                handed_off = True
                await handoff()

            try:
                await self._over(kept, message, sender, recipients, noting_handoff)
                return
            except (*_STALE, aiosmtplib.SMTPResponseException) as exc:
                stale = not isinstance(exc, aiosmtplib.SMTPResponseException) or (
                    exc.code == _SERVICE_CLOSING
                )
                if handed_off or not stale:
                    raise
        await self._over(await self._connect(), message, sender, recipients, handoff)

    async def _over(
        self,
        connection: _Connection,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
        handoff: Handoff,
    ) -> None:
        """One mail transaction; the connection goes back to the pool only after a clean one."""
        client = connection.client
        try:
            # The message's own bytes, not a re-serialisation: aiosmtplib's would refold long
            # headers (List-Unsubscribe into encoded words) and break a DKIM signature.
            raw = wire_bytes(message)
            options = []
            if not raw.isascii():
                if client.supports_extension("8BITMIME"):
                    options.append("BODY=8BITMIME")
                else:
                    raw = wire_bytes(message, cte_type="7bit")
            if not (sender + "".join(recipients)).isascii():
                if not client.supports_extension("SMTPUTF8"):
                    raise aiosmtplib.SMTPNotSupported("the server takes ASCII addresses only")
                options.append("SMTPUTF8")
            await _transaction(client, sender, recipients, raw, options, handoff)
        except BaseException:
            client.close()
            raise
        connection.messages += 1
        self._keep(connection)

    async def _connect(self) -> _Connection:
        client = aiosmtplib.SMTP(
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.implicit_tls,
            # None: STARTTLS whenever the server offers it; required before a password is sent,
            # so a connection stripped of STARTTLS never carries the credentials in clear.
            start_tls=False if self.implicit_tls else (True if self.username else None),
            tls_context=_tls_context(self.ca_file),
            timeout=30,
        )
        await client.connect()
        try:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
        except BaseException:
            client.close()
            raise
        return _Connection(client, asyncio.get_running_loop())

    def _take(self) -> _Connection | None:
        """The most recently used idle connection that is still good; the rest that are not
        are closed."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            fresh = now - connection.idle_since < POOL_IDLE_SECONDS
            if connection.loop is loop and fresh and connection.client.is_connected:
                return connection
            _drop(connection)
        return None

    def _keep(self, connection: _Connection) -> None:
        if connection.messages >= POOL_MESSAGES:
            _drop(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def drop_idle(self) -> None:
        """Close every kept connection at once, without QUIT (from code that cannot wait)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            _drop(connection)

    async def aclose(self) -> None:
        """Say goodbye (QUIT) on every kept connection: the worker's shutdown."""
        idle, self._idle = self._idle, []
        loop = asyncio.get_running_loop()
        for connection in idle:
            if connection.loop is loop and connection.client.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await connection.client.quit(timeout=5)
            _drop(connection)


def _drop(connection: _Connection) -> None:
    """Close without QUIT: for a connection past its time, or of an event loop that is gone."""
    with contextlib.suppress(RuntimeError):  # the loop that owned it is closed already
        connection.client.close()


async def close_transports(default: Transport) -> None:
    """Release what the default transport and the shops' own keep open (SMTP connections, API
    clients), at a worker's shutdown."""
    shops_own = [transport for _, transport in _shop_transports.values()]
    _shop_transports.clear()
    for transport in [default, *shops_own]:
        if isinstance(transport, SmtpTransport | _KeptClient):
            await transport.aclose()


async def _transaction(
    client: aiosmtplib.SMTP,
    sender: str,
    recipients: list[str],
    raw: bytes,
    options: list[str],
    handoff: Handoff,
) -> None:
    """aiosmtplib's `sendmail`, a command at a time, so the hand-off is recorded only once the
    server has accepted the sender and a recipient, right before DATA."""
    if client.supports_extension("size"):
        options = [f"size={len(raw)}", *options]  # raw has CRLF line ends already
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    try:
        await client.mail(sender, options=options, encoding=encoding)
        refused = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused.append(exc)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(refused)
    except aiosmtplib.SMTPResponseException:
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPException):
            await client.rset()
        raise
    await handoff()
    try:
        await client.data(raw)
    except aiosmtplib.SMTPResponseException:
        raise  # the server answered: it refused the message, nothing was delivered
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise UncertainDelivery(f"the connection broke during DATA: {exc!r}") from exc


class _KeptClient:
    """An HTTP API transport's client, kept between messages like SMTP connections: making one
    loads the CA store (about 25 ms of CPU here), and a kept one also keeps its TLS connections.
    One per event loop and origin (a stand-in's, in tests); closed at the worker's shutdown.
    httpx drops a pooled connection the server has closed before reusing it; one closed while
    a request is on it is an UncertainDelivery, as before."""

    _http: httpx.AsyncClient | None = None
    _key: tuple[asyncio.AbstractEventLoop, str | None] | None = None

    def _client(self, origin: str | None, setting: str) -> httpx.AsyncClient:
        key = (asyncio.get_running_loop(), origin)
        if self._http is None or self._http.is_closed or self._key != key:
            # One of another loop can only be dropped: its connections belong to that loop.
            self._http, self._key = _api_client(origin, setting), key
        return self._http

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if (
            http is not None
            and self._key is not None
            and self._key[0] is asyncio.get_running_loop()
        ):
            await http.aclose()


class PostmarkTransport(_KeptClient):
    """Postmark's Email API (`POST /email`). Postmark builds the MIME message from the JSON, so
    it signs with DKIM for its verified domain; Rebound's own signature would not survive."""

    def __init__(self, server_token: str) -> None:
        if not server_token:
            raise ValueError("MAIL_TRANSPORT for Postmark must look like postmark://SERVER_TOKEN@")
        self.server_token = server_token

    async def deliver(
        self, message: EmailMessage, *, shop_domain: str, handoff: Handoff = _no_handoff
    ) -> None:
        payload = postmark_payload(message, shop_domain)
        http = self._client(get_settings().postmark_api_origin, "POSTMARK_API_ORIGIN")
        response = await _post(
            http,
            POSTMARK_URL,
            handoff,
            json=payload,
            headers={"Accept": "application/json", "X-Postmark-Server-Token": self.server_token},
        )
        if response.status_code == 200:
            return
        code, text = _postmark_error(response)
        refused = f"Postmark refused the message: HTTP {response.status_code}, {code} {text}"
        recipient = str(message["To"] or "").lower()
        if response.status_code == 422 and (
            code == POSTMARK_INACTIVE_RECIPIENT
            or (
                code == POSTMARK_INVALID_EMAIL_REQUEST
                and ("'to'" in text.lower() or (recipient and recipient in text.lower()))
            )
        ):
            raise PermanentDeliveryError(refused)
        raise DeliveryError(refused)


def postmark_payload(message: EmailMessage, shop_domain: str) -> dict[str, Any]:
    """The JSON of Postmark's `POST /email` for this message."""
    payload: dict[str, Any] = {
        "From": _addresses(message, "From"),
        "To": _addresses(message, "To"),
        "Subject": str(message["Subject"] or ""),
        "MessageStream": str(message[STREAM_HEADER] or "outbound").strip(),
        "Metadata": {"shop": shop_domain},
        # Rebound tracks clicks and opens itself, and only where the shop allows it: Postmark's
        # own tracking (a server setting) would rewrite links and count opens regardless.
        "TrackOpens": False,
        "TrackLinks": "None",
    }
    for header, field in (("Cc", "Cc"), ("Reply-To", "ReplyTo")):
        if message[header]:
            payload[field] = _addresses(message, header)
    if message[TAG_HEADER]:
        payload["Tag"] = str(message[TAG_HEADER]).strip()
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    if text is not None:
        payload["TextBody"] = text.get_content()
    if html is not None:
        payload["HtmlBody"] = html.get_content()
    payload["Headers"] = [
        {"Name": name, "Value": str(value)}
        for name, value in message.items()
        if name.lower() not in POSTMARK_OWN_HEADERS
    ]
    return payload


def _addresses(message: EmailMessage, header: str) -> str:
    # Display names keep their characters; quoting follows RFC 5322 where a name needs it.
    value = message[header]
    addresses = getattr(value, "addresses", None)
    if not addresses:
        return str(value or "")
    return ", ".join(str(Address(a.display_name, addr_spec=a.addr_spec)) for a in addresses)


def _postmark_error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:300]
    if not isinstance(body, dict):
        return None, response.text[:300]
    code = body.get("ErrorCode")
    return (code if isinstance(code, int) else None), str(body.get("Message") or "")


class SesTransport(_KeptClient):
    """Amazon SES API v2 `SendEmail` with the raw MIME message, signed with Signature Version 4.
    The `shop` tag names the shop in SES's bounce and complaint events."""

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        region: str,
        configuration_set: str | None = None,
    ) -> None:
        if not access_key or not secret_key or not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+", region):
            raise ValueError("MAIL_TRANSPORT for SES must look like ses://ACCESS_KEY:SECRET@REGION")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.configuration_set = configuration_set

    @property
    def url(self) -> str:
        return f"https://email.{self.region}.amazonaws.com/v2/email/outbound-emails"

    async def deliver(
        self, message: EmailMessage, *, shop_domain: str, handoff: Handoff = _no_handoff
    ) -> None:
        request: dict[str, Any] = {
            "Content": {"Raw": {"Data": base64.b64encode(_seven_bit(message)).decode()}},
            "EmailTags": [{"Name": "shop", "Value": shop_tag(shop_domain)}],
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        body = json.dumps(request).encode()
        headers = signed_headers(
            "POST",
            self.url,
            {"Content-Type": "application/json"},
            body,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            service="ses",
        )
        http = self._client(get_settings().ses_api_origin, "SES_API_ORIGIN")
        response = await _post(http, self.url, handoff, content=body, headers=headers)
        if response.status_code == 200:
            return
        code, text = _aws_error(response)
        refused = f"SES refused the message: HTTP {response.status_code}, {code}: {text}"
        recipient = str(message["To"] or "").lower()
        if code in ("MessageRejected", "BadRequestException") and (
            (recipient and recipient in text.lower()) or SES_BAD_ADDRESS.search(text)
        ):
            raise PermanentDeliveryError(refused)
        raise DeliveryError(refused)


def _aws_error(response: httpx.Response) -> tuple[str, str]:
    """The error code and message of an AWS REST-JSON error: the code is in the
    X-Amzn-ErrorType header (`Code:namespace…`) or the body's `__type` or `code`."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = response.headers.get("x-amzn-errortype") or body.get("__type") or body.get("code")
    code = str(code or "Unknown").split(":")[0].rpartition("#")[2]
    return code, str(body.get("message") or body.get("Message") or response.text[:300])


def shop_tag(shop_domain: str) -> str:
    """The shop's domain as an SES tag value (letters, digits, `_` and `-` only): `.` becomes
    `_` and a port's `:` becomes `__`. `shop_domain_from_tag` reverses it."""
    tag = shop_domain.lower().replace(":", "__").replace(".", "_")
    return re.sub(r"[^a-z0-9_-]", "-", tag)[:256]


def shop_domain_from_tag(tag: str) -> str:
    return tag.lower().replace("__", ":").replace("_", ".")


class _OriginTransport(httpx.AsyncBaseTransport):
    """Sends every request to one origin (a local stand-in of the API) while the Host header,
    and so a request signature over it, keeps the API's own host."""

    def __init__(self, origin: str, setting: str) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{setting} must be an http(s) origin, got {origin!r}")
        self._parts = parts
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            scheme=self._parts.scheme, host=self._parts.hostname, port=self._parts.port
        )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _api_client(origin: str | None, setting: str) -> httpx.AsyncClient:
    if origin:
        return httpx.AsyncClient(timeout=30.0, transport=_OriginTransport(origin, setting))
    return httpx.AsyncClient(timeout=30.0)


class OutboxTransport:
    """Writes each message as an .eml file in a folder per shop: the embedded default, read by
    people and the demo, and erased with the shop's or a customer's data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def deliver(
        self, message: EmailMessage, *, shop_domain: str, handoff: Handoff = _no_handoff
    ) -> None:
        folder = self.shop_folder(shop_domain)
        folder.mkdir(parents=True, exist_ok=True)
        await handoff()
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{_slug(message['Message-ID'] or 'message')}.eml"
        # Written aside and renamed, so a reader never sees half a message.
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(message.as_bytes())
        os.replace(temporary, folder / name)

    def shop_folder(self, shop_domain: str) -> Path:
        return self.folder / _slug(shop_domain.replace(".", "_"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]


def transport_from_url(url: str, settings: Settings) -> Transport:
    """The transport a MAIL_TRANSPORT URL names. Errors never repeat the URL: it holds secrets."""
    url = url.strip()
    if url.lower() in ("outbox", "outbox:", "outbox://"):
        return OutboxTransport(settings.outbox_dir)
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("smtp", "smtps"):
        return SmtpTransport(url, ca_file=settings.smtp_ca_file)
    if scheme == "postmark":
        return PostmarkTransport(unquote(parsed.username or ""))
    if scheme == "ses":
        query = parse_qs(parsed.query)
        return SesTransport(
            unquote(parsed.username or ""),
            unquote(parsed.password or ""),
            parsed.hostname or "",
            configuration_set=next(iter(query.get("configuration_set", [])), None),
        )
    raise ValueError(
        "a mail transport must be smtp://…, smtps://…, postmark://SERVER_TOKEN@, "
        "ses://ACCESS_KEY:SECRET@REGION or outbox"
    )


def transport_for(settings: Settings) -> Transport:
    """The default transport: MAIL_TRANSPORT, else SMTP_URL, else the outbox folder."""
    if settings.mail_transport is not None:
        return transport_from_url(settings.mail_transport.get_secret_value(), settings)
    if settings.smtp_url is not None:
        return SmtpTransport(settings.smtp_url.get_secret_value(), ca_file=settings.smtp_ca_file)
    return OutboxTransport(settings.outbox_dir)


# Shop id -> (its transport's ciphertext, the transport): a shop's own SMTP keeps its connections
# between messages like the default one. A new ciphertext (the setting was saved again) replaces
# the entry, closing what the old transport kept open.
_shop_transports: dict[int, tuple[str, Transport]] = {}


# A replaced API transport may still have a message on its way (another job's): its client is
# closed once the longest request it could carry (30 s) has had its time.
RETIRE_AFTER = 35.0
_retiring: set[asyncio.Task[None]] = set()


def _retire(transport: Transport) -> None:
    """Let go of what a replaced shop transport keeps open."""
    if isinstance(transport, SmtpTransport):
        transport.drop_idle()  # idle ones only: a connection in use is not in the list
    elif isinstance(transport, _KeptClient):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, so no client of this loop's to close
            return

        def close() -> None:
            task = loop.create_task(transport.aclose())
            _retiring.add(task)
            task.add_done_callback(_retiring.discard)

        loop.call_later(RETIRE_AFTER, close)


def transport_for_shop(shop: Shop, default: Transport) -> Transport:
    """The shop's own transport when it has one (`rebound shops set --mail-transport`), else
    `default`."""
    encrypted = shop.mail_transport_encrypted
    if not encrypted or shop.id is None:
        return default
    kept = _shop_transports.get(shop.id)
    if kept is not None and kept[0] == encrypted:
        return kept[1]
    if kept is not None:
        _retire(kept[1])
    transport = transport_from_url(security.decrypt(encrypted), get_settings())
    _shop_transports[shop.id] = (encrypted, transport)
    return transport
