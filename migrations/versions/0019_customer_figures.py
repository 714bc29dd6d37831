"""customer_figures: each customer's buying figures, kept up to date as orders arrive

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_customer_figures_recency": ["shop_id", "last_order_at", "email"],
    "ix_customer_figures_frequency": ["shop_id", "orders", "email"],
    "ix_customer_figures_monetary": ["shop_id", "monetary", "email"],
}
# One customer's standing (customer_summary) is counted from this index alone on PostgreSQL
# when it includes the other two dimensions; SQLite ignores INCLUDE.
INCLUDE = {"ix_customer_figures_monetary": ["last_order_at", "orders"]}

# The figures of every customer, from the orders that count as app/customers/repository.py
# counts them (with an email, not cancelled, not refunded in full; money in 10**-4 units, times
# in milliseconds). Written out here rather than imported, so this migration stays what it was
# when the repository's queries change; tests/test_customers.py checks the two agree.
# `{orders}` and `{refunds}` take a filter: none for the migration, one shop for bench/winback.py.
_BACKFILL_POSTGRESQL = """
INSERT INTO customer_figures (shop_id, email, orders, first_order_at, last_order_at,
                              last_order_ms, median_gap_ms, monetary)
SELECT shop_id, email, count(*), min(placed_at), max(placed_at),
       EXTRACT(EPOCH FROM max(placed_at)) * 1000,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY gap),
       sum(amount)
FROM (
    SELECT o.shop_id, o.email, o.placed_at, o.amount,
           date_part('epoch', o.placed_at - lag(o.placed_at)
               OVER (PARTITION BY o.shop_id, o.email ORDER BY o.placed_at)) * 1000 AS gap
    FROM (
        SELECT shop_id, email, placed_at, platform_id,
               ROUND(CAST(total_price AS NUMERIC) * 10000) AS amount
        FROM orders
        WHERE email IS NOT NULL AND cancelled_at IS NULL {orders}
    ) o
    LEFT JOIN (
        SELECT shop_id, order_platform_id, sum(ROUND(CAST(amount AS NUMERIC) * 10000)) AS refunded
        FROM refunds
        WHERE TRUE {refunds}
        GROUP BY shop_id, order_platform_id
    ) r ON r.shop_id = o.shop_id AND r.order_platform_id = o.platform_id
    WHERE r.refunded IS NULL OR r.refunded < o.amount
) AS bought
GROUP BY shop_id, email
"""

# SQLite has no percentile_cont: the median gap is the middle one (or the mean of the middle
# two) of a customer's gaps numbered by size, as the repository computes it.
_BACKFILL_SQLITE = """
INSERT INTO customer_figures (shop_id, email, orders, first_order_at, last_order_at,
                              last_order_ms, median_gap_ms, monetary)
SELECT shop_id, email, count(*), min(placed_at), max(placed_at),
       CAST(ROUND((julianday(max(placed_at)) - 2440587.5) * 86400000) AS INTEGER),
       avg(CASE WHEN gap IS NOT NULL AND rn * 2 BETWEEN n AND n + 2 THEN gap END),
       sum(amount)
FROM (
    SELECT gapped.*,
           row_number() OVER (PARTITION BY shop_id, email, gap IS NULL ORDER BY gap) AS rn,
           count(gap) OVER (PARTITION BY shop_id, email) AS n
    FROM (
        SELECT o.shop_id, o.email, o.placed_at, o.amount,
               o.t - lag(o.t) OVER (PARTITION BY o.shop_id, o.email ORDER BY o.placed_at) AS gap
        FROM (
            SELECT shop_id, email, placed_at, platform_id,
                   CAST(ROUND(CAST(total_price AS REAL) * 10000) AS INTEGER) AS amount,
                   CAST(ROUND((julianday(placed_at) - 2440587.5) * 86400000) AS INTEGER) AS t
            FROM orders
            WHERE email IS NOT NULL AND cancelled_at IS NULL {orders}
        ) o
        LEFT JOIN (
            SELECT shop_id, order_platform_id,
                   sum(CAST(ROUND(CAST(amount AS REAL) * 10000) AS INTEGER)) AS refunded
            FROM refunds
            WHERE 1 {refunds}
            GROUP BY shop_id, order_platform_id
        ) r ON r.shop_id = o.shop_id AND r.order_platform_id = o.platform_id
        WHERE r.refunded IS NULL OR r.refunded < o.amount
    ) AS gapped
) AS ranked
GROUP BY shop_id, email
"""


def backfill_sql(dialect: str, *, one_shop: bool = False) -> str:
    """The backfill statement; with `one_shop`, for the shop bound as :shop_id only."""
    statement = _BACKFILL_POSTGRESQL if dialect == "postgresql" else _BACKFILL_SQLITE
    only = "AND shop_id = :shop_id" if one_shop else ""
    return statement.format(orders=only, refunds=only)


def upgrade() -> None:
    op.create_table(
        "customer_figures",
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("first_order_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_order_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_order_ms", sa.Float(), nullable=False),
        sa.Column("median_gap_ms", sa.Float(), nullable=True),
        sa.Column("monetary", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"]),
        sa.PrimaryKeyConstraint("shop_id", "email"),
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "customer_figures", columns, postgresql_include=INCLUDE.get(name, []))
    op.execute(backfill_sql(op.get_bind().dialect.name))


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="customer_figures")
    op.drop_table("customer_figures")
