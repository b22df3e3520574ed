"""Usage metering on PostgreSQL: /usage/batch events/s vs. a bare JSON-to-COPY endpoint, and a
month of rollup-backed /usage/stats for one account holding many events. In-process ASGI
(httpx.ASGITransport) on both sides, request bodies encoded once beforehand."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from fastapi import FastAPI, Request
from rich.console import Console
from sqlalchemy.engine import make_url

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.config import BillingConfig
from aihub_billing.kit.cache import account_scope
from aihub_billing.kit.clock import FrozenClock, monotonic
from aihub_billing.main import create_app
from aihub_billing.service import BillingService
from aihub_billing.usage import histogram
from bench.common import Result, Timer, database, postgres_available

BATCH = "/api/v1/billing/usage/batch"
STATS = "/api/v1/billing/usage/stats"
BATCH_SIZE = 1000
CLIENTS = 4
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "claude-3-5-sonnet", "claude-3-haiku"]
NOW = datetime(2026, 1, 31, 12, tzinfo=UTC)
# Events the stats benchmark generates; `python -m bench --usage-events N` changes it.
settings: dict[str, int | None] = {"stats_events": None, "batch_only": None}

_HISTOGRAM_SQL = (
    "jsonb_build_array(" + ", ".join(f"sum((b = {i})::int)" for i in range(histogram.SIZE)) + ")"
)
# The baseline's table: the columns and the primary key of usage_events (uniqueness of
# (account_id, event_id) is a requirement), no other index, no rollups.
_BARE_TABLE = (
    "CREATE TABLE bare_usage_events (LIKE usage_events, PRIMARY KEY (account_id, event_id))"
)
_BARE_COLUMNS = (
    "account_id", "event_id", "usage_type", "model", "occurred_at", "received_at", "user_id",
    "cost_center", "input_tokens", "cached_input_tokens", "output_tokens", "status_code",
    "latency_ms", "metadata",
)  # fmt: skip
# The diagnostic second baseline: the same bare route writing the storage ours must write
# (the key table of "counted once, forever" plus usage_events' two indexes), not one table
# with one index; it tells the cost of that storage from the cost of our code.
_SAME_TABLES = (
    "CREATE TABLE same_usage_event_keys (LIKE usage_event_keys INCLUDING ALL);"
    " CREATE TABLE same_usage_events (LIKE usage_events);"
    " CREATE INDEX ON same_usage_events (account_id, occurred_at);"
    " CREATE INDEX ON same_usage_events (xact)"
)
BASELINE = (
    "bare FastAPI route: json.loads, a tuple per event, asyncpg COPY (autocommit) into a "
    "table with usage_events' columns and primary key, no other index; answers a count only "
    "(no per-event results for the client to read). Ours includes its rollups: the app's "
    "roller runs every second meanwhile, and the clock stops once it has rolled up the last "
    "event"
)


ROUNDS = 3


@dataclass
class BatchRun:
    events_per_second: float
    p50_ms: float
    p99_ms: float


def _bodies(batches: int, tag: str) -> list[bytes]:
    out = []
    for b in range(batches):
        events = [
            {
                "usage_type": "api_call",
                "model": MODELS[i % len(MODELS)],
                "input_tokens": 100 + i,
                "output_tokens": 50 + i % 7,
                "status_code": 200 if i % 20 else 500,
                "event_id": f"{tag}-{b}-{i}",
                "timestamp": (NOW - timedelta(seconds=i)).isoformat(),
                "user_id": f"user-{i % 10}",
                "cost_center": f"cc-{i % 3}",
                "latency_ms": 50 + i % 400,
                "metadata": {"region": "eu"},
            }
            for i in range(BATCH_SIZE)
        ]
        out.append(json.dumps({"events": events}).encode())
    return out


async def _events_per_second(
    app: FastAPI,
    bodies: list[bytes],
    headers: dict[str, str],
    settle: Callable[[], Awaitable[object]] | None = None,
) -> BatchRun:
    """Events/s over `bodies` from CLIENTS concurrent clients; `settle` (ours: rolling up
    what the app's roller has not yet) runs inside the timed window after the last answer."""
    headers = {**headers, "Content-Type": "application/json"}
    queue = list(bodies)
    latencies: list[float] = []

    async def client_loop(client: httpx.AsyncClient) -> int:
        done = 0
        while queue:
            body = queue.pop()
            with Timer() as timer:
                response = await client.post(BATCH, content=body, headers=headers)
            response.raise_for_status()
            latencies.append(timer.seconds * 1000)
            done += int(response.json()["accepted"])
        return done

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as c:
        warm = queue.pop()
        (await c.post(BATCH, content=warm, headers=headers)).raise_for_status()
        with Timer() as timer:
            counts = await asyncio.gather(*(client_loop(c) for _ in range(CLIENTS)))
            if settle is not None:
                await settle()
    assert sum(counts) == BATCH_SIZE * (len(bodies) - 1), counts
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return BatchRun(sum(counts) / timer.seconds, cuts[49], cuts[98])


def _run_text(ours: BatchRun, bare: BatchRun) -> str:
    return (
        f"/usage/batch {ours.events_per_second:,.0f} events/s (per batch p50 {ours.p50_ms:,.0f} "
        f"ms, p99 {ours.p99_ms:,.0f} ms); baseline {bare.events_per_second:,.0f} events/s "
        f"(p50 {bare.p50_ms:,.0f} ms, p99 {bare.p99_ms:,.0f} ms); ratio "
        f"{ours.events_per_second / bare.events_per_second:.2f}"
    )


def _bare_app(pool: asyncpg.Pool, same_storage: bool = False) -> FastAPI:
    """The baseline: parse the same JSON and COPY it, no auth, validation or pricing; with
    `same_storage`, COPY the keys and the events into tables indexed as ours, in one
    transaction."""
    bare = FastAPI()

    @bare.post(BATCH)
    async def batch(request: Request) -> dict[str, int]:
        events = (await request.json())["events"]
        received_at = NOW
        records = [
            (
                "bare",
                e["event_id"],
                e["usage_type"],
                e["model"],
                datetime.fromisoformat(e["timestamp"]),
                received_at,
                e.get("user_id"),
                e.get("cost_center"),
                e["input_tokens"],
                e.get("cached_input_tokens", 0),
                e["output_tokens"],
                e["status_code"],
                e.get("latency_ms"),
                json.dumps(e.get("metadata")),
            )
            for e in events
        ]
        async with pool.acquire() as conn:
            if not same_storage:
                await conn.copy_records_to_table(
                    "bare_usage_events", records=records, columns=_BARE_COLUMNS
                )
                return {"accepted": len(records)}
            async with conn.transaction():
                xact = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
                await conn.copy_records_to_table(
                    "same_usage_event_keys",
                    records=[(r[0], r[1]) for r in records],
                    columns=("account_id", "event_id"),
                )
                await conn.copy_records_to_table(
                    "same_usage_events",
                    records=[(*r, xact) for r in records],
                    columns=(*_BARE_COLUMNS, "xact"),
                )
        return {"accepted": len(records)}

    return bare


async def _setup(billing: BillingService) -> tuple[str, str]:
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Bench"))
    _, secret = await billing.issue_api_key(account_id=account.id, role="owner")
    return account.id, secret


def events_sql(account: str, status: str) -> str:
    """INSERT of $2 generated API-call events over January (five models by turns, 20 users, 3
    cost centers), costed at the current model prices; `account` and `status` are SQL
    expressions of the series number `i`."""
    return f"""
        INSERT INTO usage_events (account_id, event_id, usage_type, model, occurred_at,
            received_at, member_id, user_id, cost_center, input_tokens, cached_input_tokens,
            output_tokens, status_code, latency_ms, cost, currency)
        SELECT {account}, 'gen-' || i, 'api_call', m.model,
               '2026-01-01'::timestamptz + (i % 2678400) * interval '1 second',
               '2026-01-01'::timestamptz + (i % 2678400) * interval '1 second',
               NULL, 'user-' || (i % 20), 'cc-' || (i % 3), 100 + i % 900, 0, 50 + i % 300,
               {status}, 20 + (i * 7919) % 3000,
               ((100 + i % 900) * m.input_per_1m + (50 + i % 300) * m.output_per_1m) / 1000000,
               'USD'
        FROM generate_series(1::bigint, $2::bigint) AS i
        JOIN (SELECT row_number() OVER (ORDER BY model) - 1 AS k, model, input_per_1m,
                     output_per_1m FROM model_prices WHERE effective_to IS NULL) AS m
          ON m.k = i % 5
        """


def rollups_sql(bounds: str, where: str = "") -> str:
    """INSERT of the daily rollups of the events `where` selects; `bounds` is the parameter
    holding histogram.BOUNDS_MS."""
    return (
        """
        INSERT INTO usage_daily (account_id, day, model, currency, member_id, user_id,
            cost_center, status_class, requests, input_tokens, cached_input_tokens,
            output_tokens, cost, latency_hist)
        SELECT account_id, (occurred_at AT TIME ZONE 'UTC')::date, model, currency, '',
               user_id, cost_center, status_code / 100, count(*), sum(input_tokens),
               sum(cached_input_tokens), sum(output_tokens), sum(cost), """
        + _HISTOGRAM_SQL
        + f"""
        FROM (
            -- width_bucket counts the bounds <= latency - 1: histogram.bucket_of in SQL
            SELECT *, width_bucket(latency_ms - 1, {bounds}::int[]) AS b
            FROM usage_events {where}
        ) AS e
        GROUP BY 1, 2, 3, 4, 6, 7, 8
        """
    )


async def _generate(url: str, account_id: str, n: int) -> float:
    """n events over January in usage_events, and their rollups, straight in SQL."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    started = monotonic()
    try:
        await conn.execute(
            events_sql("$1", "CASE WHEN i % 50 = 0 THEN 500 WHEN i % 70 = 0 THEN 429 ELSE 200 END"),
            account_id,
            n,
        )
        await conn.execute(
            rollups_sql("$2", "WHERE account_id = $1"), account_id, list(histogram.BOUNDS_MS)
        )
        await conn.execute("ANALYZE usage_events; ANALYZE usage_daily")
    finally:
        await conn.close()
    return monotonic() - started


class LatencyResult(Result):
    """A time (lower is better): the ratio says how many times faster than the baseline."""

    def ratio_text(self) -> str:
        if not self.baseline_figure or not self.figure:
            return "-"
        return f"{self.baseline_figure / self.figure:,.0f}x faster"


_RAW_STATS = """
SELECT model, count(*), sum(input_tokens), sum(output_tokens), sum(cost),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
FROM usage_events
WHERE account_id = $1 AND occurred_at >= '2026-01-01' AND occurred_at < '2026-02-01'
GROUP BY model
"""


async def _stats_ms(
    app: FastAPI,
    headers: dict[str, str],
    group_by: str,
    runs: int,
    cold: Callable[[], Awaitable[None]] | None,
) -> float:
    """Median ms of one month's stats; `cold` (outside the timer) empties the account's cache
    before each request, so the figure is the database's, not the 15-minute cache's."""
    params = {"from": "2026-01-01", "to": "2026-02-01", "group_by": group_by}
    transport = httpx.ASGITransport(app=app)
    times = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for i in range(runs + 3):
            if cold is not None:
                await cold()
            with Timer() as timer:
                response = await client.get(STATS, params=params, headers=headers)
            response.raise_for_status()
            if i >= 3:  # warm-up
                times.append(timer.seconds * 1000)
    return statistics.median(times)


async def _raw_scan_ms(url: str, account_id: str) -> float:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        with Timer() as timer:
            await conn.fetch(_RAW_STATS, account_id)
    finally:
        await conn.close()
    return timer.seconds * 1000


async def run(*, quick: bool, console: Console) -> list[Result]:
    if not await postgres_available():
        console.print("   PostgreSQL unreachable: usage benchmarks skipped")
        return []
    batches = 12 if quick else 41
    stats_events = settings["stats_events"] or (200_000 if quick else 10_000_000)
    results = []
    async with database("postgresql") as url:
        config = BillingConfig(
            environment="test", database_url=url, embedded_worker=False, log_level="WARNING"
        )
        billing = BillingService(config, clock=FrozenClock(NOW))
        account_id, secret = await _setup(billing)
        headers = {"Authorization": f"Bearer {secret}"}
        app = create_app(billing=billing)
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(dsn, min_size=CLIENTS, max_size=10)
        async with pool.acquire() as conn:
            await conn.execute(_BARE_TABLE)
            await conn.execute(_SAME_TABLES)
        bare_app = _bare_app(pool)
        same_app = _bare_app(pool, same_storage=True)
        ours: list[BatchRun] = []
        bare: list[BatchRun] = []
        same: list[BatchRun] = []
        # Rounds alternate the three sides: the box is shared, its load drifts within a run.
        # All three run inside the app's lifespan, which freezes the GC's start-up objects.
        try:
            async with app.router.lifespan_context(app):
                for n in range(1 if quick else ROUNDS):
                    ours.append(
                        await _events_per_second(
                            app, _bodies(batches, f"a{n}"), headers, billing.settle_usage_rollups
                        )
                    )
                    bare.append(await _events_per_second(bare_app, _bodies(batches, f"b{n}"), {}))
                    same.append(await _events_per_second(same_app, _bodies(batches, f"s{n}"), {}))
                    console.print(
                        f"   round {n + 1}: {_run_text(ours[-1], bare[-1])}; the bare route "
                        f"writing ours' storage {same[-1].events_per_second:,.0f} events/s"
                    )
        finally:
            await pool.close()
        full = statistics.median(r.events_per_second for r in ours)
        base = statistics.median(r.events_per_second for r in bare)
        same_base = statistics.median(r.events_per_second for r in same)
        ratios = [
            o.events_per_second / b.events_per_second for o, b in zip(ours, bare, strict=True)
        ]
        console.print(
            f"   /usage/batch median {full:,.0f} events/s, baseline median {base:,.0f} events/s, "
            f"ratio per round {min(ratios):.2f} to {max(ratios):.2f} ({CLIENTS} clients, "
            f"{BATCH_SIZE}-event batches, load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())})"
        )
        console.print(f"   baseline: {BASELINE}")
        console.print(
            f"   the bare route writing ours' storage (keys table, usage_events' indexes): "
            f"{same_base:,.0f} events/s median, {same_base / base:.2f}x of the baseline"
        )
        results.append(
            Result(
                name=f"POST /usage/batch ({BATCH_SIZE}/batch, {CLIENTS} clients)",
                backend="postgresql",
                figure=full,
                unit="events/s",
                baseline="bare FastAPI, json + asyncpg COPY into a PK-only table",
                baseline_figure=base,
                target=">= 0.8",
            )
        )
        results.append(
            Result(
                name="the same, against the bare route writing ours' storage (diagnostic)",
                backend="postgresql",
                figure=full,
                unit="events/s",
                baseline="bare FastAPI, json + COPY into a key table and an events table "
                "indexed as ours",
                baseline_figure=same_base,
            )
        )
        if settings["batch_only"]:
            await billing.close()
            return results

        # Stats: a fresh account holding `stats_events` January events and their rollups.
        stats_account = await billing.create_account(AccountCreate(name="Stats"))
        _, stats_secret = await billing.issue_api_key(account_id=stats_account.id, role="owner")
        seconds = await _generate(url, stats_account.id, stats_events)
        console.print(f"   generated {stats_events:,} events + rollups in {seconds:,.1f} s")
        stats_headers = {"Authorization": f"Bearer {stats_secret}"}
        scope = account_scope(stats_account.id)

        async def cold() -> None:
            await billing.cache.invalidate([scope])

        runs = 10 if quick else 30
        async with app.router.lifespan_context(app):
            figures = {
                group: await _stats_ms(app, stats_headers, group, runs, cold)
                for group in ("model", "day", "user")
            }
            cached = await _stats_ms(app, stats_headers, "model", runs, None)
        raw = await _raw_scan_ms(url, stats_account.id)
        await billing.close()
    for group, ms in figures.items():
        console.print(
            f"   /usage/stats month group_by={group}: {ms:,.1f} ms median "
            f"(raw-event GROUP BY without rollups: {raw:,.0f} ms; cache emptied before each)"
        )
        results.append(
            LatencyResult(
                name=f"GET /usage/stats month, {stats_events:,} events, by {group} (ms)",
                backend="postgresql",
                figure=ms,
                unit="ms",
                baseline="raw-event GROUP BY, no rollups",
                baseline_figure=raw,
            )
        )
    console.print(f"   /usage/stats month group_by=model from the cache: {cached:,.1f} ms median")
    return results
