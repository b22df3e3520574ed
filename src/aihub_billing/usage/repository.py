"""Every query of usage metering: prices, batched event inserts, rollup upserts, aggregates.

The hot path: on PostgreSQL one statement for events and rollups, the batch passed as one JSON
parameter; on SQLite one insert and a read-modify-write of the rollups.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

from pydantic_core import to_json
from sqlalchemy import (
    ColumnElement,
    Date,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.kit.periods import midnight, next_month
from aihub_billing.models import (
    ModelPrice,
    UsageDaily,
    UsageEvent,
    UsageEventKey,
    UsageRollupState,
)
from aihub_billing.usage import histogram

# Rollup dimensions in primary-key order; also the order rollup deltas are upserted in, so
# concurrent batches lock rollup rows in the same order and cannot deadlock.
ROLLUP_KEY = (
    "day",
    "model",
    "currency",
    "member_id",
    "user_id",
    "cost_center",
    "status_class",
)
RollupKey = tuple[date, str, str, str, str, str, int]


@dataclass(slots=True)
class RollupDelta:
    """What a batch adds to one usage_daily row."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_hist: list[int] | None = None

    def add(
        self, *, input_tokens: int, cached: int, output: int, cost: Decimal, latency: int | None
    ) -> None:
        self.requests += 1
        self.input_tokens += input_tokens
        self.cached_input_tokens += cached
        self.output_tokens += output
        self.cost += cost
        if self.latency_hist is None:
            self.latency_hist = histogram.empty()
        if latency is not None:
            self.latency_hist[histogram.bucket_of(latency)] += 1


# Columns of usage_events in insert order.
EVENT_COLUMNS: tuple[str, ...] = (
    "account_id",
    "event_id",
    "usage_type",
    "model",
    "occurred_at",
    "received_at",
    "member_id",
    "user_id",
    "cost_center",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "status_code",
    "latency_ms",
    "storage_gb",
    "cost",
    "currency",
    "price_id",
    "reservation_id",
    "metadata",
)
# Columns of one event row (a tuple, in this order) as the tracker hands them over: `cost`
# is the exact Decimal as text (str), `price` the 1-based position of the event's price in
# EventBatch.prices (None: no price), `metadata` the event's dict (or None). What is the same
# for the whole batch (account, member, receipt time) is not repeated per row.
ROW_COLUMNS: tuple[str, ...] = (
    "event_id",
    "usage_type",
    "model",
    "occurred_at",
    "user_id",
    "cost_center",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "status_code",
    "latency_ms",
    "storage_gb",
    "cost",
    "price",
    "reservation_id",
    "metadata",
)
EventRow = tuple[Any, ...]


@dataclass(slots=True)
class EventBatch:
    """Events to insert for one account: rows (ROW_COLUMNS tuples, one per event id)."""

    account_id: str
    member_id: str | None
    received_at: datetime
    prices: list[tuple[str, str]]  # (price id, currency); rows refer to them by position
    rows: list[EventRow]

    def records(self) -> list[dict[str, Any]]:
        """Each row as a dict of every EVENT_COLUMNS column."""
        out = []
        for row in self.rows:
            record = dict(zip(ROW_COLUMNS, row, strict=True))
            price = record.pop("price")
            record["price_id"], record["currency"] = (
                (None, None) if price is None else self.prices[price - 1]
            )
            record["account_id"] = self.account_id
            record["member_id"] = self.member_id
            record["received_at"] = self.received_at
            out.append(record)
        return out


_COLUMN_LIST = ", ".join(EVENT_COLUMNS)
_ROLLUP_TARGET = "account_id, " + ", ".join(ROLLUP_KEY) + ", shard"
# histogram.bucket_of in SQL: width_bucket counts the bounds <= latency - 1, i.e. < latency.
_BOUNDS = "ARRAY[" + ", ".join(map(str, histogram.BOUNDS_MS)) + "]::int[]"
_BUCKET = f"width_bucket(latency_ms - 1, {_BOUNDS})"
# The batch travels as ONE parameter: a JSON array with one array per event (ROW_COLUMNS
# order), unpacked by jsonb_array_elements; the batch's account, member, receipt time and
# prices are parameters of their own (a row names its price by position), which keeps the
# JSON, its serialization and its trip to the server 40% smaller. Serializing it is one
# Rust call (pydantic-core), and it replaces a COPY into a temporary staging table (its
# CREATE, the COPY round trips, the heap writes and the DELETE that emptied it).
_PG_TYPES = {
    "occurred_at": "timestamptz",
    "input_tokens": "bigint",
    "cached_input_tokens": "bigint",
    "output_tokens": "bigint",
    "status_code": "smallint",
    "latency_ms": "integer",
    "storage_gb": "numeric",
    "cost": "numeric",
    "price": "integer",
}
_ROW = {column: n for n, column in enumerate(ROW_COLUMNS)}
_PG_BATCH = {
    "account_id": "CAST(:account_id AS text)",
    "member_id": "CAST(:member_id AS text)",
    "received_at": "CAST(:received_at AS timestamptz)",
    "price_id": f"(CAST(:price_ids AS text[]))[CAST(e->>{_ROW['price']} AS integer)]",
    "currency": f"(CAST(:currencies AS text[]))[CAST(e->>{_ROW['price']} AS integer)]",
    # Nested in the batch's JSON (no string inside a string); a JSON null there is no
    # metadata (SQL NULL).
    "metadata": f"NULLIF(e->{_ROW['metadata']}, 'null'::jsonb)",
}
_PG_UNPACKED = ", ".join(
    f"{_PG_BATCH[column]} AS {column}"
    if column in _PG_BATCH
    else f"CAST(e->>{_ROW[column]} AS {_PG_TYPES.get(column, 'text')}) AS {column}"
    for column in EVENT_COLUMNS
)
# The events in the order of the array, which the caller sorts by event id: concurrent
# batches with ids in common wait for each other on the keys in one order and cannot
# deadlock. `xact` (the storing transaction, once per statement) is what the rollup
# watermark goes by. The batch is unpacked once (a CTE read twice is materialized).
_PG_STAGED = (
    f"WITH staged AS (SELECT {_PG_UNPACKED},"
    " (SELECT CAST(CAST(pg_current_xact_id() AS text) AS bigint)) AS xact"
    " FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e)"
)
_KEYS_INSERT = "INSERT INTO usage_event_keys (account_id, event_id) SELECT account_id, event_id"
# Fails as a whole on any id already stored (see _insert_staged): every key, every event.
_PG_INSERT_NEW_EVENTS = text(
    f"{_PG_STAGED}, keys AS ({_KEYS_INSERT} FROM staged)"
    f" INSERT INTO usage_events ({_COLUMN_LIST}, xact) SELECT {_COLUMN_LIST}, xact FROM staged"
)
# Skips the ids already stored: the events whose keys were new, named as one array (one row
# to fetch).
_PG_INSERT_EVENTS = text(
    f"{_PG_STAGED}, new AS ({_KEYS_INSERT} FROM staged"
    " ON CONFLICT (account_id, event_id) DO NOTHING RETURNING event_id),"
    f" ins AS (INSERT INTO usage_events ({_COLUMN_LIST}, xact)"
    f" SELECT {', '.join('s.' + c for c in EVENT_COLUMNS)}, s.xact"
    " FROM staged AS s JOIN new USING (event_id))"
    " SELECT array_agg(event_id) FROM new"
)
# Below this many events the savepoint's two round trips cost more than ON CONFLICT saves
# (/usage/track sends one).
OPTIMISTIC_INSERT_MIN = 64
_UNIQUE_VIOLATION = "23505"

# The roller (PostgreSQL). Every transaction with an id below the oldest one still running
# (the snapshot's xmin) is over: its events are all visible, or never will be. Events with
# `xact` in [watermark, horizon) are therefore final; they are added to usage_daily and the
# watermark moves to the horizon in one transaction, so a reader sees both or neither.
_ROLL_STATE = text(
    "INSERT INTO usage_rollup_state (id, rolled_through) VALUES (1, 0) ON CONFLICT DO NOTHING"
)
_ROLL_LOCK = text(
    "SELECT rolled_through FROM usage_rollup_state WHERE id = 1 FOR UPDATE SKIP LOCKED"
)
_WATERMARK_ROW = text("SELECT 1 FROM usage_rollup_state WHERE id = 1")
_ROLL_HORIZON = text("SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)")
# Grouping by hash (one pass, no sort of the whole range) is what makes the roller cheap;
# the upsert goes in key order. Sorting and grouping compare bytes (COLLATE "C").
_C = 'COLLATE "C"'
# Events are first counted per key and latency bucket, then the buckets of a key folded into
# its histogram: 20 FILTER aggregates run per (key, bucket) group instead of per event.
_HISTOGRAM = (
    "jsonb_build_array("
    + ", ".join(f"coalesce(sum(n) FILTER (WHERE b = {i}), 0)" for i in range(histogram.SIZE))
    + ")"
)
# Element-wise sum of the stored and the new bucket arrays, element by element (no joins).
_HISTOGRAM_SUM = (
    "jsonb_build_array("
    + ", ".join(
        f"(usage_daily.latency_hist->>{i})::bigint + (EXCLUDED.latency_hist->>{i})::bigint"
        for i in range(histogram.SIZE)
    )
    + ")"
)
_KEYS = "account_id, day, model, currency, member_id, user_id, cost_center, status_class"
_ROLL = text(
    f"INSERT INTO usage_daily ({_ROLLUP_TARGET}, requests, input_tokens,"
    " cached_input_tokens, output_tokens, cost, latency_hist)"
    f" SELECT {_KEYS}, 0, sum(n), sum(input_tokens), sum(cached_input_tokens),"
    f" sum(output_tokens), sum(cost), {_HISTOGRAM}"
    f" FROM (SELECT account_id {_C}, (occurred_at AT TIME ZONE 'UTC')::date,"
    f" model {_C}, currency {_C}, coalesce(member_id, '') {_C}, coalesce(user_id, '') {_C},"
    f" coalesce(cost_center, '') {_C}, status_code / 100, {_BUCKET}, count(*),"
    " sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(cost)"
    " FROM usage_events"
    " WHERE xact >= :since AND xact < :horizon AND usage_type = 'api_call'"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9)"
    f" AS e({_KEYS}, b, n, input_tokens, cached_input_tokens, output_tokens, cost)"
    f" GROUP BY {_KEYS} ORDER BY {_KEYS}"
    f" ON CONFLICT ({_ROLLUP_TARGET}) DO UPDATE SET"
    " requests = usage_daily.requests + EXCLUDED.requests,"
    " input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens,"
    " cached_input_tokens = usage_daily.cached_input_tokens + EXCLUDED.cached_input_tokens,"
    " output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens,"
    " cost = usage_daily.cost + EXCLUDED.cost,"
    f" latency_hist = {_HISTOGRAM_SUM}"
)
_ROLLED = text(
    "UPDATE usage_rollup_state SET rolled_through = :horizon, rolled_at = :now WHERE id = 1"
)
_PARTITIONED = text(
    "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
    " WHERE c.relname = 'usage_events' AND pg_table_is_visible(c.oid))"
)
_TABLE_EXISTS = text("SELECT to_regclass(:name) IS NOT NULL")
_PARTITION_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('usage_events:partitions'))")
# For this transaction: group by hash, and no JIT (the cost penalty that steers the planner
# off sorting would otherwise make it compile the statement: half a second per pass).
_HASH_ONLY = text("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)")


# SQLite's default limit is 32,766 variables per statement; 19 columns x 500 rows stays below.
_SQLITE_CHUNK = 500


_EVENT_ID = itemgetter(ROW_COLUMNS.index("event_id"))
_SIZE = histogram.SIZE
_SUMMED = (
    "requests",
    "successful_requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost",
)
# 2xx and 3xx, as usage_daily.status_class 2 and 3.
_SUCCESSFUL = and_(UsageEvent.status_code >= 200, UsageEvent.status_code < 400)
# No state row (an emptied database) is watermark 0: nothing rolled up.
_CURRENT_WATERMARK = func.coalesce(
    select(UsageRollupState.rolled_through).where(UsageRollupState.id == 1).scalar_subquery(),
    0,
)

_PRICES = ModelPrice.__table__
# What a price lookup needs of a ModelPrice (a Core row with these attributes).
PriceRow = Any
_TIMELINES = select(
    _PRICES.c.id,
    _PRICES.c.model,
    _PRICES.c.currency,
    _PRICES.c.input_per_1m,
    _PRICES.c.output_per_1m,
    _PRICES.c.cached_input_per_1m,
    _PRICES.c.effective_from,
    _PRICES.c.effective_to,
).order_by(_PRICES.c.model, _PRICES.c.effective_from)
_TIMELINES_PG = _TIMELINES.where(_PRICES.c.model == func.any(bindparam("models")))


class ModelPriceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all(self, model: str | None = None) -> list[ModelPrice]:
        query = select(ModelPrice).order_by(ModelPrice.model, ModelPrice.effective_from)
        if model is not None:
            query = query.where(ModelPrice.model == model)
        return list((await self.session.execute(query)).scalars())

    async def timelines(self, models: set[str]) -> dict[str, list[PriceRow]]:
        """Every price of each model, oldest first, as plain rows (read-only).

        One statement built once: plain column rows, no ORM entities, and the models as
        one array parameter (on SQLite an IN list), since this runs on every usage request.
        """
        if not models:
            return {}
        if self.session.get_bind().dialect.name == "postgresql":
            statement, params = _TIMELINES_PG, {"models": sorted(models)}
        else:
            statement = _TIMELINES.where(_PRICES.c.model.in_(sorted(models)))
            params = {}
        result = await self.session.execute(statement, params)
        grouped: dict[str, list[PriceRow]] = defaultdict(list)
        for price in result:
            grouped[price.model].append(price)
        return grouped

    async def lock_model(self, model: str) -> list[ModelPrice]:
        """The model's prices, locked so two price changes of one model serialize.

        The advisory lock covers a model with no price row yet (nothing to lock FOR UPDATE);
        SQLite serializes writers anyway.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext('model_price:' || :model))"),
                {"model": model},
            )
        result = await self.session.execute(
            select(ModelPrice)
            .where(ModelPrice.model == model)
            .order_by(ModelPrice.effective_from)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return list(result.scalars())

    async def priced_models(self) -> set[str]:
        return set((await self.session.execute(select(ModelPrice.model).distinct())).scalars())

    def add(self, price: ModelPrice) -> None:
        self.session.add(price)


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def insert_events(self, batch: EventBatch) -> set[str]:
        """Inserts the events and returns the event ids that were new. SQLite adds the new
        api_call events to the daily rollups here; PostgreSQL leaves them to the roller."""
        if not batch.rows:
            return set()
        if self._postgres:
            return await self._insert_staged(batch)
        records = batch.records()
        inserted: set[str] = set()
        for start in range(0, len(batch.rows), _SQLITE_CHUNK):
            keys = [
                {"account_id": batch.account_id, "event_id": row[0]}
                for row in batch.rows[start : start + _SQLITE_CHUNK]
            ]
            statement = (
                sqlite_insert(UsageEventKey)
                .values(keys)
                .on_conflict_do_nothing()
                .returning(UsageEventKey.event_id)
            )
            inserted.update((await self.session.execute(statement)).scalars())
        new = [_orm_keys(r) for r in records if r["event_id"] in inserted]
        for start in range(0, len(new), _SQLITE_CHUNK):
            await self.session.execute(
                insert(UsageEvent).values(new[start : start + _SQLITE_CHUNK])
            )
        deltas: dict[RollupKey, RollupDelta] = {}
        for row in records:
            if row["event_id"] not in inserted or row["usage_type"] != "api_call":
                continue
            key: RollupKey = (
                row["occurred_at"].astimezone(UTC).date(),
                row["model"],
                row["currency"],
                row["member_id"] or "",
                row["user_id"] or "",
                row["cost_center"] or "",
                row["status_code"] // 100,
            )
            deltas.setdefault(key, RollupDelta()).add(
                input_tokens=row["input_tokens"],
                cached=row["cached_input_tokens"],
                output=row["output_tokens"],
                cost=Decimal(row["cost"]),
                latency=row["latency_ms"],
            )
        await self.add_to_rollups(batch.account_id, deltas)
        return inserted

    async def _insert_staged(self, batch: EventBatch) -> set[str]:
        rows = sorted(batch.rows, key=_EVENT_ID)  # lock order: see _PG_INSERT
        params = {
            "rows": to_json(rows).decode(),
            "account_id": batch.account_id,
            "member_id": batch.member_id,
            "received_at": batch.received_at,
            "price_ids": [price_id for price_id, _ in batch.prices],
            "currencies": [currency for _, currency in batch.prices],
        }
        if len(rows) >= OPTIMISTIC_INSERT_MIN:
            # Most batches hold new events only: a plain INSERT, in a savepoint, skips the
            # speculative insertion of ON CONFLICT and the returned ids. The primary key
            # still decides: any id already stored (or being stored by a concurrent
            # transaction, once that commits) fails it, and the batch is inserted again with
            # ON CONFLICT DO NOTHING.
            await self.session.flush()  # pending ORM writes fail on their own, not below
            try:
                async with self.session.begin_nested():
                    await self.session.execute(_PG_INSERT_NEW_EVENTS, params)
                    return {row[0] for row in rows}
            except IntegrityError as exc:
                if getattr(exc.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
                    raise
        result = await self.session.execute(_PG_INSERT_EVENTS, params)
        return set(result.scalar_one() or ())

    async def roll_up(self, now: datetime) -> int | None:
        """PostgreSQL: adds the events whose transactions are over to usage_daily and moves
        the watermark past them; returns the new watermark, or None when another roller
        holds the state (it is doing the same). The caller commits."""
        since = (await self.session.execute(_ROLL_LOCK)).scalar_one_or_none()
        if since is None:
            if (await self.session.execute(_WATERMARK_ROW)).first() is not None:
                return None  # another roller holds it
            # The migration's row is gone (an emptied database): start again from 0.
            await self.session.execute(_ROLL_STATE)
            since = (await self.session.execute(_ROLL_LOCK)).scalar_one_or_none()
            if since is None:
                return None
        horizon = (await self.session.execute(_ROLL_HORIZON)).scalar_one()
        if horizon <= since:
            return int(since)
        await self.session.execute(_HASH_ONLY)
        await self.session.execute(_ROLL, {"since": since, "horizon": horizon})
        await self.session.execute(_ROLLED, {"horizon": horizon, "now": now})
        return int(horizon)

    async def pending(self) -> int:
        """PostgreSQL: how many events the roller has not added to usage_daily yet."""
        where = await self._past_watermark()
        return int((await self.session.execute(select(func.count()).where(*where))).scalar_one())

    async def partitioned(self) -> bool:
        """PostgreSQL: whether usage_events is partitioned (it is once migrated)."""
        return bool((await self.session.execute(_PARTITIONED)).scalar_one())

    async def add_month_partition(self, month: date) -> bool:
        """PostgreSQL: the partition of usage_events for `month`, unless it exists; returns
        whether it was made. Events of that month the default partition took meanwhile move
        into it, in the same transaction."""
        name = _partition_name(month)
        await self.session.execute(_PARTITION_LOCK)  # two schedulers: one after the other
        if (await self.session.execute(_TABLE_EXISTS, {"name": name})).scalar_one():
            return False
        bounds = {"start": midnight(month), "end": midnight(next_month(month))}
        await self.session.execute(
            text(f"CREATE TABLE {name} (LIKE usage_events INCLUDING DEFAULTS)")
        )
        await self.session.execute(
            text(
                f"WITH moved AS (DELETE FROM usage_events_default WHERE occurred_at >= :start"
                f" AND occurred_at < :end RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
            bounds,
        )
        start, end = (bounds[k].isoformat() for k in ("start", "end"))
        await self.session.execute(
            text(
                f"ALTER TABLE usage_events ATTACH PARTITION {name}"
                f" FOR VALUES FROM ('{start}') TO ('{end}')"
            )
        )
        return True

    async def watermark(self) -> int:
        """PostgreSQL: the rollup watermark (events with `xact` at or above it are not in
        usage_daily yet)."""
        return int((await self.session.execute(select(_CURRENT_WATERMARK))).scalar_one())

    async def add_to_rollups(self, account_id: str, deltas: dict[RollupKey, RollupDelta]) -> None:
        """SQLite: adds the deltas to usage_daily, creating rows as needed, in key order."""
        if not deltas:
            return
        keys = sorted(deltas)
        # SQLite: writers are serialized (BEGIN IMMEDIATE), so read-modify-write is safe, and
        # the cost (TEXT there) is added as an exact Decimal in Python.
        days = sorted({key[0] for key in keys})
        existing = await self.session.execute(
            select(UsageDaily).where(UsageDaily.account_id == account_id, UsageDaily.day.in_(days))
        )
        rows = {_rollup_key(row): row for row in existing.scalars()}
        for key in keys:
            delta = deltas[key]
            hist = delta.latency_hist or histogram.empty()
            row = rows.get(key)
            if row is None:
                self.session.add(
                    UsageDaily(
                        account_id=account_id,
                        **dict(zip(ROLLUP_KEY, key, strict=True)),
                        requests=delta.requests,
                        input_tokens=delta.input_tokens,
                        cached_input_tokens=delta.cached_input_tokens,
                        output_tokens=delta.output_tokens,
                        cost=delta.cost,
                        latency_hist=hist,
                    )
                )
                continue
            row.requests += delta.requests
            row.input_tokens += delta.input_tokens
            row.cached_input_tokens += delta.cached_input_tokens
            row.output_tokens += delta.output_tokens
            row.cost = row.cost + delta.cost
            row.latency_hist = histogram.merge(list(row.latency_hist), hist)
        await self.session.flush()

    async def rollup_groups(
        self,
        account_id: str,
        start_day: date,
        end_day: date,
        group: str | None,
        *,
        by_currency: bool = True,
        by_member: bool = False,
    ) -> list[dict[str, Any]]:
        """Sums of usage_daily on [start_day, end_day) per group (and currency, member); on
        PostgreSQL plus the events past the rollup watermark, in the same snapshot."""
        keys = _group_columns(UsageDaily, group, by_currency, by_member)
        where = and_(
            UsageDaily.account_id == account_id,
            UsageDaily.day >= start_day,
            UsageDaily.day < end_day,
        )
        success = case((UsageDaily.status_class.in_((2, 3)), UsageDaily.requests), else_=0)
        if not self._postgres:
            sums: list[ColumnElement[Any]] = [
                func.sum(UsageDaily.requests).label("requests"),
                func.sum(success).label("successful_requests"),
                func.sum(UsageDaily.input_tokens).label("input_tokens"),
                func.sum(UsageDaily.cached_input_tokens).label("cached_input_tokens"),
                func.sum(UsageDaily.output_tokens).label("output_tokens"),
            ]
            sums += [
                func.sum(UsageDaily.latency_hist[i].as_integer()).label(f"h{i}")
                for i in range(histogram.SIZE)
            ]
            return await self._grouped(keys, sums, where, UsageDaily.cost)
        daily = select(
            *keys,
            UsageDaily.requests.label("requests"),
            success.label("successful_requests"),
            UsageDaily.input_tokens,
            UsageDaily.cached_input_tokens,
            UsageDaily.output_tokens,
            UsageDaily.cost,
            *(UsageDaily.latency_hist[i].as_integer().label(f"h{i}") for i in range(_SIZE)),
        ).where(where)
        bucket = func.width_bucket(UsageEvent.latency_ms - 1, literal_column(_BOUNDS))
        tail = select(
            *_group_columns(UsageEvent, group, by_currency, by_member),
            literal(1).label("requests"),
            case((_SUCCESSFUL, 1), else_=0).label("successful_requests"),
            UsageEvent.input_tokens,
            UsageEvent.cached_input_tokens,
            UsageEvent.output_tokens,
            UsageEvent.cost,
            *(case((bucket == i, 1), else_=0).label(f"h{i}") for i in range(_SIZE)),
        ).where(
            UsageEvent.account_id == account_id,
            UsageEvent.occurred_at >= midnight(start_day),
            UsageEvent.occurred_at < midnight(end_day),
            UsageEvent.usage_type == "api_call",
            *await self._past_watermark(),
        )
        both = union_all(daily, tail).subquery()
        group_by = [both.c[key.name] for key in keys]
        query = select(
            *group_by,
            *(func.sum(both.c[name]).label(name) for name in _SUMMED),
            *(func.sum(both.c[f"h{i}"]).label(f"h{i}") for i in range(_SIZE)),
        )
        if group_by:
            query = query.group_by(*group_by)
        return [row._asdict() for row in await self.session.execute(query)]

    async def _past_watermark(self) -> list[ColumnElement[bool]]:
        """PostgreSQL: the conditions of the events not in usage_daily yet. The watermark as
        a literal lets the planner see how few they are (the index on `xact`); as read again
        inside the statement it is the one the rollups of the same snapshot go with."""
        watermark = await self.watermark()
        return [
            UsageEvent.xact >= literal_column(str(watermark)),
            UsageEvent.xact >= _CURRENT_WATERMARK,
        ]

    async def raw_groups(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        group: str | None,
        *,
        by_currency: bool = True,
        by_member: bool = False,
    ) -> list[dict[str, Any]]:
        """The same sums from raw api_call events on [start, end) (for partial days)."""
        keys = _group_columns(UsageEvent, group, by_currency, by_member)
        where = and_(
            UsageEvent.account_id == account_id,
            UsageEvent.occurred_at >= start,
            UsageEvent.occurred_at < end,
            UsageEvent.usage_type == "api_call",
        )
        sums: list[ColumnElement[Any]] = [
            func.count().label("requests"),
            func.sum(case((_SUCCESSFUL, 1), else_=0)).label("successful_requests"),
            func.sum(UsageEvent.input_tokens).label("input_tokens"),
            func.sum(UsageEvent.cached_input_tokens).label("cached_input_tokens"),
            func.sum(UsageEvent.output_tokens).label("output_tokens"),
        ]
        return await self._grouped(keys, sums, where, UsageEvent.cost)

    async def _grouped(
        self,
        keys: list[ColumnElement[Any]],
        sums: list[ColumnElement[Any]],
        where: ColumnElement[bool],
        cost: Any,
    ) -> list[dict[str, Any]]:
        if self._postgres:
            # NUMERIC sums are exact on PostgreSQL.
            query = select(*keys, *sums, func.sum(cost).label("cost")).where(where)
            if keys:
                query = query.group_by(*keys)
            return [
                {**row._asdict(), "cost": row.cost if row.cost is not None else Decimal(0)}
                for row in await self.session.execute(query)
            ]
        # SQLite stores the cost as TEXT (SUM would go through floats): add Decimals in Python.
        query = select(*keys, *sums).where(where)
        if keys:
            query = query.group_by(*keys)
        out = {
            tuple(row[: len(keys)]): {**row._asdict(), "cost": Decimal(0)}
            for row in await self.session.execute(query)
        }
        costs = await self.session.execute(select(*keys, cost).where(where))
        for row in costs:
            value = row[len(keys)]
            if value is not None:
                out[tuple(row[: len(keys)])]["cost"] += value
        return [row for row in out.values() if row["requests"]]

    async def storage_snapshots(
        self, account_id: str, start: datetime, end: datetime
    ) -> tuple[Decimal | None, list[tuple[datetime, Decimal]]]:
        """The last storage snapshot before `start` and those in [start, end), oldest first."""
        storage = and_(UsageEvent.account_id == account_id, UsageEvent.usage_type == "storage")
        before = await self.session.execute(
            select(UsageEvent.storage_gb)
            .where(storage, UsageEvent.occurred_at < start)
            .order_by(UsageEvent.occurred_at.desc())
            .limit(1)
        )
        during = await self.session.execute(
            select(UsageEvent.occurred_at, UsageEvent.storage_gb)
            .where(storage, UsageEvent.occurred_at >= start, UsageEvent.occurred_at < end)
            .order_by(UsageEvent.occurred_at)
        )
        return before.scalar_one_or_none(), [(at, gb) for at, gb in during if gb is not None]

    async def events(self, account_id: str) -> list[UsageEvent]:
        result = await self.session.execute(
            select(UsageEvent)
            .where(UsageEvent.account_id == account_id)
            .order_by(UsageEvent.occurred_at, UsageEvent.event_id)
        )
        return list(result.scalars())

    async def rollups(self, account_id: str) -> list[UsageDaily]:
        result = await self.session.execute(
            select(UsageDaily).where(UsageDaily.account_id == account_id)
        )
        return list(result.scalars())


def _group_expression(table: type[UsageDaily] | type[UsageEvent], group: str) -> Any:
    if group == "model":
        return func.coalesce(table.model, "")
    if group == "cost_center":
        return func.coalesce(table.cost_center, "")
    if group == "user":
        # The caller's end-user id, or the member whose key recorded the event.
        user = func.nullif(func.coalesce(table.user_id, ""), "")
        return func.coalesce(user, table.member_id, "")
    if group == "day":
        if table is UsageDaily:
            return UsageDaily.day
        return cast(func.timezone("UTC", UsageEvent.occurred_at), Date)
    raise ValueError(f"cannot group {table.__tablename__} by {group!r}")


def _group_columns(
    table: type[UsageDaily] | type[UsageEvent],
    group: str | None,
    by_currency: bool,
    by_member: bool,
) -> list[ColumnElement[Any]]:
    keys: list[ColumnElement[Any]] = []
    if group is not None:
        keys.append(_group_expression(table, group).label("group"))
    if by_currency:
        keys.append(func.coalesce(table.currency, "").label("currency"))
    if by_member:
        # The subject of a member cap, as a check names it: the key's member, else the end
        # user the call was for (`user_id`, which a gateway's check names), else none.
        subject = func.coalesce(func.nullif(table.member_id, ""), func.nullif(table.user_id, ""))
        keys.append(func.coalesce(subject, "").label("member_id"))
    return keys


def _partition_name(month: date) -> str:
    return f"usage_events_y{month.year:04d}m{month.month:02d}"


def _rollup_key(row: UsageDaily) -> RollupKey:
    return (
        row.day,
        row.model,
        row.currency,
        row.member_id,
        row.user_id,
        row.cost_center,
        row.status_class,
    )


def _orm_keys(row: dict[str, Any]) -> dict[str, Any]:
    # The ORM attribute of the `metadata` column is event_metadata; rows carry the cost as
    # text.
    out = dict(row)
    out["cost"] = None if out["cost"] is None else Decimal(out["cost"])
    out["event_metadata"] = out.pop("metadata")
    return out
