"""Win-back's figures per customer (a table) and what its analytics return (plain values)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import BigInteger, Index
from sqlmodel import Field, SQLModel


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


class CustomerFigures(SQLModel, table=True):
    """One customer's buying figures within a shop, from their orders that count (see
    app/customers/repository.py), kept up to date whenever one of their orders, cancellations
    or refunds is stored (`refresh_figures`). Win-back reads these small rows instead of every
    order of the shop: a customer with no order that counts has no row.
    """

    __tablename__ = "customer_figures"
    __table_args__ = (
        # Each RFM dimension in order, with the email breaking ties as the quintiles do: read
        # in that order for the quintiles' break-points, no sort.
        Index("ix_customer_figures_recency", "shop_id", "last_order_at", "email"),
        Index("ix_customer_figures_frequency", "shop_id", "orders", "email"),
        # Including the other two dimensions, so one customer's standing is counted from this
        # index alone on PostgreSQL: a seq scan of the table reads every shop's customers.
        Index(
            "ix_customer_figures_monetary",
            "shop_id",
            "monetary",
            "email",
            postgresql_include=["last_order_at", "orders"],
        ),
    )

    shop_id: int = Field(foreign_key="shops.id", primary_key=True)
    email: str = Field(max_length=320, primary_key=True)
    orders: int
    first_order_at: datetime
    last_order_at: datetime
    # last_order_at in milliseconds since 1970: the lapse test is arithmetic on it, the same on
    # both dialects, with no conversion of a million timestamps per scan.
    last_order_ms: float
    # The median time between consecutive orders; NULL for a one-time buyer.
    median_gap_ms: float | None = None
    # Sum of the order totals in units of 10**-4, as the repository counts money.
    monetary: int = Field(sa_type=BigInteger)
