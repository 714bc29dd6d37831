"""Platform-neutral domain events. Integrations produce them; commerce and flows consume them."""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class LineItem:
    title: str
    variant_title: str | None
    quantity: int
    price: str  # a decimal string in the checkout's currency: money never becomes a float
    image_url: str | None = None


@dataclass(frozen=True)
class CheckoutChanged:
    """A checkout was started or changed; `completed_at` is set once it became an order."""

    token: str
    cart_token: str | None
    email: str | None
    first_name: str | None
    locale: str | None
    currency: str
    subtotal_price: str
    total_price: str
    restore_url: str | None
    started_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    line_items: list[LineItem] = field(default_factory=list)


@dataclass(frozen=True)
class OrderPlaced:
    """An order exists (created or paid): whatever cart or customer it came from has bought."""

    platform_id: str
    name: str
    checkout_token: str | None
    cart_token: str | None
    email: str | None
    currency: str
    total_price: str
    placed_at: datetime


Event = CheckoutChanged | OrderPlaced


class InvalidPayload(ValueError):
    """A verified webhook whose body cannot become an event; the message says what is wrong."""
