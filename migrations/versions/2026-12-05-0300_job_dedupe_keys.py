"""Dedupe keys that outlive their jobs (`job_dedupe_keys`): `jobs.prune` deletes succeeded
jobs after a week, and with them the key that made a threshold notification once per
(account, limit, threshold, period). The keys of the `quota.notify` jobs still stored are
copied, held until their period ends.

Revision ID: c3f8a1d6e924
Revises: b7d2e5f9a812
Create Date: 2026-12-05 03:00:00+00:00
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from aihub_billing.models.types import UTCDateTime

revision: str = "c3f8a1d6e924"
down_revision: str | None = "b7d2e5f9a812"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    keys = op.create_table(
        "job_dedupe_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_job_dedupe_keys")),
    )
    op.create_index(
        op.f("ix_job_dedupe_keys_expires_at"), "job_dedupe_keys", ["expires_at"], unique=False
    )
    jobs = sa.table(
        "jobs",
        sa.column("name", sa.String()),
        sa.column("dedupe_key", sa.String()),
        sa.column("payload", JSON),
    )
    rows = op.get_bind().execute(
        sa.select(jobs.c.dedupe_key, jobs.c.payload).where(
            jobs.c.name == "quota.notify", jobs.c.dedupe_key.is_not(None)
        )
    )
    held = [
        {"key": key, "expires_at": datetime.fromisoformat(payload["period_end"])}
        for key, payload in rows
        if payload.get("period_end")
    ]
    if held:
        op.bulk_insert(keys, held)


def downgrade() -> None:
    op.drop_table("job_dedupe_keys")
