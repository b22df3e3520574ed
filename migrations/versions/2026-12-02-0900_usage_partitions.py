"""Usage events partitioned by month (PostgreSQL); event keys in a table of their own;
status indexes on invoices and subscriptions.

A key of a partitioned table must include the partition key, and the same event id may come
back with another timestamp: "counted once, forever" moves to usage_event_keys, written in
the same statement as the event. On PostgreSQL usage_events becomes a table partitioned by
range of occurred_at, with a partition per month that holds events (and the coming ones)
and a default partition for the rest; the scheduler creates the months ahead. On SQLite
usage_events only loses its primary key.

Revision ID: 6d4f92b0e5a1
Revises: 5c3e81a9d4f0
Create Date: 2026-12-02 09:00:00+00:00
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "6d4f92b0e5a1"
down_revision: str | None = "5c3e81a9d4f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 3  # as usage/partitions.py keeps them


def _months(first: date, last: date) -> list[date]:
    out, month = [], first.replace(day=1)
    while month <= last:
        out.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return out


def _partition_sql(month: date) -> str:
    following = _months(month, date(month.year + 1, month.month, 1))[1]
    return (
        f"CREATE TABLE usage_events_y{month.year:04d}m{month.month:02d} PARTITION OF "
        f"usage_events_partitioned FOR VALUES FROM ('{month.isoformat()}T00:00:00+00:00') "
        f"TO ('{following.isoformat()}T00:00:00+00:00')"
    )


def upgrade() -> None:
    op.create_index("ix_invoices_account_status", "invoices", ["account_id", "status", "id"])
    op.create_index("ix_subscriptions_status", "subscriptions", ["status"])
    op.create_table(
        "usage_event_keys",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "event_id", name=op.f("pk_usage_event_keys")),
    )
    op.execute("INSERT INTO usage_event_keys SELECT account_id, event_id FROM usage_events")
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("usage_events", recreate="always") as batch:
            batch.drop_constraint("pk_usage_events", type_="primary")
        return
    bind = op.get_bind()
    first, last = bind.execute(
        sa.text("SELECT min(occurred_at), max(occurred_at) FROM usage_events")
    ).one()
    today = datetime.now(UTC).date()  # noqa: TID251 - a migration runs at the wall clock
    ahead = _months(today, date(today.year + 1, today.month, 1))[MONTHS_AHEAD]
    start = min(first.date(), today) if first is not None else today
    end = max(last.date(), ahead) if last is not None else ahead
    op.execute(
        "CREATE TABLE usage_events_partitioned (LIKE usage_events INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (occurred_at)"
    )
    op.execute("CREATE TABLE usage_events_default PARTITION OF usage_events_partitioned DEFAULT")
    for month in _months(start, end):
        op.execute(_partition_sql(month))
    op.execute("INSERT INTO usage_events_partitioned SELECT * FROM usage_events")
    op.execute("DROP TABLE usage_events")
    op.execute("ALTER TABLE usage_events_partitioned RENAME TO usage_events")
    op.create_index("ix_usage_events_account_time", "usage_events", ["account_id", "occurred_at"])
    op.create_index("ix_usage_events_xact", "usage_events", ["xact"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE usage_events_plain (LIKE usage_events INCLUDING DEFAULTS)"
        )
        op.execute("INSERT INTO usage_events_plain SELECT * FROM usage_events")
        op.execute("DROP TABLE usage_events")  # and its partitions
        op.execute("ALTER TABLE usage_events_plain RENAME TO usage_events")
        op.create_primary_key("pk_usage_events", "usage_events", ["account_id", "event_id"])
        op.create_index(
            "ix_usage_events_account_time", "usage_events", ["account_id", "occurred_at"]
        )
        op.create_index("ix_usage_events_xact", "usage_events", ["xact"])
    else:
        with op.batch_alter_table("usage_events", recreate="always") as batch:
            batch.create_primary_key("pk_usage_events", ["account_id", "event_id"])
    op.drop_table("usage_event_keys")
    op.drop_index("ix_subscriptions_status", "subscriptions")
    op.drop_index("ix_invoices_account_status", "invoices")
