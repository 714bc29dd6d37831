"""Keys derived from SECRET_KEY: Fernet for secrets at rest, HMAC for links that carry state."""

import base64
import functools
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from app.settings import get_settings


def _derived_key(purpose: str, master: bytes | None = None) -> bytes:
    # One master secret, a separate key per use: a leaked link key never decrypts tokens.
    secret = master if master is not None else get_settings().signing_key
    return _key_for(secret, purpose)


@functools.lru_cache(maxsize=64)
def _key_for(secret: bytes, purpose: str) -> bytes:
    # Derived once per secret and use, not for each of an email's three links.
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()


def _fernet() -> Fernet:
    # TOKEN_KEY, when set, keeps stored tokens readable across a SECRET_KEY rotation (and apart).
    token_key = get_settings().token_key
    master = token_key.get_secret_value().encode() if token_key else None
    return Fernet(base64.urlsafe_b64encode(_derived_key("fernet:tokens-at-rest", master)))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted: was SECRET_KEY changed?") from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(purpose: str, data: str) -> bytes:
    # 128 bits: unforgeable, and short enough for links and List-Unsubscribe headers.
    digest = hmac.new(_derived_key(f"link:{purpose}"), data.encode(), hashlib.sha256).digest()
    return digest[:16]


def sign(purpose: str, payload: dict[str, Any]) -> str:
    """A URL-safe token `<data>.<mac>` that only this server can have made for `purpose`."""
    data = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{data}.{_b64(_mac(purpose, data))}"


def unsign(purpose: str, token: str) -> dict[str, Any] | None:
    """The payload of a token made by `sign` for this purpose, or None for anything else."""
    data, _, mac = token.partition(".")
    if not data or not mac:
        return None
    try:
        if not hmac.compare_digest(_unb64(mac), _mac(purpose, data)):
            return None
        payload = json.loads(_unb64(data))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
