"""The default flows every shop gets. A flow is data: these are only its first values."""

from typing import Any

ABANDONED_CART = "abandoned_cart"

HOUR = 3600

DEFAULT_FLOWS: dict[str, list[dict[str, Any]]] = {
    # Each step: seconds after the cart was last touched, and the email template it sends.
    ABANDONED_CART: [
        {"delay": 1 * HOUR, "template": "abandoned_cart"},
        {"delay": 24 * HOUR, "template": "abandoned_cart"},
        {"delay": 72 * HOUR, "template": "abandoned_cart"},
    ],
}

# The demo store plays a whole series in about two minutes.
DEMO_DELAYS = {ABANDONED_CART: [15, 45, 90]}

FLOW_NAMES = tuple(DEFAULT_FLOWS)
# A cart untouched for this long gets no (more) reminders: a late or replayed webhook for an
# old checkout must not email someone about a cart they left months ago.
CART_MAX_AGE = 30 * 24 * HOUR
MAX_DELAY = 90 * 24 * HOUR
