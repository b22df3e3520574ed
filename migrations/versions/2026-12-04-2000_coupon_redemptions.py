"""Coupon redemptions: an account redeems a coupon once.

Before, only a subscription's current coupon was known, so a coupon could be applied again
(or swapped out and back in) to restart its duration. The redemptions made so far are
taken from the subscriptions that hold a coupon.

Revision ID: 8b3c6f1d2e47
Revises: 7e1a05c3b9d2
Create Date: 2026-12-04 20:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aihub_billing.kit.ids import new_id
from aihub_billing.models.types import UTCDateTime

revision: str = "8b3c6f1d2e47"
down_revision: str | None = "7e1a05c3b9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    redemptions = op.create_table(
        "coupon_redemptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("coupon_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_coupon_redemptions_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_coupon_redemptions_coupon_id_coupons")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_redemptions")),
        sa.UniqueConstraint(
            "coupon_id", "account_id", name=op.f("uq_coupon_redemptions_coupon_id_account_id")
        ),
    )
    with op.batch_alter_table("coupon_redemptions") as batch:
        batch.create_index(
            batch.f("ix_coupon_redemptions_account_id"), ["account_id"], unique=False
        )
    subscriptions = sa.table(
        "subscriptions",
        sa.column("coupon_id", sa.String()),
        sa.column("account_id", sa.String()),
        sa.column("created_at", UTCDateTime()),
    )
    held = op.get_bind().execute(
        sa.select(
            subscriptions.c.coupon_id,
            subscriptions.c.account_id,
            sa.func.min(subscriptions.c.created_at),  # typed as the column: an aware datetime
        )
        .where(subscriptions.c.coupon_id.is_not(None))
        .group_by(subscriptions.c.coupon_id, subscriptions.c.account_id)
    )
    rows = [
        {"id": new_id("cred", at), "coupon_id": coupon, "account_id": account, "created_at": at}
        for coupon, account, at in held
    ]
    if rows:
        op.bulk_insert(redemptions, rows)


def downgrade() -> None:
    with op.batch_alter_table("coupon_redemptions") as batch:
        batch.drop_index(batch.f("ix_coupon_redemptions_account_id"))
    op.drop_table("coupon_redemptions")
