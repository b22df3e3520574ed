"""UsageTracker (events, rollups, statistics, period usage) and the model price table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple, Protocol

from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.accounts.service import accounts
from aihub_billing.audit.service import audit
from aihub_billing.errors import AccountRequired, BillingError, Forbidden, ValidationFailed
from aihub_billing.kit.cache import account_scope, touch
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.metrics import USAGE_EVENTS, count_on_commit
from aihub_billing.kit.periods import day_split, next_month
from aihub_billing.models import ModelPrice
from aihub_billing.models.types import canonical_decimal
from aihub_billing.testclocks.service import test_clocks
from aihub_billing.usage import histogram, schemas
from aihub_billing.usage.cost import ScaledPrices
from aihub_billing.usage.errors import (
    InvalidStatsRange,
    ModelPriceBackdated,
    ModelPriceCurrencyMismatch,
    ModelPriceExists,
    TimestampInFuture,
    UnknownModel,
    UsageNeedsAccountKey,
)
from aihub_billing.usage.repository import (
    ROW_COLUMNS,
    EventBatch,
    EventRow,
    ModelPriceRepository,
    PriceRow,
    UsageRepository,
)
from aihub_billing.usage.storage import gb_months

MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_STATS_DAYS = 366
# Months of usage_events partitions kept ready ahead of the current one (PostgreSQL).
PARTITION_MONTHS_AHEAD = 3
_EVENT: TypeAdapter[dict[str, Any]] = TypeAdapter(schemas.UsageEventFields)
_EVENTS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[schemas.UsageEventFields])
_BATCH = TypeAdapter(schemas.UsageBatchEvents)
_BATCH_RAW = TypeAdapter(schemas.UsageBatchIn)
_RATE_PLACES = Decimal("0.0001")
_INPUT, _OUTPUT, _RESERVATION = (
    ROW_COLUMNS.index(c) for c in ("input_tokens", "output_tokens", "reservation_id")
)

# Public list prices per 1M tokens in USD (OpenAI and Anthropic pricing pages, late 2024),
# seeded at bootstrap for models that have no price yet; the operator sets their own.
SEED_PRICES_FROM = datetime(2024, 1, 1, tzinfo=UTC)
SEED_PRICES: tuple[tuple[str, str, str, str | None], ...] = (
    # model, input, output, cached input
    ("gpt-4o", "2.50", "10.00", "1.25"),
    ("gpt-4o-mini", "0.15", "0.60", "0.075"),
    ("gpt-3.5-turbo", "0.50", "1.50", None),
    ("claude-3-5-sonnet", "3.00", "15.00", "0.30"),
    ("claude-3-haiku", "0.25", "1.25", "0.03"),
)


@dataclass(slots=True)
class CountedUsage:
    """A batch's newly stored API calls as the usage counter (the quota manager) takes them:
    the calls and tokens that came without a reservation, in total (a batch is one member's),
    and (reservation id, tokens) of those that settle one; all of them stamped inside the
    counting period. `releases`: the reservation ids of calls stamped outside it (late usage
    of an earlier period), which count nothing now."""

    member_id: str | None
    calls: int = 0
    tokens: int = 0
    settlements: list[tuple[str, int]] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)


class CountingPeriod(NamedTuple):
    """The account's time now (its test clock's when it runs on one) and [start, end) of
    the period its live counters count: calls stamped outside it (late usage of an earlier
    period) are stored but not counted."""

    now: datetime
    start: datetime
    end: datetime


class UsageCounter(Protocol):
    """What keeps live counters of stored usage (the QuotaManager); called inside the
    recording transaction, once per batch, with the new API calls only (never duplicates).
    It moves its counters before that transaction commits, so it must make up for a
    transaction that then does not (QuotaManager: a rebuild from the stored usage)."""

    async def counting_period(
        self, session: AsyncSession, ctx: Context, account_id: str
    ) -> CountingPeriod: ...

    async def counted(
        self, session: AsyncSession, ctx: Context, account_id: str, usage: CountedUsage
    ) -> None: ...


class MemberUsage(NamedTuple):
    calls: int
    tokens: int


class PeriodUsage(NamedTuple):
    """API calls and tokens (input + output) in a period, in total and per member."""

    calls: int
    tokens: int
    per_member: dict[str, MemberUsage]


@dataclass(frozen=True, slots=True)
class ModelUsage:
    model: str
    currency: str
    calls: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: Decimal  # unrounded: invoices round once per line


@dataclass(slots=True)
class ParsedBatch:
    """Valid events with their index, and the results so far (rejections, None elsewhere)."""

    events: list[tuple[int, dict[str, Any]]]  # UsageEventFields dicts
    results: list[dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """A recorded batch: counts and one result dict per event (schemas.EventResult fields,
    the cost as exact decimal text)."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "results": self.results,
        }


class ModelPriceService:
    async def prices(self, session: AsyncSession, model: str | None = None) -> list[ModelPrice]:
        return await ModelPriceRepository(session).all(model)

    async def set_price(
        self, session: AsyncSession, ctx: Context, data: schemas.ModelPriceCreate
    ) -> ModelPrice:
        """A new price from `effective_from`; the previous one ends there. Default: now for a
        model's first price, else the first whole second a new price may start at."""
        if not ctx.actor.is_operator:
            raise Forbidden("only the operator sets model prices")
        repo = ModelPriceRepository(session)
        now = ctx.clock.now()
        timeline = await repo.lock_model(data.model)
        # Events stamped up to MAX_CLOCK_SKEW ahead are already recorded and costed at the
        # current price: a price starting at or before that would disagree with their cost.
        recorded_until = now + MAX_CLOCK_SKEW
        if data.effective_from is not None:
            start = data.effective_from.astimezone(UTC)
        elif timeline:
            start = recorded_until.replace(microsecond=0) + timedelta(seconds=1)
        else:
            start = now
        if timeline and start <= recorded_until:
            raise ModelPriceBackdated(
                f"{data.model} is priced and events may be recorded up to "
                f"{recorded_until.isoformat()}: a new price starts after that"
            )
        if timeline and timeline[-1].currency != data.currency:
            # One timeline per model: a price in another currency would close this one and
            # cost every account's usage of the model in it (a USD account billed in EUR).
            raise ModelPriceCurrencyMismatch(
                f"{data.model} is priced in {timeline[-1].currency}: its prices stay in it"
            )
        if any(p.effective_from == start for p in timeline):
            raise ModelPriceExists(f"{data.model} has a price from {start.isoformat()}")
        before = [p for p in timeline if p.effective_from < start]
        after = [p for p in timeline if p.effective_from > start]
        price = ModelPrice(
            id=new_id("mprice", now),
            model=data.model,
            currency=data.currency,
            input_per_1m=data.input_per_1m,
            output_per_1m=data.output_per_1m,
            cached_input_per_1m=data.cached_input_per_1m,
            effective_from=start,
            effective_to=after[0].effective_from if after else None,
            created_at=now,
        )
        if before:
            previous = before[-1]
            snapshot = schemas.ModelPrice.model_validate(previous)
            previous.effective_to = start
            await audit.record(
                session,
                ctx,
                action="model_price.closed",
                object_type="model_price",
                object_id=previous.id,
                account_id=None,
                before=snapshot,
                after=schemas.ModelPrice.model_validate(previous),
            )
        repo.add(price)
        await session.flush()
        await audit.record(
            session,
            ctx,
            action="model_price.created",
            object_type="model_price",
            object_id=price.id,
            account_id=None,
            after=schemas.ModelPrice.model_validate(price),
        )
        return price

    async def seed_defaults(self, session: AsyncSession, ctx: Context) -> list[str]:
        """Prices the SEED_PRICES models that have no price yet; returns those it priced."""
        priced = await ModelPriceRepository(session).priced_models()
        created = []
        for model, input_price, output_price, cached in SEED_PRICES:
            if model in priced:
                continue
            data = schemas.ModelPriceCreate(
                model=model,
                currency="USD",
                input_per_1m=Decimal(input_price),
                output_per_1m=Decimal(output_price),
                cached_input_per_1m=None if cached is None else Decimal(cached),
                effective_from=SEED_PRICES_FROM,
            )
            await self.set_price(session, ctx, data)
            created.append(model)
        return created


@dataclass
class UsageTracker:
    """Records usage events once per (account, event_id), costs them, keeps daily rollups."""

    async def track(
        self,
        session: AsyncSession,
        ctx: Context,
        event: schemas.UsageEventIn | dict[str, Any],
        counter: UsageCounter | None = None,
    ) -> schemas.UsageRecorded:
        """Records one event (a UsageEventIn, or the dict parse_event made of one); a
        rejection raises its BillingError."""
        fields = event.model_dump() if isinstance(event, schemas.UsageEventIn) else event
        batch = ParsedBatch([(0, fields)], [None])
        [result] = (await self.record_parsed(session, ctx, batch, counter)).results
        recorded = recorded_of(result)
        if isinstance(recorded, BillingError):
            raise recorded
        return recorded

    async def record(
        self,
        session: AsyncSession,
        ctx: Context,
        events: Sequence[schemas.UsageEventIn | Any],
        counter: UsageCounter | None = None,
    ) -> schemas.UsageBatchResult:
        """Validates each event on its own, then records the valid ones (see record_parsed)."""
        results: list[dict[str, Any] | None] = [None] * len(events)
        raw = [e.model_dump() if isinstance(e, schemas.UsageEventIn) else e for e in events]
        parsed = _validate(raw, range(len(raw)), results)
        outcome = await self.record_parsed(session, ctx, ParsedBatch(parsed, results), counter)
        return schemas.UsageBatchResult.model_validate(outcome.as_dict())

    async def record_parsed(
        self,
        session: AsyncSession,
        ctx: Context,
        batch: ParsedBatch,
        counter: UsageCounter | None = None,
    ) -> BatchOutcome:
        """Costs the valid events, inserts the new ones and adds them to the rollups in one
        statement; the caller's transaction makes it all durable at once. The new API calls
        then go to `counter` (the quota counters)."""
        account_id = ctx.actor.account_id
        if account_id is None:
            raise UsageNeedsAccountKey("send usage with a key of the account that used it")
        if counter is not None:
            now, counting_from, counting_to = await counter.counting_period(
                session, ctx, account_id
            )
        else:  # nothing is counted without a counter
            clocked, _ = await test_clocks.context_for(session, ctx, account_id)
            now = counting_from = counting_to = clocked.clock.now()
        # On a test clock (`now` is its time) the usage of the simulated days to come may be
        # sent ahead, as up to the real time without one.
        latest = max(now, ctx.clock.now()) + MAX_CLOCK_SKEW
        member_id = ctx.actor.member_id
        results = batch.results
        prices = _BatchPrices(
            await ModelPriceRepository(session).timelines(
                {e["model"] for _, e in batch.events if e["usage_type"] == "api_call"} - {None}
            )
        )
        rows: list[EventRow] = []
        fresh: dict[str, dict[str, Any]] = {}  # event id -> its result, while it may be new
        counted = CountedUsage(member_id)
        settlements, releases = counted.settlements, counted.releases
        calls = tokens = duplicates = 0
        price_at = prices.at
        event_problem = schemas.event_problem
        # The hot loop: a tuple and a dict per event, the cost as exact decimal text (stored
        # as NUMERIC and answered as is), no Decimal or model instance per event.
        for index, event in batch.events:
            problem = event_problem(event)
            if problem is not None:
                results[index] = _broken(index, event, problem)
                continue
            usage_type = event["usage_type"]
            model = event["model"]
            storage_gb = event["storage_gb"]
            input_tokens = event["input_tokens"]
            cached = event["cached_input_tokens"]
            api_call = usage_type == "api_call"
            stamp = event["timestamp"]
            occurred_at = now if stamp is None else stamp.astimezone(UTC)
            if occurred_at > latest:
                results[index] = _rejected_by(index, event["event_id"], TimestampInFuture())
                continue
            output_tokens = event["output_tokens"]
            cost: str | None
            if api_call:
                price = price_at(model, occurred_at)
                if price is None:
                    error = UnknownModel(f"no price for {model!r} at {occurred_at}")
                    results[index] = _rejected_by(index, event["event_id"], error)
                    continue
                cost = price.scaled.cost_text(input_tokens, cached, output_tokens)
                result = {
                    "index": index,
                    "status": "accepted",
                    "event_id": None,
                    "cost": cost,
                    "currency": price.currency,
                }
                price_ref: int | None = price.ref
            else:
                cost = price_ref = None
                result = {"index": index, "status": "accepted", "event_id": None}
            event_id = event["event_id"] or new_id("evt", now)
            if event_id in fresh:  # the same id twice in one batch counts once
                results[index] = _duplicate(index, event_id)
                duplicates += 1
                continue
            reservation_id = event["reservation_id"]
            rows.append(
                (
                    event_id,
                    usage_type,
                    model,
                    occurred_at,
                    event["user_id"],
                    event["cost_center"],
                    input_tokens,
                    cached,
                    output_tokens,
                    event["status_code"],
                    event["latency_ms"],
                    storage_gb,
                    cost,
                    price_ref,
                    reservation_id,
                    event["metadata"],
                )
            )
            result["event_id"] = event_id
            fresh[event_id] = results[index] = result
            if api_call:
                if counting_from <= occurred_at < counting_to:
                    if reservation_id is not None:  # its call was counted by the check
                        settlements.append((reservation_id, input_tokens + output_tokens))
                    else:
                        calls += 1
                        tokens += input_tokens + output_tokens
                elif reservation_id is not None:  # another period's: counted in none now
                    releases.append(reservation_id)
        counted.calls, counted.tokens = calls, tokens

        inserted = await UsageRepository(session).insert_events(
            EventBatch(account_id, member_id, now, prices.used, rows)
        )
        if inserted:
            touch(session, account_scope(account_id))  # cached statistics of the account
        if len(inserted) < len(fresh):  # already stored: a duplicate, priced nothing
            for event_id, result in fresh.items():
                if event_id not in inserted:
                    result.update(status="duplicate")
                    result.pop("cost", None)
                    result.pop("currency", None)
                    duplicates += 1
            counted = _counted_of(member_id, rows, inserted, counting_from, counting_to)
        if counter is not None and (counted.calls or counted.settlements or counted.releases):
            await counter.counted(session, ctx, account_id, counted)
        if inserted:  # one increment per batch, never one per event
            count_on_commit(session, USAGE_EVENTS.inc, len(inserted))
        assert None not in results, "every event has its result"
        final: list[dict[str, Any]] = results  # type: ignore[assignment]
        rejected = len(final) - len(inserted) - duplicates
        return BatchOutcome(len(inserted), duplicates, rejected, final)

    async def roll_up(self, session: AsyncSession, ctx: Context) -> int | None:
        """PostgreSQL: adds the stored events whose transactions are over to the daily
        rollups (see UsageRepository.roll_up); SQLite keeps them in the insert instead."""
        repo = UsageRepository(session)
        if session.get_bind().dialect.name != "postgresql":
            return None
        return await repo.roll_up(ctx.clock.now())

    async def pending_rollup(self, session: AsyncSession) -> int:
        """Stored events not in the daily rollups yet (PostgreSQL; 0 on SQLite)."""
        if session.get_bind().dialect.name != "postgresql":
            return 0
        return await UsageRepository(session).pending()

    async def add_partitions(self, session: AsyncSession, ctx: Context) -> list[date]:
        """PostgreSQL: the monthly partitions of usage_events from this month through
        PARTITION_MONTHS_AHEAD ahead, where missing; returns the months made."""
        repo = UsageRepository(session)
        if session.get_bind().dialect.name != "postgresql" or not await repo.partitioned():
            return []
        month = ctx.clock.now().date().replace(day=1)
        made = []
        for _ in range(PARTITION_MONTHS_AHEAD + 1):
            if await repo.add_month_partition(month):
                made.append(month)
            month = next_month(month)
        return made

    async def stats(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        account_id: str | None,
        start: date | None,
        end: date | None,
        group_by: schemas.GroupBy,
    ) -> schemas.UsageStats:
        """Per-group statistics over whole UTC days [start, end), from the daily rollups only."""
        account_id = account_id or ctx.actor.account_id
        if account_id is None:
            raise AccountRequired("operator keys must give the account_id")
        account = await accounts.get(session, ctx, account_id)
        if start is None or end is None:  # this month, on the account's clock
            clocked, _ = await test_clocks.context_for(session, ctx, account.id)
            today = clocked.clock.now().date()
            start = start or today.replace(day=1)
            end = end or today + timedelta(days=1)
        if not start < end or (end - start).days > MAX_STATS_DAYS:
            raise InvalidStatsRange(f"from {start} to {end}")
        groups = await UsageRepository(session).rollup_groups(account.id, start, end, group_by)
        rows = [_stats_row(g) for g in groups]
        rows.sort(key=lambda r: (r.group is None, r.group or "", r.currency or ""))
        return schemas.UsageStats(
            account_id=account.id, start=start, end=end, group_by=group_by, rows=rows
        )

    async def used_in_period(
        self, session: AsyncSession, account_id: str, start: datetime, end: datetime
    ) -> PeriodUsage:
        """Calls and tokens on [start, end): rollups for whole days, raw events for the rest.

        For rebuilding quota counters; tokens are input + output (cached ones are input). Per
        member cap subject: the key's member, else the event's user_id.
        """
        members: dict[str, MemberUsage] = {}
        for row in await _period_groups(session, account_id, start, end, None, by_member=True):
            old = members.get(row["member_id"], MemberUsage(0, 0))
            members[row["member_id"]] = MemberUsage(
                old.calls + int(row["requests"]),
                old.tokens + int(row["input_tokens"]) + int(row["output_tokens"]),
            )
        calls = sum(m.calls for m in members.values())
        tokens = sum(m.tokens for m in members.values())
        members.pop("", None)  # usage recorded by keys without a member
        return PeriodUsage(calls, tokens, members)

    async def usage_by_model(
        self, session: AsyncSession, account_id: str, start: datetime, end: datetime
    ) -> list[ModelUsage]:
        """Usage and exact unrounded cost per model and currency on [start, end)."""
        totals: dict[tuple[str, str], list[Any]] = {}
        for row in await _period_groups(session, account_id, start, end, "model"):
            key = (row["group"], row["currency"])
            acc = totals.setdefault(key, [0, 0, 0, 0, Decimal(0)])
            acc[0] += int(row["requests"])
            acc[1] += int(row["input_tokens"])
            acc[2] += int(row["cached_input_tokens"])
            acc[3] += int(row["output_tokens"])
            acc[4] += row["cost"]
        return [
            ModelUsage(model, currency, a[0], a[1], a[2], a[3], canonical_decimal(a[4]))
            for (model, currency), a in sorted(totals.items())
        ]

    async def storage_gb_months(
        self, session: AsyncSession, account_id: str, start: datetime, end: datetime
    ) -> Decimal:
        """Time-weighted storage on [start, end) in GB-months of that period."""
        initial, snapshots = await UsageRepository(session).storage_snapshots(
            account_id, start, end
        )
        return gb_months(snapshots, start, end, initial_gb=initial or Decimal(0))


async def _period_groups(
    session: AsyncSession,
    account_id: str,
    start: datetime,
    end: datetime,
    group: str | None,
    *,
    by_member: bool = False,
) -> list[dict[str, Any]]:
    """Rollup sums for the whole UTC days inside [start, end), raw sums for the edges."""
    repo = UsageRepository(session)
    first_day, last_day, edges = day_split(start, end)
    out = []
    if first_day < last_day:
        out = await repo.rollup_groups(account_id, first_day, last_day, group, by_member=by_member)
    for edge_start, edge_end in edges:
        out += await repo.raw_groups(account_id, edge_start, edge_end, group, by_member=by_member)
    return out


def _price_at(timeline: Sequence[PriceRow], at: datetime) -> PriceRow | None:
    for price in reversed(timeline):
        if price.effective_from <= at:
            return price if price.effective_to is None or at < price.effective_to else None
    return None


@dataclass(frozen=True, slots=True)
class _Price:
    id: str
    currency: str
    start: datetime
    end: datetime | None
    scaled: ScaledPrices
    ref: int  # 1-based position in _BatchPrices.used (EventBatch.prices)


class _BatchPrices:
    """Price lookups for one batch: each model's last price found is tried first, so a batch
    costs one timeline search per model and time range, not per event."""

    def __init__(self, timelines: Mapping[str, Sequence[PriceRow]]) -> None:
        self._timelines = timelines
        self._last: dict[str, _Price] = {}
        self._by_id: dict[str, _Price] = {}
        self.used: list[tuple[str, str]] = []  # (price id, currency) of each price found

    def at(self, model: str, at: datetime) -> _Price | None:
        last = self._last.get(model)
        if last is not None and last.start <= at and (last.end is None or at < last.end):
            return last
        price = _price_at(self._timelines.get(model, ()), at)
        if price is None:
            return None
        found = self._by_id.get(price.id)
        if found is None:
            self.used.append((price.id, price.currency))
            found = self._by_id[price.id] = _Price(
                price.id,
                price.currency,
                price.effective_from,
                price.effective_to,
                ScaledPrices(price.input_per_1m, price.output_per_1m, price.cached_input_per_1m),
                len(self.used),
            )
        self._last[model] = found
        return found


def _stats_row(g: dict[str, Any]) -> schemas.StatsRow:
    hist = [int(g[f"h{i}"] or 0) for i in range(histogram.SIZE)]
    requests, successful = int(g["requests"]), int(g["successful_requests"])
    group = g["group"]
    return schemas.StatsRow(
        group=(group.isoformat() if isinstance(group, date) else str(group)) or None,
        currency=g["currency"] or None,
        requests=requests,
        successful_requests=successful,
        success_rate=(
            (Decimal(successful) / Decimal(requests)).quantize(_RATE_PLACES, ROUND_HALF_UP)
            if requests
            else None
        ),
        input_tokens=int(g["input_tokens"]),
        cached_input_tokens=int(g["cached_input_tokens"]),
        output_tokens=int(g["output_tokens"]),
        cost=canonical_decimal(g["cost"]),
        latency_p50_ms=_round(histogram.percentile(hist, 0.50)),
        latency_p95_ms=_round(histogram.percentile(hist, 0.95)),
        latency_p99_ms=_round(histogram.percentile(hist, 0.99)),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# JSON writes NUL only as this escape. PostgreSQL stores no NUL in text or jsonb, so an event
# holding one is refused on every backend; the body is searched first, the event only then.
_NUL_ESCAPE = b"\\u0000"
_NUL_ERROR = PydanticCustomError("string_nul", "text cannot hold the NUL character (\\u0000)")


def _nul_fields(event: dict[str, Any]) -> list[str]:
    return [name for name, value in event.items() if _holds_nul(value)]


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _nul_errors(fields: list[str]) -> list[dict[str, Any]]:
    return [{"type": "string_nul", "loc": (f,), "msg": _NUL_ERROR.message()} for f in fields]


def parse_event(body: bytes) -> dict[str, Any]:
    """A /usage/track body, field-checked in one pydantic-core call (the rules across
    fields are the tracker's); raises ValidationError."""
    event = _EVENT.validate_json(body)
    if _NUL_ESCAPE in body and (fields := _nul_fields(event)):
        raise ValidationError.from_exception_data(
            "UsageEventIn",
            [InitErrorDetails(type=_NUL_ERROR, loc=(f,), input=None) for f in fields],
        )
    return event


def parse_batch(body: bytes) -> ParsedBatch:
    """A /usage/batch body checked in one pydantic-core call; only the events that fail it
    are validated again, one by one, for their own errors.

    Raises ValidationError (locations from the body) when the body itself is invalid.
    """
    try:
        events = _BATCH.validate_json(body).events
    except ValidationError as exc:
        failed = {
            e["loc"][1]
            for e in exc.errors(include_url=False, include_input=False)
            if len(e["loc"]) > 1 and e["loc"][0] == "events" and isinstance(e["loc"][1], int)
        }
    else:
        parsed = list(enumerate(events))
        return _without_nul(body, ParsedBatch(parsed, [None] * len(events)))
    raw = _BATCH_RAW.validate_json(body).events  # raises when the body itself is wrong
    results: list[dict[str, Any] | None] = [None] * len(raw)
    valid = [i for i in range(len(raw)) if i not in failed]
    parsed = _validate([raw[i] for i in valid], valid, results)
    parsed += _validate([raw[i] for i in sorted(failed)], sorted(failed), results)
    parsed.sort(key=lambda p: p[0])
    return _without_nul(body, ParsedBatch(parsed, results))


def _without_nul(body: bytes, batch: ParsedBatch) -> ParsedBatch:
    """The batch with each event that holds a NUL character rejected on its own."""
    if _NUL_ESCAPE not in body:
        return batch
    kept = []
    for index, event in batch.events:
        if fields := _nul_fields(event):
            batch.results[index] = _rejected(index, event["event_id"], _nul_errors(fields))
        else:
            kept.append((index, event))
    return ParsedBatch(kept, batch.results)


def _validate(
    events: Sequence[Any], indexes: Sequence[int], results: list[dict[str, Any] | None]
) -> list[tuple[int, dict[str, Any]]]:
    """Field-valid events (UsageEventFields dicts) with their index; each invalid one gets
    its rejection in `results`."""
    try:
        # Fast path: one call into pydantic-core when they are all valid.
        return list(zip(indexes, _EVENTS.validate_python(events), strict=True))
    except ValidationError:
        pass
    parsed = []
    for index, raw in zip(indexes, events, strict=True):
        try:
            parsed.append((index, _EVENT.validate_python(raw)))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
            results[index] = _rejected(index, event_id, errors)
    return parsed


def _broken(index: int, event: dict[str, Any], problem: str) -> dict[str, Any]:
    """The rejection of a field-valid event that breaks a cross-field rule, worded as
    UsageEventIn's validation words it."""
    error = {"type": "value_error", "loc": (), "msg": f"Value error, {problem}"}
    return _rejected(index, event["event_id"], [error])


def _rejected(index: int, event_id: Any, errors: Sequence[Any]) -> dict[str, Any]:
    # Where and why only, never the submitted values (they may be anything).
    listed = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in listed[:5])
    return {
        "index": index,
        "status": "rejected",
        "event_id": event_id if isinstance(event_id, str) else None,
        "code": ValidationFailed.code,
        "detail": detail,
        "errors": listed,
    }


def _rejected_by(index: int, event_id: str | None, error: BillingError) -> dict[str, Any]:
    return {
        "index": index,
        "status": "rejected",
        "event_id": event_id,
        "code": error.code,
        "detail": error.detail,
    }


def _duplicate(index: int, event_id: str) -> dict[str, Any]:
    return {"index": index, "status": "duplicate", "event_id": event_id}


def _counted_of(
    member_id: str | None,
    rows: list[EventRow],
    inserted: set[str],
    counting_from: datetime,
    counting_to: datetime,
) -> CountedUsage:
    """The usage counted of `rows` (ROW_COLUMNS tuples) when only `inserted` were new."""
    counted = CountedUsage(member_id)
    for row in rows:
        event_id, usage_type, _, occurred_at, *_ = row
        if event_id not in inserted or usage_type != "api_call":
            continue
        reservation_id = row[_RESERVATION]
        if not counting_from <= occurred_at < counting_to:
            if reservation_id is not None:
                counted.releases.append(reservation_id)
            continue
        tokens = row[_INPUT] + row[_OUTPUT]
        if reservation_id is not None:
            counted.settlements.append((reservation_id, tokens))
        else:
            counted.calls += 1
            counted.tokens += tokens
    return counted


_REJECTIONS: dict[str, type[BillingError]] = {
    e.code: e for e in (UnknownModel, TimestampInFuture, ValidationFailed)
}


def recorded_of(result: dict[str, Any]) -> schemas.UsageRecorded | BillingError:
    """A /usage/track answer of one event's batch result: what it recorded, or the error
    that rejected it."""
    if result["status"] == "rejected":
        return _REJECTIONS.get(result["code"], ValidationFailed)(result["detail"])
    return schemas.UsageRecorded(
        event_id=result["event_id"],
        status=result["status"],
        cost=result.get("cost"),
        currency=result.get("currency"),
    )


model_prices = ModelPriceService()
usage = UsageTracker()
