"""Usage rollups by watermark: the storing transaction's id on each event, and the roller's state.

On PostgreSQL events are now stored without touching usage_daily; a roller adds them once
their transactions are over and moves the watermark past them. Events stored before this
migration were rolled up by their own transaction: their `xact` stays NULL, below any
watermark.

Revision ID: 5c3e81a9d4f0
Revises: 9a7c64d2e387
Create Date: 2026-12-02 08:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aihub_billing.models.types import UTCDateTime

revision: str = "5c3e81a9d4f0"
down_revision: str | None = "9a7c64d2e387"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("xact", sa.BigInteger(), nullable=True))
        batch.create_index("ix_usage_events_xact", ["xact"], unique=False)
    state = op.create_table(
        "usage_rollup_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("rolled_through", sa.BigInteger(), nullable=False),
        sa.Column("rolled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollup_state")),
    )
    op.bulk_insert(state, [{"id": 1, "rolled_through": 0, "rolled_at": None}])


def downgrade() -> None:
    op.drop_table("usage_rollup_state")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_index("ix_usage_events_xact")
        batch.drop_column("xact")
