"""/usage/track, /usage/batch, /usage/stats and /model-prices on both databases."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key

TRACK = f"{API}/usage/track"
BATCH = f"{API}/usage/batch"
STATS = f"{API}/usage/stats"
PRICES = f"{API}/model-prices"
SEED = {
    "usage_type": "api_call",
    "model": "gpt-3.5-turbo",
    "input_tokens": 100,
    "output_tokens": 50,
    "status_code": 200,
}


@pytest.fixture
async def owner(client: httpx.AsyncClient, admin_key: str) -> dict[str, Any]:
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"])
    return {"account": account, "key": key}


async def _member_key(client: httpx.AsyncClient, owner: dict[str, Any]) -> tuple[str, str]:
    account_id = owner["account"]["id"]
    member = await client.post(
        f"{API}/accounts/{account_id}/members",
        json={"email": "dev@example.com"},
        headers=auth(owner["key"]),
    )
    assert member.status_code == 201, member.text
    key = await issue_key(
        client, owner["key"], account_id, role="member", member_id=member.json()["id"]
    )
    return member.json()["id"], key


async def test_seed_body_is_recorded_with_its_exact_cost(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    response = await client.post(TRACK, json=SEED, headers=auth(owner["key"]))
    assert response.status_code == 201, response.text
    body = response.json()
    # 100 x 0.50/1M + 50 x 1.50/1M = 0.000125 USD, unrounded.
    assert (body["status"], body["cost"], body["currency"]) == ("accepted", "0.000125", "USD")
    assert body["event_id"].startswith("evt_")


async def test_the_same_event_id_counts_once(
    client: httpx.AsyncClient, owner: dict[str, Any], billing: BillingService
) -> None:
    event = {**SEED, "event_id": "call-1"}
    first = await client.post(TRACK, json=event, headers=auth(owner["key"]))
    again = await client.post(
        TRACK, json={**event, "input_tokens": 999}, headers=auth(owner["key"])
    )
    assert (first.status_code, first.json()["status"]) == (201, "accepted")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    batch = await client.post(
        BATCH,
        json={"events": [event, event, {**SEED, "event_id": "call-2"}]},
        headers=auth(owner["key"]),
    )
    assert [r["status"] for r in batch.json()["results"]] == ["duplicate", "duplicate", "accepted"]
    async with billing.db.sessions() as session:
        used = await billing_usage().used_in_period(
            session, owner["account"]["id"], _t(2026, 1, 1), _t(2026, 2, 1)
        )
    assert (used.calls, used.tokens) == (2, 300)


async def test_batch_rejects_only_the_invalid_events(
    client: httpx.AsyncClient, owner: dict[str, Any], clock: FrozenClock
) -> None:
    future = (clock.now() + timedelta(minutes=6)).isoformat()
    events: list[Any] = [
        {**SEED, "event_id": "ok-1"},
        {**SEED, "input_tokens": -1, "event_id": "bad-tokens"},
        {**SEED, "model": "no-such-model", "event_id": "bad-model"},
        {**SEED, "timestamp": future, "event_id": "bad-time"},
        {**SEED, "unexpected": True},
        "not an object",
        {**SEED, "timestamp": (clock.now() + timedelta(minutes=4)).isoformat()},
        {"usage_type": "storage", "storage_gb": "12.5"},
        {"usage_type": "storage"},
    ]
    response = await client.post(BATCH, json={"events": events}, headers=auth(owner["key"]))
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert [r["status"] for r in results] == [
        "accepted", "rejected", "rejected", "rejected", "rejected", "rejected",
        "accepted", "accepted", "rejected",
    ]  # fmt: skip
    assert [r["code"] for r in results if r["status"] == "rejected"] == [
        "validation_error", "unknown_model", "timestamp_in_future", "validation_error",
        "validation_error", "validation_error",
    ]  # fmt: skip
    assert results[1]["event_id"] == "bad-tokens"
    assert results[1]["errors"][0]["loc"] == ["input_tokens"]
    assert "-1" not in str(results[1]["errors"])  # where and why, not the value
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 6)
    assert "cost" not in results[7] and "currency" not in results[7]


async def test_batch_limits(client: httpx.AsyncClient, owner: dict[str, Any]) -> None:
    too_many = await client.post(BATCH, json={"events": [SEED] * 1001}, headers=auth(owner["key"]))
    assert too_many.status_code == 422
    assert too_many.json()["code"] == "validation_error"
    full = await client.post(BATCH, json={"events": [SEED] * 1000}, headers=auth(owner["key"]))
    assert full.status_code == 200 and full.json()["accepted"] == 1000


async def test_batch_body_errors_are_422_problems(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    headers = {**auth(owner["key"]), "Content-Type": "application/json"}
    for body, loc in (
        (b"{not json", ["body"]),
        (b'{"events": []}', ["body", "events"]),
        (b'{"events": "many"}', ["body", "events"]),
        (b"[]", ["body"]),
    ):
        response = await client.post(BATCH, content=body, headers=headers)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert problem["errors"][0]["loc"][: len(loc)] == loc, problem


async def test_a_batch_retried_with_its_idempotency_key_is_replayed(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    headers = {**auth(owner["key"]), "Idempotency-Key": "batch-1"}
    body = {"events": [{**SEED, "event_id": "idem-1"}, {**SEED, "input_tokens": -1}]}
    first = await client.post(BATCH, json=body, headers=headers)
    again = await client.post(BATCH, json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert [r["status"] for r in first.json()["results"]] == ["accepted", "rejected"]
    other = await client.post(BATCH, json={"events": [SEED]}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


async def test_track_rejections_are_problems(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str
) -> None:
    unknown = await client.post(
        TRACK, json={**SEED, "model": "mystery"}, headers=auth(owner["key"])
    )
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["code"] == "unknown_model"
    invalid = await client.post(TRACK, json={**SEED, "status_code": 42}, headers=auth(owner["key"]))
    assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error")
    # Rules across fields give the same problem as those of one field.
    for body in ({"usage_type": "storage"}, {**SEED, "cached_input_tokens": 101}):
        broken = await client.post(TRACK, json=body, headers=auth(owner["key"]))
        assert (broken.status_code, broken.json()["code"]) == (422, "validation_error"), body
        assert broken.headers["content-type"] == "application/problem+json"
    operator = await client.post(TRACK, json=SEED, headers=auth(admin_key))
    assert (operator.status_code, operator.json()["code"]) == (403, "usage_needs_account_key")


async def test_member_keys_record_their_member(
    client: httpx.AsyncClient, owner: dict[str, Any], billing: BillingService
) -> None:
    member_id, key = await _member_key(client, owner)
    for body in ({**SEED}, {**SEED, "user_id": "end-user-7"}):
        assert (await client.post(TRACK, json=body, headers=auth(key))).status_code == 201
    assert (await client.post(TRACK, json=SEED, headers=auth(owner["key"]))).status_code == 201
    async with billing.db.sessions() as session:
        used = await billing_usage().used_in_period(
            session, owner["account"]["id"], _t(2026, 1, 31), _t(2026, 1, 31, 13)
        )
    assert used.calls == 3 and used.tokens == 450
    assert dict(used.per_member) == {member_id: (2, 300)}
    stats = await client.get(STATS, params={"group_by": "user"}, headers=auth(owner["key"]))
    groups = {r["group"]: r["requests"] for r in stats.json()["rows"]}
    assert groups == {member_id: 1, "end-user-7": 1, None: 1}


async def test_new_price_applies_from_its_effective_time(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str, clock: FrozenClock
) -> None:
    at = clock.now() + timedelta(hours=1)
    price = {
        "model": "gpt-3.5-turbo",
        "currency": "USD",
        "input_per_1m": "1",
        "output_per_1m": "2",
        "effective_from": at.isoformat(),
    }
    created = await client.post(PRICES, json=price, headers=auth(admin_key))
    assert created.status_code == 201, created.text
    listed = (
        await client.get(PRICES, params={"model": "gpt-3.5-turbo"}, headers=auth(owner["key"]))
    ).json()
    assert [(p["effective_to"], p["input_per_1m"]) for p in listed] == [
        (at.isoformat().replace("+00:00", "Z"), "0.5"),
        (None, "1"),
    ]
    clock.advance(hours=2)
    costs = {}
    for label, ts in (("before", at - timedelta(microseconds=1)), ("at", at)):
        body = {**SEED, "timestamp": ts.isoformat()}
        costs[label] = (await client.post(TRACK, json=body, headers=auth(owner["key"]))).json()[
            "cost"
        ]
    assert costs == {"before": "0.000125", "at": "0.0002"}
    again = await client.post(PRICES, json=price, headers=auth(admin_key))
    assert (again.status_code, again.json()["code"]) == (409, "model_price_backdated")
    forbidden = await client.post(PRICES, json=price, headers=auth(owner["key"]))
    assert forbidden.status_code == 403


async def test_a_new_price_may_not_start_before_events_already_recorded_ahead(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str, clock: FrozenClock
) -> None:
    """Events may be stamped up to 5 minutes ahead of the clock and are costed when recorded:
    a price starting before such an event would disagree with the cost stored for it."""
    ahead = clock.now() + timedelta(minutes=4)
    body = {**SEED, "model": "gpt-4o", "timestamp": ahead.isoformat(), "event_id": "ahead-1"}
    tracked = await client.post(TRACK, json=body, headers=auth(owner["key"]))
    assert tracked.status_code == 201, tracked.text
    price = {"model": "gpt-4o", "currency": "USD", "input_per_1m": "5", "output_per_1m": "20"}
    for start in (clock.now() + timedelta(minutes=1), clock.now() + timedelta(minutes=5)):
        refused = await client.post(
            PRICES, json={**price, "effective_from": start.isoformat()}, headers=auth(admin_key)
        )
        assert (refused.status_code, refused.json()["code"]) == (409, "model_price_backdated")
    # Past the tolerance no event can have been recorded yet.
    later = clock.now() + timedelta(minutes=5, microseconds=1)
    created = await client.post(
        PRICES, json={**price, "effective_from": later.isoformat()}, headers=auth(admin_key)
    )
    assert created.status_code == 201, created.text


async def test_a_price_set_between_two_others_fits_the_timeline(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    base = {"model": "m-new", "currency": "EUR", "input_per_1m": "1", "output_per_1m": "1"}
    in_two, in_one = clock.now() + timedelta(hours=2), clock.now() + timedelta(hours=1)
    for at in (None, in_two, in_one):
        body = base if at is None else {**base, "effective_from": at.isoformat()}
        response = await client.post(PRICES, json=body, headers=auth(admin_key))
        assert response.status_code == 201, response.text
    same = await client.post(
        PRICES, json={**base, "effective_from": in_one.isoformat()}, headers=auth(admin_key)
    )
    assert (same.status_code, same.json()["code"]) == (409, "model_price_exists")
    prices = (await client.get(PRICES, params={"model": "m-new"}, headers=auth(admin_key))).json()
    spans = [(p["effective_from"], p["effective_to"]) for p in prices]
    iso = [t.isoformat().replace("+00:00", "Z") for t in (clock.now(), in_one, in_two)]
    assert spans == [(iso[0], iso[1]), (iso[1], iso[2]), (iso[2], None)]


async def test_cached_input_tokens_use_the_cached_price(
    client: httpx.AsyncClient, owner: dict[str, Any]
) -> None:
    body = {**SEED, "model": "gpt-4o", "input_tokens": 1000, "cached_input_tokens": 400}
    response = await client.post(TRACK, json=body, headers=auth(owner["key"]))
    # 600 x 2.50 + 400 x 1.25 + 50 x 10.00 = 2500 per 1M tokens.
    assert response.json()["cost"] == "0.0025"
    over = await client.post(
        TRACK, json={**body, "cached_input_tokens": 1001}, headers=auth(owner["key"])
    )
    assert over.status_code == 422


async def test_stats_group_by_day_model_and_csv(
    client: httpx.AsyncClient, owner: dict[str, Any], clock: FrozenClock
) -> None:
    now = clock.now()
    events = [
        {**SEED, "timestamp": (now - timedelta(days=1)).isoformat(), "latency_ms": 120},
        {**SEED, "timestamp": now.isoformat(), "latency_ms": 80, "cost_center": "research"},
        {**SEED, "status_code": 500, "latency_ms": 2500},
        {**SEED, "model": "gpt-4o", "status_code": 429},
    ]
    response = await client.post(BATCH, json={"events": events}, headers=auth(owner["key"]))
    assert response.json()["accepted"] == 4
    params = {"from": "2026-01-01", "to": "2026-02-01"}
    by_day = await client.get(
        STATS, params={**params, "group_by": "day"}, headers=auth(owner["key"])
    )
    assert by_day.status_code == 200, by_day.text
    rows = {r["group"]: r for r in by_day.json()["rows"]}
    assert sorted(rows) == ["2026-01-30", "2026-01-31"]
    today = rows["2026-01-31"]
    assert (today["requests"], today["successful_requests"], today["success_rate"]) == (
        3, 1, "0.3333",
    )  # fmt: skip
    assert today["cost"] == "0.001"  # 2 x 0.000125 + 0.00075, exact
    # Rank 1 of 2 latencies (80, 2500) is the whole (75, 100] bucket: its upper bound.
    assert (today["latency_p50_ms"], today["latency_p99_ms"]) == (100.0, 2980.0)
    by_model = await client.get(
        STATS, params={**params, "group_by": "model", "format": "csv"}, headers=auth(owner["key"])
    )
    assert by_model.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(by_model.text)))
    assert [(r["group"], r["requests"], r["cost"]) for r in table] == [
        ("gpt-3.5-turbo", "3", "0.000375"),
        ("gpt-4o", "1", "0.00075"),
    ]
    accept_csv = await client.get(
        STATS,
        params={**params, "group_by": "cost_center"},
        headers=auth(owner["key"], Accept="text/csv"),
    )
    assert accept_csv.text.splitlines()[0].startswith("group_by,group,currency,requests")
    assert "cost_center,research,USD,1," in accept_csv.text


async def test_stats_tenancy_and_range(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str
) -> None:
    other = await create_account(client, admin_key, name="Other")
    hidden = await client.get(STATS, params={"account_id": other["id"]}, headers=auth(owner["key"]))
    assert hidden.status_code == 404
    mine = await client.get(
        STATS, params={"account_id": owner["account"]["id"]}, headers=auth(admin_key)
    )
    assert mine.status_code == 200 and mine.json()["rows"] == []
    backwards = await client.get(
        STATS, params={"from": "2026-02-01", "to": "2026-01-01"}, headers=auth(owner["key"])
    )
    assert (backwards.status_code, backwards.json()["code"]) == (400, "invalid_stats_range")


async def test_storage_snapshots_give_gb_months(
    client: httpx.AsyncClient, owner: dict[str, Any], billing: BillingService
) -> None:
    snapshots = [
        ("2026-01-01T00:00:00Z", "10"),
        ("2026-01-16T12:00:00Z", "30"),
    ]
    events = [{"usage_type": "storage", "storage_gb": gb, "timestamp": ts} for ts, gb in snapshots]
    response = await client.post(BATCH, json={"events": events}, headers=auth(owner["key"]))
    assert response.json()["accepted"] == 2
    async with billing.db.sessions() as session:
        january = await billing_usage().storage_gb_months(
            session, owner["account"]["id"], _t(2026, 1, 1), _t(2026, 2, 1)
        )
        # Only the carried-over 30 GB in February.
        february = await billing_usage().storage_gb_months(
            session, owner["account"]["id"], _t(2026, 2, 1), _t(2026, 3, 1)
        )
    assert january == Decimal("20")  # 10 GB for 15.5 days, 30 GB for 15.5 days of 31
    assert february == Decimal("30")


async def test_usage_by_model_is_exact_across_partial_days(
    client: httpx.AsyncClient, owner: dict[str, Any], billing: BillingService
) -> None:
    times = ["2026-01-29T23:00:00Z", "2026-01-30T10:00:00Z", "2026-01-31T11:00:00Z"]
    events = [{**SEED, "timestamp": ts} for ts in times]
    await client.post(BATCH, json={"events": events}, headers=auth(owner["key"]))
    async with billing.db.sessions() as session:
        lines = await billing_usage().usage_by_model(
            session, owner["account"]["id"], _t(2026, 1, 29, 23), _t(2026, 1, 31, 11)
        )
    [line] = lines
    assert (line.model, line.currency, line.calls, line.cost) == (
        "gpt-3.5-turbo", "USD", 2, Decimal("0.00025"),
    )  # fmt: skip


async def test_seeded_prices_are_listed(client: httpx.AsyncClient, owner: dict[str, Any]) -> None:
    prices = (await client.get(PRICES, headers=auth(owner["key"]))).json()
    assert {p["model"] for p in prices} >= {
        "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "claude-3-5-sonnet", "claude-3-haiku",
    }  # fmt: skip
    assert all(p["currency"] == "USD" and p["effective_to"] is None for p in prices)


def billing_usage() -> Any:
    from aihub_billing.usage.service import usage

    return usage


def _t(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type]


async def test_a_models_prices_stay_in_one_currency(
    client: httpx.AsyncClient, owner: dict[str, Any], admin_key: str
) -> None:
    # A EUR price of gpt-4o closed the USD one: a USD account's usage was then costed in EUR.
    eur = {"model": "gpt-4o", "currency": "EUR", "input_per_1m": "2", "output_per_1m": "8"}
    refused = await client.post(PRICES, json=eur, headers=auth(admin_key))
    assert (refused.status_code, refused.json()["code"]) == (409, "model_price_currency_mismatch")
    prices = await client.get(PRICES, params={"model": "gpt-4o"}, headers=auth(admin_key))
    assert [(p["currency"], p["effective_to"]) for p in prices.json()] == [("USD", None)]
    tracked = await client.post(TRACK, json={**SEED, "model": "gpt-4o"}, headers=auth(owner["key"]))
    assert tracked.json()["currency"] == "USD"
