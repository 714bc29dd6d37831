"""Where email leaves: an SMTP server when SMTP_URL is set, otherwise the outbox folder."""

import os
import re
import ssl
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import aiosmtplib

from app.db import utcnow
from app.settings import Settings


class PermanentDeliveryError(Exception):
    """The server refused the message for good (5xx): retrying would not help."""


class Transport(Protocol):
    async def deliver(self, message: EmailMessage, *, shop_domain: str) -> None: ...


class SmtpTransport:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
        self.implicit_tls = parsed.scheme == "smtps"
        self.hostname = parsed.hostname
        self.port = parsed.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None

    async def deliver(self, message: EmailMessage, *, shop_domain: str) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.implicit_tls,
                # None: STARTTLS whenever the server offers it.
                start_tls=None if not self.implicit_tls else False,
                tls_context=ssl.create_default_context(),
                timeout=30,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            if all(500 <= code < 600 for code in codes):
                raise PermanentDeliveryError(str(exc)) from exc
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentDeliveryError(f"{exc.code} {exc.message}") from exc
            raise


class OutboxTransport:
    """Writes each message as an .eml file in a folder per shop: the embedded default, read by
    people and the demo, and erased with the shop's or a customer's data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def deliver(self, message: EmailMessage, *, shop_domain: str) -> None:
        folder = self.shop_folder(shop_domain)
        folder.mkdir(parents=True, exist_ok=True)
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


def transport_for(settings: Settings) -> Transport:
    if settings.smtp_url is not None:
        return SmtpTransport(settings.smtp_url.get_secret_value())
    return OutboxTransport(settings.outbox_dir)
