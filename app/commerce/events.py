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
    last_name: str | None
    phone: str | None  # as the shopper typed it: stores do not normalise it
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
    line_items: list[LineItem] = field(default_factory=list)
    shipping_country: str | None = None  # ISO 3166-1 alpha-2, where the parcel goes
    locale: str | None = None  # the customer's language, when the platform knows it
    discount_codes: tuple[str, ...] = ()
    first_name: str | None = None  # the customer's, to greet them in post-purchase emails


@dataclass(frozen=True)
class Tracking:
    company: str | None
    number: str | None
    url: str | None


@dataclass(frozen=True)
class OrderShipped:
    """Part or all of an order left the warehouse (a fulfilment). `shipment_id` names it within
    the order, so a repeated or updated fulfilment is one shipment."""

    order_id: str  # the platform's order id
    shipment_id: str
    shipped_at: datetime
    tracking: tuple[Tracking, ...] = ()
    delivered_at: datetime | None = None
    # When the platform last changed the fulfilment: an older delivery arriving late changes
    # nothing a newer one said. None when the platform did not say.
    changed_at: datetime | None = None


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    cancelled_at: datetime


@dataclass(frozen=True)
class OrderRefunded:
    """Money went back: one refund, named by the platform so a repeated delivery counts once."""

    order_id: str
    refund_id: str
    amount: str  # positive decimal string, in the order's currency
    refunded_at: datetime


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


OrderChanged = OrderShipped | OrderCancelled | OrderRefunded
CommerceEvent = CheckoutChanged | CheckoutClosed | OrderPlaced | OrderChanged
Event = (
    CheckoutChanged
    | CheckoutClosed
    | OrderPlaced
    | OrderShipped
    | OrderCancelled
    | OrderRefunded
    | ShopUninstalled
    | CustomerDataRequested
    | CustomerRedacted
    | ShopRedacted
)


class InvalidPayload(ValueError):
    """A verified webhook whose body cannot become an event; the message says what is wrong."""
