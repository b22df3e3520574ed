"""Refunds know their credit note, a note's refund that fails is credited to the balance, and
subscriptions keep the time of the newest provider status applied.

`refunds.credit_note_id` names the note a refund pays out (a note refunded through several
payments has one refund per payment; before, only the note's first refund was known, by
`credit_notes.refund_id`, which fills the new column for the refunds made so far). The
balance ledger gains the kind `refund_failed`: the credit of a note's refund that the
provider failed or canceled. `subscriptions.provider_status_at` is the creation time of the
provider event whose status was applied last: an older one delivered late is ignored.

Revision ID: 7e1a05c3b9d2
Revises: 6d4f92b0e5a1
Create Date: 2026-12-04 19:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aihub_billing.models.types import UTCDateTime

revision: str = "7e1a05c3b9d2"
down_revision: str | None = "6d4f92b0e5a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS = "'credit_note', 'invoice_applied', 'invoice_voided', 'adjustment'"
_KINDS_NOW = "'credit_note', 'refund_failed', 'invoice_applied', 'invoice_voided', 'adjustment'"


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("credit_note_id", sa.String(length=40), nullable=True))
        batch.create_index(batch.f("ix_refunds_credit_note_id"), ["credit_note_id"], unique=False)
        batch.create_foreign_key(
            op.f("fk_refunds_credit_note_id_credit_notes"),
            "credit_notes",
            ["credit_note_id"],
            ["id"],
        )
    op.execute(
        "UPDATE refunds SET credit_note_id ="
        " (SELECT n.id FROM credit_notes AS n WHERE n.refund_id = refunds.id)"
        " WHERE EXISTS (SELECT 1 FROM credit_notes AS n WHERE n.refund_id = refunds.id)"
    )
    with op.batch_alter_table("balance_transactions") as batch:
        batch.drop_constraint(op.f("ck_balance_transactions_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({_KINDS_NOW})")
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("provider_status_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("provider_status_at")
    op.execute("DELETE FROM balance_transactions WHERE kind = 'refund_failed'")
    with op.batch_alter_table("balance_transactions") as batch:
        batch.drop_constraint(op.f("ck_balance_transactions_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({_KINDS})")
    with op.batch_alter_table("refunds") as batch:
        batch.drop_constraint(op.f("fk_refunds_credit_note_id_credit_notes"), type_="foreignkey")
        batch.drop_index(batch.f("ix_refunds_credit_note_id"))
        batch.drop_column("credit_note_id")
