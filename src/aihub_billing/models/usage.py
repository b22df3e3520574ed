"""Usage events (append-only, one row per call or storage snapshot) and their daily rollups."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Date, Index, Integer, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, JSONType
from aihub_billing.models.types import PreciseDecimal


class UsageEventKey(Base):
    """The (account, event id) of every stored event: its primary key counts an event once,
    forever. It lives apart from usage_events because a key of a table partitioned by month
    must include the month, and a retry may carry another timestamp."""

    __tablename__ = "usage_event_keys"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)


# On PostgreSQL usage_events is partitioned by month of occurred_at: usage_events_default
# takes what no month holds, and usage_events_yYYYYmMM the months (usage/partitions.py).
_PARTITION = re.compile(r"^usage_events_(default|y\d{4}m\d{2})$")


def is_usage_partition(table_name: str) -> bool:
    """A partition of usage_events (made by migrations and the scheduler, not the models)."""
    return _PARTITION.match(table_name) is not None


def include_in_migrations(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's include_object: the models describe everything but the partitions (and
    their indexes, which PostgreSQL makes from the parent's)."""
    table = getattr(obj, "table", obj)
    table_name = name if type_ == "table" else getattr(table, "name", None)
    return not (table_name and is_usage_partition(table_name))


class UsageEvent(Base):
    """A recorded event, one per UsageEventKey (the key is written first, in the same
    statement, and an event only when its key is new).

    No foreign keys: the account comes from the authenticated key, and a per-row FK check
    would cost the hot path on every insert. No primary key in the database either (the
    key table holds it); the mapper identifies rows by (account_id, event_id).
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_account_time", "account_id", "occurred_at"),
        Index("ix_usage_events_xact", "xact"),
    )

    account_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(100))
    usage_type: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    # The member whose key recorded the event; user_id is the caller's own end-user id.
    member_id: Mapped[str | None] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(String(200))
    cost_center: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    status_code: Mapped[int] = mapped_column(SmallInteger)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    storage_gb: Mapped[Decimal | None] = mapped_column(PreciseDecimal(20, 6))
    # Unrounded cost in `currency` from the price row `price_id`; NULL for storage snapshots.
    cost: Mapped[Decimal | None] = mapped_column(PreciseDecimal())
    currency: Mapped[str | None] = mapped_column(String(3))
    price_id: Mapped[str | None] = mapped_column(String(40))
    reservation_id: Mapped[str | None] = mapped_column(String(100))
    event_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    # PostgreSQL: the id of the transaction that stored the event (pg_current_xact_id()),
    # which the rollup watermark (UsageRollupState) moves past once the event is in
    # usage_daily. NULL where the insert's own transaction kept the rollups (SQLite).
    xact: Mapped[int | None] = mapped_column(BigInteger)

    __mapper_args__ = {"primary_key": [account_id, event_id]}


class UsageDaily(Base):
    """API-call usage summed per account, UTC day and dimensions.

    SQLite keeps it in the insert's transaction; on PostgreSQL a roller adds events in bulk
    once their transactions are over (UsageRollupState), and readers add the events past its
    watermark, so every figure is exact the moment an event is acknowledged.

    Absent dimensions are '' (not NULL) so the primary key matches them on upsert.
    """

    __tablename__ = "usage_daily"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    cost_center: Mapped[str] = mapped_column(String(100), primary_key=True)
    # status_code // 100 (2 = 2xx ...); 2 and 3 count as successful.
    status_class: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    # Rows written before the roller spread concurrent writers over a few shards per key;
    # readers sum over shards. Everything written now is shard 0.
    shard: Mapped[int] = mapped_column(
        SmallInteger, primary_key=True, default=0, server_default=text("0")
    )
    requests: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[Decimal] = mapped_column(PreciseDecimal())
    # Counts of events per fixed latency bucket (usage/histogram.py); events without a latency
    # are in `requests` only.
    latency_hist: Mapped[list[int]] = mapped_column(JSONType)


class UsageRollupState(Base):
    """The rollup watermark (one row): every event whose `xact` is below `rolled_through` is
    in usage_daily, and none at or above it."""

    __tablename__ = "usage_rollup_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    rolled_through: Mapped[int] = mapped_column(BigInteger)
    rolled_at: Mapped[datetime | None]
