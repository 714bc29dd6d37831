"""Every table, imported in one place so Alembic and tests see the whole schema."""

from app.analytics.models import AbTest, Assignment, Attribution
from app.commerce.models import Checkout, Order, OrderItem, Refund, Shipment
from app.customers.models import CustomerFigures
from app.inbox.models import InboxEntry
from app.mail.models import Suppression, Unsubscribe
from app.privacy.models import DataRequest
from app.shops.models import Shop
from flows.models import Click, CustomerPreference, Enrollment, Flow, NpsAnswer, Open, Send

__all__ = [
    "AbTest",
    "Assignment",
    "Attribution",
    "Checkout",
    "Click",
    "CustomerFigures",
    "CustomerPreference",
    "DataRequest",
    "Enrollment",
    "Flow",
    "InboxEntry",
    "NpsAnswer",
    "Open",
    "Order",
    "OrderItem",
    "Refund",
    "Send",
    "Shipment",
    "Shop",
    "Suppression",
    "Unsubscribe",
]
