"""an index of sends by customer: smart sending, the offer guard and attribution ask by email

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_sends_shop_email_sent", "sends", ["shop_id", "email", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_sends_shop_email_sent", table_name="sends")
