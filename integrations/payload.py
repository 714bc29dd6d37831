"""Reading platform JSON strictly: each helper returns the field in the type Rebound keeps, or
raises InvalidPayload saying which field is wrong. Shared by every integration."""

from decimal import Decimal, InvalidOperation
from typing import Any

from app.commerce.events import InvalidPayload


def obj(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if value is None or value == []:  # PHP platforms serialise an empty object as []
        return {}
    if not isinstance(value, dict):
        raise InvalidPayload(f"{key} must be an object")
    return value


def items(payload: dict[str, Any], key: str) -> list[Any]:
    value = payload.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidPayload(f"{key} must be a list")
    return value


def optional_text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidPayload(f"{key} must be a string")
    return value.strip() or None


def text(payload: dict[str, Any], key: str) -> str:
    value = optional_text(payload, key)
    if value is None:
        raise InvalidPayload(f"{key} is missing")
    return value


def identifier(payload: dict[str, Any], key: str) -> str:
    """Ids exactly as sent: Python's JSON keeps big integers whole, and they stay text from here."""
    value = payload.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return value
    raise InvalidPayload(f"{key} must be a positive integer id, not {value!r}")


def money(payload: dict[str, Any], key: str) -> str:
    """A decimal string; money never passes through a float."""
    value = payload.get(key)
    if value is None or value == "":
        return "0.00"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidPayload(f"{key} must be a decimal string, not {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidPayload(f"{key} must be a decimal amount, not {value!r}") from exc
    if not amount.is_finite():
        raise InvalidPayload(f"{key} must be a finite amount")
    return str(amount)
