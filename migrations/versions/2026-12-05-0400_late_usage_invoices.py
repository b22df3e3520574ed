"""Invoices gain the billing reason `late_usage`: an ended subscription's last period, billed
once more for the usage that reached it after its final invoice was finalized (a running
subscription bills that on its next invoice; an ended one has none).

Revision ID: d5e2a7c4f019
Revises: c3f8a1d6e924
Create Date: 2026-12-05 04:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d5e2a7c4f019"
down_revision: str | None = "c3f8a1d6e924"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REASONS = "'subscription_create', 'subscription_cycle', 'subscription_final', 'manual'"
_REASONS_NOW = (
    "'subscription_create', 'subscription_cycle', 'subscription_final', 'late_usage', 'manual'"
)


def upgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.drop_constraint(op.f("ck_invoices_billing_reason"), type_="check")
        batch.create_check_constraint("billing_reason", f"billing_reason IN ({_REASONS_NOW})")


def downgrade() -> None:
    op.execute("UPDATE invoices SET billing_reason = 'manual' WHERE billing_reason = 'late_usage'")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_constraint(op.f("ck_invoices_billing_reason"), type_="check")
        batch.create_check_constraint("billing_reason", f"billing_reason IN ({_REASONS})")
