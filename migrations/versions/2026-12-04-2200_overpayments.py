"""Money a payment took that its invoice could not take is the customer's credit.

The balance ledger gains the kinds `overpayment` (a succeeded payment of an invoice that was
already paid, void or a draft, in another currency, or the excess over what was due) and
`refunded` (that credit taken back when the payment is refunded, so the customer is not paid
twice), and the columns `payment_id` and `refund_id` naming them (`refund_failed` names the
refund too when it gives a `refunded` debit back).

Revision ID: 9c2d7e4a1f30
Revises: 8b3c6f1d2e47
Create Date: 2026-12-04 22:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9c2d7e4a1f30"
down_revision: str | None = "8b3c6f1d2e47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS = "'credit_note', 'refund_failed', 'invoice_applied', 'invoice_voided', 'adjustment'"
_KINDS_NOW = f"{_KINDS}, 'overpayment', 'refunded'"


def upgrade() -> None:
    with op.batch_alter_table("balance_transactions") as batch:
        batch.add_column(sa.Column("payment_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("refund_id", sa.String(length=40), nullable=True))
        batch.create_index(
            batch.f("ix_balance_transactions_payment_id"), ["payment_id"], unique=False
        )
        batch.create_foreign_key(
            op.f("fk_balance_transactions_payment_id_payments"), "payments", ["payment_id"], ["id"]
        )
        batch.create_foreign_key(
            op.f("fk_balance_transactions_refund_id_refunds"), "refunds", ["refund_id"], ["id"]
        )
        batch.drop_constraint(op.f("ck_balance_transactions_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({_KINDS_NOW})")


def downgrade() -> None:
    op.execute(
        "DELETE FROM balance_transactions WHERE kind IN ('overpayment', 'refunded')"
        " OR refund_id IS NOT NULL"
    )
    with op.batch_alter_table("balance_transactions") as batch:
        batch.drop_constraint(op.f("ck_balance_transactions_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({_KINDS})")
        batch.drop_constraint(
            op.f("fk_balance_transactions_refund_id_refunds"), type_="foreignkey"
        )
        batch.drop_constraint(
            op.f("fk_balance_transactions_payment_id_payments"), type_="foreignkey"
        )
        batch.drop_index(batch.f("ix_balance_transactions_payment_id"))
        batch.drop_column("refund_id")
        batch.drop_column("payment_id")
