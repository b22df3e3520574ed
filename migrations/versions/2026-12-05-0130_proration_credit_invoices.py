"""A proration credit's items name the invoice whose charge they give back
(`invoice_items.credited_invoice_id`), so that credit notes and proration credits on one
invoice never return more than it holds. Earlier items stay NULL.

Revision ID: b7d2e5f9a812
Revises: a4e1c9b7d203
Create Date: 2026-12-05 01:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d2e5f9a812"
down_revision: str | None = "a4e1c9b7d203"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_items") as batch:
        batch.add_column(sa.Column("credited_invoice_id", sa.String(length=40), nullable=True))
        batch.create_index(
            batch.f("ix_invoice_items_credited_invoice_id"), ["credited_invoice_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("invoice_items") as batch:
        batch.drop_index(batch.f("ix_invoice_items_credited_invoice_id"))
        batch.drop_column("credited_invoice_id")
