"""Signed links that carry state. Tokens name rows; the rows are looked up, scoped to their shop."""

from dataclasses import dataclass

from app import security
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


@dataclass(frozen=True)
class Recipient:
    shop_id: int
    email: str


def restore_url(shop_id: int, send_id: int) -> str:
    token = security.sign(RESTORE, {"shop": shop_id, "send": send_id})
    return f"{get_settings().public_url}/r/{token}"


def nps_url(shop_id: int, send_id: int, score: int) -> str:
    token = security.sign(NPS, {"shop": shop_id, "send": send_id})
    return f"{get_settings().public_url}/nps/{token}/{score}"


def preference_url(shop_id: int, send_id: int, option: int) -> str:
    token = security.sign(PREFERENCE, {"shop": shop_id, "send": send_id})
    return f"{get_settings().public_url}/pref/{token}/{option}"


def stay_url(shop_id: int, send_id: int) -> str:
    token = security.sign(STAY, {"shop": shop_id, "send": send_id})
    return f"{get_settings().public_url}/stay/{token}"


def read_send_ref(purpose: str, token: str) -> SendRef | None:
    payload = security.unsign(purpose, token)
    if not payload or not _is_id(payload.get("shop")) or not _is_id(payload.get("send")):
        return None
    return SendRef(shop_id=payload["shop"], send_id=payload["send"])


def unsubscribe_url(shop_id: int, email: str) -> str:
    return f"{get_settings().public_url}/u/{unsubscribe_token(shop_id, email)}"


def unsubscribe_token(shop_id: int, email: str) -> str:
    return security.sign(UNSUBSCRIBE, {"shop": shop_id, "email": email})


def read_restore(token: str) -> SendRef | None:
    return read_send_ref(RESTORE, token)


def read_unsubscribe(token: str) -> Recipient | None:
    payload = security.unsign(UNSUBSCRIBE, token)
    if not payload or not _is_id(payload.get("shop")) or not isinstance(payload.get("email"), str):
        return None
    return Recipient(shop_id=payload["shop"], email=payload["email"])


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
