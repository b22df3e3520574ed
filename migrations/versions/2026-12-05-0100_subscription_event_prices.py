"""Each subscription history row names the price after its change (`to_price_id`), so an
invoice refreshed or adjusted after a billing-cycle change keeps the overage rates of the
price its period was on. Rows from before stay NULL: they fall back to the current price's
cycle, as before.

Revision ID: a4e1c9b7d203
Revises: 9c2d7e4a1f30
Create Date: 2026-12-05 01:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a4e1c9b7d203"
down_revision: str | None = "9c2d7e4a1f30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscription_events") as batch:
        batch.add_column(sa.Column("to_price_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscription_events") as batch:
        batch.drop_column("to_price_id")
