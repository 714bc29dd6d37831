"""What the win-back analytics return: plain values, computed by the database."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class LapsedCustomer:
    """A customer (an email within a shop) as win-back sees them: buying rhythm and RFM scores.

    `lapsed_customers` yields only the lapsed ones; `rfm_scores` and `customer_summary` return the
    same shape for any customer.
    """

    email: str
    orders: int
    last_order_at: datetime
    # The median time between consecutive orders; None for a one-time buyer.
    median_gap: timedelta | None
    # Sum of order totals as stored, whatever their currency (see repository); 4 decimals.
    monetary: Decimal
    # 1–5 quintiles within the shop (NTILE(5)): 5 is the most recent, the most orders, the most
    # spent. A shop with fewer than 5 customers uses only the lowest scores.
    recency_score: int
    frequency_score: int
    monetary_score: int
    # Among the shop's top `top_share` of customers by money spent.
    top: bool

    @property
    def segment(self) -> str:
        """Who gets which offer and copy: `top`, `one_time` or `regular`."""
        if self.top:
            return "top"
        return "one_time" if self.orders == 1 else "regular"
