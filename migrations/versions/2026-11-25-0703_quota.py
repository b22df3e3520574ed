"""Quota: per-account overrides, violations, notification targets.

Revision ID: 6d4f318eaf54
Revises: 5c3e207d9f43
Create Date: 2026-11-25 06:46:25.967598+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

from aihub_billing.models.types import UTCDateTime

revision: str = "6d4f318eaf54"
down_revision: str | None = "5c3e207d9f43"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "quota_notification_targets",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("webhook_secret", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_quota_notification_targets_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_quota_notification_targets")),
    )
    op.create_table(
        "quota_overrides",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("plan_code", sa.String(length=64), nullable=True),
        sa.Column("included_api_calls", sa.BigInteger(), nullable=True),
        sa.Column("included_tokens", sa.BigInteger(), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.BigInteger(), nullable=True),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("calls_policy", sa.String(length=8), nullable=True),
        sa.Column("tokens_policy", sa.String(length=8), nullable=True),
        sa.Column("allowed_models", JSON, nullable=True),
        sa.Column("member_calls_limit", sa.BigInteger(), nullable=True),
        sa.Column("member_tokens_limit", sa.BigInteger(), nullable=True),
        sa.Column("member_caps", JSON, nullable=True),
        sa.Column("thresholds", JSON, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "calls_policy IN ('block', 'bill')", name=op.f("ck_quota_overrides_calls_policy")
        ),
        sa.CheckConstraint(
            "tokens_policy IN ('block', 'bill')", name=op.f("ck_quota_overrides_tokens_policy")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_quota_overrides_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_quota_overrides")),
    )
    op.create_table(
        "quota_violations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=True),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("limit_name", sa.String(length=32), nullable=False),
        sa.Column("limit_value", sa.BigInteger(), nullable=False),
        sa.Column("attempted", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "action IN ('blocked', 'billed')", name=op.f("ck_quota_violations_action")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_quota_violations_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_violations")),
    )
    with op.batch_alter_table("quota_violations", schema=None) as batch_op:
        batch_op.create_index("ix_quota_violations_account_at", ["account_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("quota_violations", schema=None) as batch_op:
        batch_op.drop_index("ix_quota_violations_account_at")

    op.drop_table("quota_violations")
    op.drop_table("quota_overrides")
    op.drop_table("quota_notification_targets")
