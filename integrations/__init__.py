"""Platform integrations. Each turns its platform's webhooks into domain events; a new platform is
one new folder and one line here."""

from collections.abc import Callable
from typing import Any

from app.commerce.events import Event, InvalidPayload
from integrations.shopify import webhooks as shopify_webhooks

_EVENTS: dict[str, Callable[[str, Any], list[Event]]] = {
    shopify_webhooks.PLATFORM: shopify_webhooks.events
}


def events(platform: str, topic: str, payload: Any) -> list[Event]:
    try:
        to_events = _EVENTS[platform]
    except KeyError:
        raise InvalidPayload(f"no integration for platform {platform!r}") from None
    return to_events(topic, payload)
