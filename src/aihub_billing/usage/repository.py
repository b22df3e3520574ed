"""Every query of usage metering: prices, batched event inserts, rollup upserts, aggregates.

The hot path (events and rollups) is one statement each per batch on both backends.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import ModelPrice, UsageDaily, UsageEvent
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


# (column, PostgreSQL array element type) of an event row, account_id aside.
_EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "text"),
    ("usage_type", "text"),
    ("model", "text"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("member_id", "text"),
    ("user_id", "text"),
    ("cost_center", "text"),
    ("input_tokens", "int8"),
    ("cached_input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("status_code", "int2"),
    ("latency_ms", "int4"),
    ("storage_gb", "numeric"),
    ("cost", "numeric"),
    ("currency", "text"),
    ("price_id", "text"),
    ("reservation_id", "text"),
    ("metadata", "jsonb"),
)


def _unnest_insert(table: str, account_column: str, columns: Sequence[tuple[str, str]]) -> str:
    # One array parameter per column: the statement has a fixed shape whatever the batch size,
    # so asyncpg prepares it once per connection (a multi-row VALUES would differ per size).
    names = ", ".join(c for c, _ in columns)
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in columns)
    return (
        f"INSERT INTO {table} ({account_column}, {names}) "
        f"SELECT CAST(:account_id AS text), {names} FROM unnest({arrays}) AS t({names})"
    )


_PG_INSERT_EVENTS = text(
    _unnest_insert("usage_events", "account_id", _EVENT_COLUMNS)
    + " ON CONFLICT (account_id, event_id) DO NOTHING RETURNING event_id"
)

_ROLLUP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("day", "date"),
    ("model", "text"),
    ("currency", "text"),
    ("member_id", "text"),
    ("user_id", "text"),
    ("cost_center", "text"),
    ("status_class", "int2"),
    ("requests", "int8"),
    ("input_tokens", "int8"),
    ("cached_input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("cost", "numeric"),
    ("latency_hist", "jsonb"),
)
_PG_UPSERT_ROLLUPS = text(
    _unnest_insert("usage_daily", "account_id", _ROLLUP_COLUMNS)
    + " ON CONFLICT (account_id, "
    + ", ".join(ROLLUP_KEY)
    + ") DO UPDATE SET"
    " requests = usage_daily.requests + EXCLUDED.requests,"
    " input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens,"
    " cached_input_tokens = usage_daily.cached_input_tokens + EXCLUDED.cached_input_tokens,"
    " output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens,"
    " cost = usage_daily.cost + EXCLUDED.cost,"
    # Element-wise sum of the two bucket arrays.
    " latency_hist = (SELECT jsonb_agg(a.v::bigint + b.v::bigint ORDER BY a.i)"
    " FROM jsonb_array_elements_text(usage_daily.latency_hist) WITH ORDINALITY AS a(v, i)"
    " JOIN jsonb_array_elements_text(EXCLUDED.latency_hist) WITH ORDINALITY AS b(v, i)"
    " ON a.i = b.i)"
)

# SQLite's default limit is 32,766 variables per statement; 19 columns x 500 rows stays below.
_SQLITE_CHUNK = 500


class ModelPriceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all(self, model: str | None = None) -> list[ModelPrice]:
        query = select(ModelPrice).order_by(ModelPrice.model, ModelPrice.effective_from)
        if model is not None:
            query = query.where(ModelPrice.model == model)
        return list((await self.session.execute(query)).scalars())

    async def timelines(self, models: set[str]) -> dict[str, list[ModelPrice]]:
        """Every price of each model, oldest first."""
        if not models:
            return {}
        result = await self.session.execute(
            select(ModelPrice)
            .where(ModelPrice.model.in_(sorted(models)))
            .order_by(ModelPrice.model, ModelPrice.effective_from)
        )
        grouped: dict[str, list[ModelPrice]] = defaultdict(list)
        for price in result.scalars():
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

    async def insert_events(self, account_id: str, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Inserts the rows (sorted by event_id) and returns the event ids that were new."""
        if not rows:
            return set()
        if self._postgres:
            params: dict[str, Any] = {"account_id": account_id}
            for column, _ in _EVENT_COLUMNS:
                params[column] = [row[column] for row in rows]
            params["metadata"] = [
                None if m is None else json.dumps(m, separators=(",", ":"))
                for m in params["metadata"]
            ]
            result = await self.session.execute(_PG_INSERT_EVENTS, params)
            return set(result.scalars())
        inserted: set[str] = set()
        for start in range(0, len(rows), _SQLITE_CHUNK):
            chunk = [
                {"account_id": account_id, **_orm_keys(row)}
                for row in rows[start : start + _SQLITE_CHUNK]
            ]
            statement = (
                sqlite_insert(UsageEvent)
                .values(chunk)
                .on_conflict_do_nothing(index_elements=["account_id", "event_id"])
                .returning(UsageEvent.event_id)
            )
            inserted.update((await self.session.execute(statement)).scalars())
        return inserted

    async def add_to_rollups(self, account_id: str, deltas: dict[RollupKey, RollupDelta]) -> None:
        """Adds the deltas to usage_daily, creating rows as needed, in key order."""
        if not deltas:
            return
        keys = sorted(deltas)
        if self._postgres:
            params: dict[str, Any] = {"account_id": account_id}
            for i, name in enumerate(ROLLUP_KEY):
                params[name] = [key[i] for key in keys]
            for name in ("requests", "input_tokens", "cached_input_tokens", "output_tokens"):
                params[name] = [getattr(deltas[key], name) for key in keys]
            params["cost"] = [deltas[key].cost for key in keys]
            params["latency_hist"] = [
                json.dumps(deltas[key].latency_hist or histogram.empty()) for key in keys
            ]
            await self.session.execute(_PG_UPSERT_ROLLUPS, params)
            return
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
        """Sums of usage_daily on [start_day, end_day) per group (and currency, member)."""
        keys = _group_columns(UsageDaily, group, by_currency, by_member)
        where = and_(
            UsageDaily.account_id == account_id,
            UsageDaily.day >= start_day,
            UsageDaily.day < end_day,
        )
        success = case((UsageDaily.status_class.in_((2, 3)), UsageDaily.requests), else_=0)
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
            func.sum(case((UsageEvent.status_code < 400, 1), else_=0)).label("successful_requests"),
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
    if group == "day" and table is UsageDaily:
        return UsageDaily.day
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
        keys.append(func.coalesce(table.member_id, "").label("member_id"))
    return keys


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
    # The ORM attribute of the `metadata` column is event_metadata.
    out = dict(row)
    out["event_metadata"] = out.pop("metadata")
    return out
