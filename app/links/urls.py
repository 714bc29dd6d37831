"""Signed links that carry state. Tokens name rows; the rows are looked up, scoped to their shop.

Every token also carries the language its email was written in (`lang`), so the page a link
leads to speaks it without guessing again from data that may have changed or been erased since.
Tokens made before links carried it have none: their pages fall back to the shop's language."""

from dataclasses import dataclass
from typing import Any

from app import security
from app.mail import i18n
from app.settings import get_settings

RESTORE = "restore"
UNSUBSCRIBE = "unsubscribe"
NPS = "nps"
STAY = "stay"
PREFERENCE = "preference"


@dataclass(frozen=True)
class SendRef:
    shop_id: int
    send_id: int
    lang: str | None = None  # the email's language; None in links older than the field


@dataclass(frozen=True)
class Recipient:
    shop_id: int
    email: str
    lang: str | None = None


def restore_url(shop_id: int, send_id: int, *, lang: str) -> str:
    return f"{get_settings().public_url}/r/{_send_token(RESTORE, shop_id, send_id, lang)}"


def nps_url(shop_id: int, send_id: int, score: int, *, lang: str) -> str:
    return f"{get_settings().public_url}/nps/{_send_token(NPS, shop_id, send_id, lang)}/{score}"


def preference_url(shop_id: int, send_id: int, option: int, *, lang: str) -> str:
    token = _send_token(PREFERENCE, shop_id, send_id, lang)
    return f"{get_settings().public_url}/pref/{token}/{option}"


def stay_url(shop_id: int, send_id: int, *, lang: str) -> str:
    return f"{get_settings().public_url}/stay/{_send_token(STAY, shop_id, send_id, lang)}"


def _send_token(purpose: str, shop_id: int, send_id: int, lang: str) -> str:
    return security.sign(purpose, {"shop": shop_id, "send": send_id, "lang": i18n.language(lang)})


def read_send_ref(purpose: str, token: str) -> SendRef | None:
    payload = security.unsign(purpose, token)
    if not payload or not _is_id(payload.get("shop")) or not _is_id(payload.get("send")):
        return None
    return SendRef(shop_id=payload["shop"], send_id=payload["send"], lang=_lang(payload))


def unsubscribe_url(shop_id: int, email: str, *, lang: str) -> str:
    return f"{get_settings().public_url}/u/{unsubscribe_token(shop_id, email, lang=lang)}"


def unsubscribe_token(shop_id: int, email: str, *, lang: str) -> str:
    return security.sign(
        UNSUBSCRIBE, {"shop": shop_id, "email": email, "lang": i18n.language(lang)}
    )


def read_restore(token: str) -> SendRef | None:
    return read_send_ref(RESTORE, token)


def read_unsubscribe(token: str) -> Recipient | None:
    payload = security.unsign(UNSUBSCRIBE, token)
    if not payload or not _is_id(payload.get("shop")) or not isinstance(payload.get("email"), str):
        return None
    return Recipient(shop_id=payload["shop"], email=payload["email"], lang=_lang(payload))


def _lang(payload: dict[str, Any]) -> str | None:
    """The signed language, if the token has one Rebound writes in."""
    lang = payload.get("lang")
    return lang if isinstance(lang, str) and lang in i18n.LANGUAGES else None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
