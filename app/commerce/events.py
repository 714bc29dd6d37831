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
    variant_id: str | None = None  # the platform's id, exact, as text
    product_id: str | None = None


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


@dataclass(frozen=True)
class CheckoutClosed:
    """The checkout can no longer be completed (cancelled or deleted in the store)."""

    token: str


@dataclass(frozen=True)
class Customer:
    """Who a privacy request is about, as the platform identifies them."""

    email: str | None
    phone: str | None
    platform_id: str | None
    order_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShopUninstalled:
    """The merchant removed Rebound: no more email, no more token."""


@dataclass(frozen=True)
class CustomerDataRequested:
    customer: Customer
    request_id: str | None


@dataclass(frozen=True)
class CustomerRedacted:
    customer: Customer


@dataclass(frozen=True)
class ShopRedacted:
    """Everything held for the shop is to be deleted."""


CommerceEvent = CheckoutChanged | CheckoutClosed | OrderPlaced
Event = (
    CheckoutChanged
    | CheckoutClosed
    | OrderPlaced
    | ShopUninstalled
    | CustomerDataRequested
    | CustomerRedacted
    | ShopRedacted
)


class InvalidPayload(ValueError):
    """A verified webhook whose body cannot become an event; the message says what is wrong."""
