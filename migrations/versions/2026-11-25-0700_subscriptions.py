"""Subscriptions, coupons, invoice items, test clocks; jobs.test_clock_id.

Revision ID: 3a1c0e5b7d21
Revises: 8c0b7216de97
Create Date: 2026-11-25 07:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

from aihub_billing.models.types import PreciseDecimal, UTCDateTime

revision: str = "3a1c0e5b7d21"
down_revision: str | None = "8c0b7216de97"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("percent_off", PreciseDecimal(9, 6), nullable=True),
        sa.Column("amounts_off", JSON, nullable=True),
        sa.Column("duration", sa.String(length=16), nullable=False),
        sa.Column("duration_cycles", sa.Integer(), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("times_redeemed", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("plan_codes", JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "duration IN ('once', 'repeating', 'forever')", name=op.f("ck_coupons_duration")
        ),
        sa.CheckConstraint(
            "max_redemptions IS NULL OR times_redeemed <= max_redemptions",
            name=op.f("ck_coupons_redemptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("code", name=op.f("uq_coupons_code")),
    )
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("frozen_time", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_clocks")),
    )
    op.create_table(
        "test_clock_accounts",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("test_clock_id", sa.String(length=40), nullable=False),
        sa.Column("attached_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_test_clock_accounts_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["test_clock_id"],
            ["test_clocks.id"],
            name=op.f("fk_test_clock_accounts_test_clock_id_test_clocks"),
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_test_clock_accounts")),
    )
    with op.batch_alter_table("test_clock_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_test_clock_accounts_test_clock_id"), ["test_clock_id"], unique=False
        )

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("price_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("billing_anchor", UTCDateTime(), nullable=False),
        sa.Column("current_period_start", UTCDateTime(), nullable=False),
        sa.Column("current_period_end", UTCDateTime(), nullable=False),
        sa.Column("billed_through", UTCDateTime(), nullable=True),
        sa.Column("trial_start", UTCDateTime(), nullable=True),
        sa.Column("trial_end", UTCDateTime(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.Column("pending_plan_id", sa.String(length=40), nullable=True),
        sa.Column("pending_price_id", sa.String(length=40), nullable=True),
        sa.Column("coupon_id", sa.String(length=40), nullable=True),
        sa.Column("coupon_cycles_left", sa.Integer(), nullable=True),
        sa.Column("setup_fee_billed", sa.Boolean(), nullable=False),
        sa.Column("payment_provider", sa.String(length=16), nullable=True),
        sa.Column("payment_method_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('trialing', 'active', 'past_due', 'paused', 'canceled', 'incomplete')",
            name=op.f("ck_subscriptions_status"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_subscriptions_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_subscriptions_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["pending_plan_id"], ["plans.id"], name=op.f("fk_subscriptions_pending_plan_id_plans")
        ),
        sa.ForeignKeyConstraint(
            ["pending_price_id"],
            ["plan_prices.id"],
            name=op.f("fk_subscriptions_pending_price_id_plan_prices"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_subscriptions_plan_id_plans")
        ),
        sa.ForeignKeyConstraint(
            ["price_id"], ["plan_prices.id"], name=op.f("fk_subscriptions_price_id_plan_prices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriptions_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            "uq_subscriptions_open_account",
            ["account_id"],
            unique=True,
            sqlite_where=sa.text("status != 'canceled'"),
            postgresql_where=sa.text("status <> 'canceled'"),
        )

    op.create_table(
        "invoice_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("quantity", PreciseDecimal(), nullable=False),
        sa.Column("unit_price", PreciseDecimal(), nullable=False),
        sa.Column("amount", PreciseDecimal(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "kind IN ('subscription_fee', 'proration_credit', 'proration_charge', 'setup_fee', 'discount')",
            name=op.f("ck_invoice_items_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_invoice_items_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_invoice_items_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_items")),
    )
    with op.batch_alter_table("invoice_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_items_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_invoice_items_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_invoice_items_subscription_id"), ["subscription_id"], unique=False
        )

    op.create_table(
        "subscription_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("from_plan_id", sa.String(length=40), nullable=True),
        sa.Column("to_plan_id", sa.String(length=40), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("actor_key_id", sa.String(length=40), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_subscription_events_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_events_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_events")),
    )
    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscription_events_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subscription_events_subscription_id"), ["subscription_id"], unique=False
        )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_clock_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_test_clock_id"), ["test_clock_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_test_clock_id"))
        batch_op.drop_column("test_clock_id")

    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscription_events_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_subscription_events_account_id"))

    op.drop_table("subscription_events")
    with op.batch_alter_table("invoice_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_items_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_invoice_items_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_invoice_items_account_id"))

    op.drop_table("invoice_items")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_subscriptions_open_account",
            sqlite_where=sa.text("status != 'canceled'"),
            postgresql_where=sa.text("status <> 'canceled'"),
        )
        batch_op.drop_index(batch_op.f("ix_subscriptions_account_id"))

    op.drop_table("subscriptions")
    with op.batch_alter_table("test_clock_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_test_clock_accounts_test_clock_id"))

    op.drop_table("test_clock_accounts")
    op.drop_table("test_clocks")
    op.drop_table("coupons")
