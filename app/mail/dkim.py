"""DKIM signatures (RFC 6376) on outgoing messages, with the key from DKIM_PRIVATE_KEY."""

from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.mail.transport import seven_bit_bodies, wire_bytes
from app.settings import Settings

# Signed when present. RFC 8058 asks for List-Unsubscribe and List-Unsubscribe-Post to be covered.
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
# Listed once more than they occur, so a header of these added on the way breaks the signature.
OVERSIGNED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


class DkimKeyError(ValueError):
    """DKIM_PRIVATE_KEY or DKIM_SELECTOR cannot be used; the message says why."""


def dkim_sign(message: EmailMessage, settings: Settings) -> None:
    """Add a DKIM-Signature (relaxed/relaxed, rsa-sha256) for DKIM_DOMAIN, or MAIL_FROM's
    domain. Nothing happens without DKIM_PRIVATE_KEY. An earlier signature is replaced. The
    headers and body must not change afterwards."""
    if settings.dkim_private_key is None:
        return
    if not settings.dkim_selector:
        raise DkimKeyError("DKIM_SELECTOR must be set with DKIM_PRIVATE_KEY")
    key = _private_key(settings.dkim_private_key.get_secret_value())
    domain = (settings.dkim_domain or settings.mail_from_domain).strip().lower()
    del message["DKIM-Signature"]
    seven_bit_bodies(message)
    present = {name.lower() for name in message}
    signed = [name for name in SIGNED_HEADERS if name in present]
    signed += [name for name in signed if name in OVERSIGNED]
    header = dkim.sign(
        wire_bytes(message),
        settings.dkim_selector.strip().encode(),
        domain.encode(),
        key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode() for name in signed],
    )
    name, _, value = header.decode("ascii").partition(":")
    # Raw, as dkimpy folded it: the email package would refold it at will.
    message.set_raw(name, value.strip())


@lru_cache(maxsize=4)
def _private_key(setting: str) -> bytes:
    """The key in the PKCS#1 PEM form dkimpy reads, from PEM text (PKCS#1 or PKCS#8; `\\n`
    escapes allowed, as environment variables often carry them) or a path to a PEM file."""
    text = setting.strip()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise DkimKeyError(
                f"DKIM_PRIVATE_KEY is neither PEM text nor a readable file: {exc}"
            ) from exc
    try:
        key = serialization.load_pem_private_key(text.replace("\\n", "\n").encode(), None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(
            f"DKIM_PRIVATE_KEY is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise DkimKeyError("DKIM_PRIVATE_KEY must be an RSA key of 1024 bits or more")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
