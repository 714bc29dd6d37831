"""the inbox indexed by shop and age: the retention purge deletes a shop's old entries

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # (shop_id, received_at) serves every query the index on shop_id alone served, so it takes
    # its place: the inbox's INSERT, the ingest hot path, keeps the same number of indexes.
    op.create_index("ix_inbox_shop_received", "inbox", ["shop_id", "received_at"])
    op.drop_index("ix_inbox_shop_id", table_name="inbox")


def downgrade() -> None:
    op.create_index("ix_inbox_shop_id", "inbox", ["shop_id"])
    op.drop_index("ix_inbox_shop_received", table_name="inbox")
