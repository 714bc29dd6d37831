"""orders: a covering index for win-back

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "ix_orders_shop_email_placed"
NEW = "ix_orders_shop_email_placed_covering"
KEYS = ["shop_id", "email", "placed_at"]
# Every other column the lapse and RFM queries read from an order. On PostgreSQL the index then
# answers them alone (an index-only scan, once VACUUM has set the visibility map) instead of
# fetching every order from the heap in index order. SQLite has no INCLUDE and ignores it; its
# shops are small.
INCLUDE = ["total_price", "cancelled_at", "platform_id"]


def upgrade() -> None:
    # Same keys as the index it replaces, so the per-customer lookups it served still use it.
    op.create_index(NEW, "orders", KEYS, unique=False, postgresql_include=INCLUDE)
    op.drop_index(OLD, table_name="orders")


def downgrade() -> None:
    op.create_index(OLD, "orders", KEYS, unique=False)
    op.drop_index(NEW, table_name="orders")
