"""Usage: model prices, usage events (unique per account and event id), daily rollups.

Revision ID: 4b2d1f6c8e32
Revises: 3a1c0e5b7d21
Create Date: 2026-11-25 06:43:59.737435+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

from aihub_billing.models.types import PreciseDecimal, UTCDateTime

revision: str = "4b2d1f6c8e32"
down_revision: str | None = "3a1c0e5b7d21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_prices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("input_per_1m", PreciseDecimal(precision=38, scale=12), nullable=False),
        sa.Column("output_per_1m", PreciseDecimal(precision=38, scale=12), nullable=False),
        sa.Column("cached_input_per_1m", PreciseDecimal(precision=38, scale=12), nullable=True),
        sa.Column("effective_from", UTCDateTime(), nullable=False),
        sa.Column("effective_to", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from",
            name=op.f("ck_model_prices_effective_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_prices")),
        sa.UniqueConstraint(
            "model", "effective_from", name=op.f("uq_model_prices_model_effective_from")
        ),
    )
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("cost_center", sa.String(length=100), nullable=False),
        sa.Column("status_class", sa.SmallInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", PreciseDecimal(precision=38, scale=18), nullable=False),
        sa.Column("latency_hist", JSON, nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id",
            "day",
            "model",
            "currency",
            "member_id",
            "user_id",
            "cost_center",
            "status_class",
            "shard",
            name=op.f("pk_usage_daily"),
        ),
    )
    op.create_table(
        "usage_events",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("usage_type", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=True),
        sa.Column("user_id", sa.String(length=200), nullable=True),
        sa.Column("cost_center", sa.String(length=100), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("storage_gb", PreciseDecimal(precision=20, scale=6), nullable=True),
        sa.Column("cost", PreciseDecimal(precision=38, scale=18), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("price_id", sa.String(length=40), nullable=True),
        sa.Column("reservation_id", sa.String(length=100), nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        sa.PrimaryKeyConstraint("account_id", "event_id", name=op.f("pk_usage_events")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_account_time", ["account_id", "occurred_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_account_time")

    op.drop_table("usage_events")
    op.drop_table("usage_daily")
    op.drop_table("model_prices")
