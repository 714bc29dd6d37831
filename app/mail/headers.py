"""Header values made from merchant data, safe to put in a message as they are."""

import re
import unicodedata
from email.charset import BASE64, Charset

_UTF8 = Charset("utf-8")
_UTF8.header_encoding = BASE64
# 45 bytes of UTF-8 make an encoded word of 72 characters (RFC 2047 allows 75).
_WORD_BYTES = 45


def list_id(shop_name: str, shop_domain: str, mail_domain: str) -> str:
    """RFC 2919 `"Shop Name" <shop-slug.mail-domain>`: one line of ASCII whatever the name
    holds (quoted when ASCII, RFC 2047 encoded words otherwise)."""
    label = re.sub(r"[^a-z0-9]+", "-", shop_domain.lower()).strip("-") or "shop"
    identifier = f"<{label}.{mail_domain.lower()}>"
    name = _one_line(shop_name)[:100]
    if not name:
        return identifier
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" {identifier}'
    return f"{' '.join(_encoded_words(name))} {identifier}"


def _one_line(text: str) -> str:
    # No line breaks or other control characters, whitespace collapsed.
    visible = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(visible.split())


def _encoded_words(text: str) -> list[str]:
    words, chunk = [], ""
    for character in text:
        if len((chunk + character).encode()) > _WORD_BYTES:
            words.append(chunk)
            chunk = ""
        chunk += character
    words.append(chunk)
    return [_UTF8.header_encode(word) for word in words]
