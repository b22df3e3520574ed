"""UsageTracker on both databases: rollups equal a recomputation from raw events (Hypothesis),
and duplicate event ids under concurrency count once."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.kit.ids import new_id
from aihub_billing.service import BillingService
from aihub_billing.usage import histogram
from aihub_billing.usage import repository as usage_repository
from aihub_billing.usage.repository import UsageRepository
from aihub_billing.usage.service import (
    SEED_PRICES,
    CountedUsage,
    CountingPeriod,
    UsageTracker,
    model_prices,
    usage,
)
from tests.api.helpers import API, auth, create_account, issue_key

MODELS = [m for m, *_ in SEED_PRICES]
BATCH = f"{API}/usage/batch"


@st.composite
def usage_events(draw: st.DrawFn) -> dict[str, Any]:
    input_tokens = draw(st.integers(0, 2_000_000))
    event: dict[str, Any] = {
        "model": draw(st.sampled_from(MODELS)),
        "input_tokens": input_tokens,
        "cached_input_tokens": draw(st.integers(0, input_tokens)),
        "output_tokens": draw(st.integers(0, 2_000_000)),
        "status_code": draw(st.sampled_from([200, 201, 302, 400, 429, 500, 503])),
        # Up to three days back, to the second: several rollup days per example.
        "seconds_ago": draw(st.integers(0, 3 * 86_400)),
        "user_id": draw(st.sampled_from([None, "u1", "u2"])),
        "cost_center": draw(st.sampled_from([None, "ml", "ops"])),
        "latency_ms": draw(st.none() | st.integers(0, 70_000)),
        # A small id pool so duplicates across and within batches happen often.
        "event_id": draw(st.none() | st.sampled_from([f"e{i}" for i in range(12)])),
    }
    return event


def _recompute(events: list[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out: dict[tuple[Any, ...], list[Any]] = {}
    for e in events:
        if e.usage_type != "api_call":
            continue
        key = (
            e.occurred_at.date(),
            e.model,
            e.currency,
            e.member_id or "",
            e.user_id or "",
            e.cost_center or "",
            e.status_code // 100,
        )
        acc = out.setdefault(key, [0, 0, 0, 0, Decimal(0), histogram.empty()])
        acc[0] += 1
        acc[1] += e.input_tokens
        acc[2] += e.cached_input_tokens
        acc[3] += e.output_tokens
        acc[4] += e.cost
        if e.latency_ms is not None:
            acc[5][histogram.bucket_of(e.latency_ms)] += 1
    return {k: tuple(v) for k, v in out.items()}


async def _rollups_and_recomputation(
    billing: BillingService, account_id: str
) -> tuple[dict[tuple[Any, ...], tuple[Any, ...]], dict[tuple[Any, ...], tuple[Any, ...]]]:
    """usage_daily once the roller has run (PostgreSQL), and the same from the raw events."""
    async with asyncio.timeout(60):  # other transactions in the cluster hold the horizon
        await billing.settle_usage_rollups()
    async with billing.db.sessions() as session:
        repo = UsageRepository(session)
        # Sum the shards of each key (PostgreSQL spreads concurrent writers over them).
        rollups: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for r in await repo.rollups(account_id):
            key = (
                r.day,
                r.model,
                r.currency,
                r.member_id,
                r.user_id,
                r.cost_center,
                r.status_class,
            )
            row = (
                r.requests,
                r.input_tokens,
                r.cached_input_tokens,
                r.output_tokens,
                r.cost,
                list(r.latency_hist),
            )
            old = rollups.get(key)
            if old is not None:
                row = (
                    *(a + b for a, b in zip(old[:5], row[:5], strict=True)),
                    [a + b for a, b in zip(old[5], row[5], strict=True)],
                )
            rollups[key] = row
        return rollups, _recompute(await repo.events(account_id))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(st.lists(usage_events(), min_size=1, max_size=25), min_size=1, max_size=4),
    members=st.lists(st.booleans(), min_size=4, max_size=4),
)
async def test_rollups_equal_a_recomputation_from_raw_events(
    billing: BillingService,
    clock: FrozenClock,
    batches: list[list[dict[str, Any]]],
    members: list[bool],
) -> None:
    now = clock.now()
    account_id = new_id("acct", now)  # a fresh account per example: nothing to clean up
    async with billing.transaction() as session:
        await model_prices.seed_defaults(session, billing.context())
    accepted = 0
    for batch, as_member in zip(batches, members, strict=False):
        actor = Actor(
            role=Role.MEMBER if as_member else Role.OWNER,
            account_id=account_id,
            member_id="mem_x" if as_member else None,
        )
        events = [
            {
                **{k: v for k, v in e.items() if k != "seconds_ago"},
                "timestamp": (now - timedelta(seconds=e["seconds_ago"])).isoformat(),
            }
            for e in batch
        ]
        async with billing.transaction() as session:
            result = await usage.record(session, Context(actor=actor, clock=clock), events)
        accepted += result.accepted
        assert result.rejected == 0
    # Period usage (rollups + raw edges) equals the raw count at odd boundaries, before
    # the roller has run (PostgreSQL: all of it past the watermark) and after.
    await _period_usage_is_exact(billing, account_id, now)
    rollups, recomputed = await _rollups_and_recomputation(billing, account_id)
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == accepted
    await _period_usage_is_exact(billing, account_id, now)


async def _period_usage_is_exact(billing: BillingService, account_id: str, now: datetime) -> None:
    async with billing.db.sessions() as session:
        start, end = now - timedelta(days=2, hours=5), now - timedelta(hours=7)
        used = await usage.used_in_period(session, account_id, start, end)
        raw = [
            e
            for e in await UsageRepository(session).events(account_id)
            if start <= e.occurred_at < end
        ]
        assert used.calls == len(raw)
        assert used.tokens == sum(e.input_tokens + e.output_tokens for e in raw)
        by_model = await usage.usage_by_model(session, account_id, start, end)
        costs: dict[str, Decimal] = defaultdict(Decimal)
        for e in raw:
            costs[e.model] += e.cost
        assert {m.model: m.cost for m in by_model} == dict(costs)


async def test_fifty_concurrent_posts_of_one_event_id_count_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"])
    body = {"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5, "event_id": "same"}

    async def post() -> httpx.Response:
        return await client.post(f"{API}/usage/track", json=body, headers=auth(key))

    responses = await asyncio.gather(*(post() for _ in range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201], [r.text for r in responses if r.status_code >= 300]
    rollups, recomputed = await _rollups_and_recomputation(billing, account["id"])
    assert rollups == recomputed
    assert [r[0] for r in rollups.values()] == [1]


async def test_concurrent_overlapping_batches_neither_deadlock_nor_double_count(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"])
    rng = random.Random(7)
    pool = [f"ev-{i}" for i in range(300)]

    async def post(n: int) -> httpx.Response:
        ids = rng.sample(pool, 100)
        events = [
            {"model": rng.choice(MODELS), "input_tokens": 7, "event_id": i, "user_id": f"u{n % 3}"}
            for i in ids
        ]
        return await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))

    responses = await asyncio.gather(*(post(n) for n in range(12)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    accepted = sum(r.json()["accepted"] for r in responses)
    seen = {e["event_id"] for r in responses for e in r.json()["results"]}
    assert accepted == len(seen)
    rollups, recomputed = await _rollups_and_recomputation(billing, account["id"])
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == accepted


async def test_the_counter_gets_each_new_api_call_once(
    billing: BillingService, clock: FrozenClock
) -> None:
    settled: list[tuple[str, CountedUsage]] = []

    class Counter:
        async def counting_period(
            self, session: Any, ctx: Context, account_id: str
        ) -> CountingPeriod:
            now = ctx.clock.now()
            return CountingPeriod(now, now - timedelta(days=1), now + timedelta(days=1))

        async def counted(
            self, session: Any, ctx: Context, account_id: str, counted: CountedUsage
        ) -> None:
            settled.append((account_id, counted))

    tracker = UsageTracker()
    account_id = new_id("acct", clock.now())
    ctx = Context(actor=Actor(role=Role.OWNER, account_id=account_id), clock=clock)
    async with billing.transaction() as session:
        await model_prices.seed_defaults(session, billing.context())
    events = [
        {"model": "gpt-4o", "input_tokens": 10, "event_id": "a", "reservation_id": "res_1"},
        {"model": "gpt-4o", "input_tokens": 20, "event_id": "b"},
        {"model": "no-price", "input_tokens": 30, "event_id": "c", "reservation_id": "res_3"},
    ]
    for _ in range(2):  # the second time every event is a duplicate: nothing to settle
        async with billing.transaction() as session:
            await tracker.record(session, ctx, events, Counter())
    # One call without a reservation (b), one settling res_1 (a); c has no price.
    assert settled == [(account_id, CountedUsage(None, 1, 20, [("res_1", 10)]))]
    async with billing.db.sessions() as session:
        stored = {
            e.event_id: e.reservation_id for e in await UsageRepository(session).events(account_id)
        }
    assert stored == {"a": "res_1", "b": None}


async def test_openapi_documents_batch_items_as_usage_events(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/billing/usage/batch"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "UsageBatchIn" and body["required"] == ["events"]
    assert body["properties"]["events"]["items"] == {"$ref": "#/components/schemas/UsageEventIn"}
    assert "UsageEventIn" in spec["components"]["schemas"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/UsageBatchResult"}


async def test_two_batches_in_one_transaction_each_count_their_own_events(
    billing: BillingService, clock: FrozenClock
) -> None:
    # Each batch is its own insert-and-rollup statement in the same transaction.
    account_id = new_id("acct", clock.now())
    ctx = Context(actor=Actor(role=Role.OWNER, account_id=account_id), clock=clock)
    async with billing.transaction() as session:
        await model_prices.seed_defaults(session, billing.context())
    first = [{"model": "gpt-4o", "input_tokens": 10, "event_id": f"a{i}"} for i in range(3)]
    second = [{"model": "gpt-4o-mini", "input_tokens": 7, "event_id": f"a{i}"} for i in range(2, 6)]
    async with billing.transaction() as session:
        one = await usage.record(session, ctx, first)
        two = await usage.record(session, ctx, second)
    assert (one.accepted, one.duplicates) == (3, 0)
    assert [r.status for r in two.results] == ["duplicate", "accepted", "accepted", "accepted"]
    assert two.results[1].cost == Decimal("0.00000105")  # 7 x 0.15 / 1M
    rollups, recomputed = await _rollups_and_recomputation(billing, account_id)
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == 6


def _event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "model": MODELS[n % len(MODELS)],
        "input_tokens": 1000 + n,
        "cached_input_tokens": n % 7,
        "output_tokens": 10 + n % 13,
        "status_code": 500 if n % 11 == 0 else 200,
        "event_id": f"big-{n}",
        "user_id": f"u{n % 4}",
        "latency_ms": 37 * n,
        "metadata": {"n": n, "tags": ["a", "b"]},
        **fields,
    }


async def test_large_batches_dedupe_within_and_against_stored_events_and_reject_alone(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, clock: FrozenClock
) -> None:
    # 100-event batches take the optimistic plain INSERT on PostgreSQL; the second batch
    # repeats stored ids, so there the primary key refuses it and ON CONFLICT decides.
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"])
    future = (clock.now() + timedelta(minutes=6)).isoformat()
    first: list[Any] = [_event(n) for n in range(80)]
    first += [_event(n, input_tokens=n + 1) for n in range(10)]  # repeated ids, other counts
    first += [
        _event(900, status_code=42),
        _event(901, model="no-such-model"),
        _event(902, timestamp=future),
        _event(903, cached_input_tokens=5000),
        "not an object",
    ]
    first += [_event(n) for n in range(80, 85)]
    response = await client.post(BATCH, json={"events": first}, headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (85, 10, 5)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["accepted"] * 80 + ["duplicate"] * 10 + ["rejected"] * 5 + ["accepted"] * 5
    assert [r["code"] for r in body["results"][90:95]] == [
        "validation_error", "unknown_model", "timestamp_in_future", "validation_error",
        "validation_error",
    ]  # fmt: skip
    prices = {
        p["model"]: p for p in (await client.get(f"{API}/model-prices", headers=auth(key))).json()
    }
    for result, event in zip(body["results"][:80], first[:80], strict=True):
        price = prices[event["model"]]
        cached = price["cached_input_per_1m"] or price["input_per_1m"]
        expected = (
            (event["input_tokens"] - event["cached_input_tokens"]) * Decimal(price["input_per_1m"])
            + event["cached_input_tokens"] * Decimal(cached)
            + event["output_tokens"] * Decimal(price["output_per_1m"])
        ) / 1_000_000
        # Exact and plain: the text is the canonical Decimal, never an exponent form.
        assert Decimal(result["cost"]) == expected and "E" not in result["cost"]
        assert result["cost"] == f"{Decimal(result['cost']).normalize():f}"
        assert result["currency"] == "USD" and result["event_id"] == event["event_id"]

    second = [_event(n) for n in range(50, 150)]  # 35 stored (50..84), 65 new
    response = await client.post(BATCH, json={"events": second}, headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (65, 35, 0)
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 35 + ["accepted"] * 65
    assert all("cost" not in r for r in body["results"][:35])

    rollups, recomputed = await _rollups_and_recomputation(billing, account["id"])
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == 150
    async with billing.db.sessions() as session:
        stored = await UsageRepository(session).events(account["id"])
    assert sorted(e.event_id for e in stored) == sorted(f"big-{n}" for n in range(150))
    by_id = {e.event_id: e for e in stored}
    # The first write of an id wins; its stored cost is the one answered.
    assert by_id["big-3"].input_tokens == 1003
    assert by_id["big-3"].event_metadata == {"n": 3, "tags": ["a", "b"]}
    assert by_id["big-3"].received_at == clock.now() and by_id["big-3"].member_id is None


async def test_optimistic_insert_falls_back_per_batch_and_keeps_rollups_exact(
    billing: BillingService, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every batch tries the plain INSERT first (no size threshold): repeats across batches
    # and in one transaction fall back to ON CONFLICT, new batches do not.
    monkeypatch.setattr(usage_repository, "OPTIMISTIC_INSERT_MIN", 1)
    account_id = new_id("acct", clock.now())
    ctx = Context(actor=Actor(role=Role.OWNER, account_id=account_id), clock=clock)
    async with billing.transaction() as session:
        await model_prices.seed_defaults(session, billing.context())
    outcomes = []
    async with billing.transaction() as session:
        outcomes.append(await usage.record(session, ctx, [_event(n) for n in range(5)]))
        outcomes.append(await usage.record(session, ctx, [_event(n) for n in range(3, 8)]))
    async with billing.transaction() as session:
        outcomes.append(await usage.record(session, ctx, [_event(n) for n in range(6, 12)]))
        outcomes.append(await usage.record(session, ctx, [_event(n) for n in range(12, 14)]))
    assert [(o.accepted, o.duplicates) for o in outcomes] == [(5, 0), (3, 2), (4, 2), (2, 0)]
    rollups, recomputed = await _rollups_and_recomputation(billing, account_id)
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == 14


async def test_batch_auth_errors_are_problems_with_and_without_an_idempotency_key(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    # Without an Idempotency-Key the batch skips FastAPI's dependency solving (LeanBatchRoute):
    # the same authentication, problems and rollback as the regular path.
    body = {"events": [{"model": "gpt-4o", "input_tokens": 3, "event_id": "auth-1"}]}
    for extra in ({}, {"Idempotency-Key": "auth-batch"}):
        missing = await client.post(BATCH, json=body, headers=extra)
        assert missing.status_code == 401, missing.text
        assert missing.headers["content-type"] == "application/problem+json"
        wrong = await client.post(BATCH, json=body, headers=auth("nope", **extra))
        assert wrong.status_code == 401, wrong.text
        operator = await client.post(BATCH, json=body, headers=auth(admin_key, **extra))
        assert (operator.status_code, operator.json()["code"]) == (
            403,
            "usage_needs_account_key",
        )
        empty = await client.post(BATCH, json={"events": []}, headers=auth(admin_key, **extra))
        assert (empty.status_code, empty.json()["code"]) == (422, "validation_error")
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"])
    ok = await client.post(BATCH, json=body, headers=auth(key))
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text
    async with billing.db.sessions() as session:
        assert [e.event_id for e in await UsageRepository(session).events(account["id"])] == [
            "auth-1"
        ]
