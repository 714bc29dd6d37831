"""Every table, imported in one place so Alembic and tests see the whole schema."""

from app.commerce.models import Checkout, Order
from app.inbox.models import InboxEntry
from app.mail.models import Unsubscribe
from app.privacy.models import DataRequest
from app.shops.models import Shop
from flows.models import Click, Enrollment, Flow, Send

__all__ = [
    "Checkout",
    "Click",
    "DataRequest",
    "Enrollment",
    "Flow",
    "InboxEntry",
    "Order",
    "Send",
    "Shop",
    "Unsubscribe",
]
