"""Quota counters fed by stored usage, limits from the subscription, and their invalidation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from aihub_billing.kit.context import Actor, Role
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.conftest import make_config
from tests.quota.conftest import lose_counters
from tests.quota.test_api import QUOTA, check, override, owner
from tests.subscriptions.helpers import subscribe

FREE_CALLS, FREE_TOKENS = 100, 10_000


def call(**extra: Any) -> dict[str, Any]:
    return {
        "usage_type": "api_call",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 50,
        "status_code": 200,
        **extra,
    }


async def track(client: httpx.AsyncClient, key: str, **extra: Any) -> httpx.Response:
    response = await client.post(f"{API}/usage/track", json=call(**extra), headers=auth(key))
    assert response.status_code in (200, 201), response.text
    return response


async def remaining(client: httpx.AsyncClient, key: str) -> tuple[int, int, int]:
    status = (await client.get(QUOTA, headers=auth(key))).json()
    in_flight = status["rate_limits"]["concurrency"]["in_flight"]
    return status["remaining_calls"], status["remaining_tokens"], in_flight


async def test_track_settles_the_reservation_with_the_real_tokens(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner(client, admin_key)
    reserved = (await check(client, key, estimated_tokens=1000)).json()
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 1000, 1)
    rid = reserved["reservation_id"]
    await track(client, key, event_id="e1", reservation_id=rid)
    # The call stays counted once; the reservation's 1,000 tokens become the real 150.
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)
    duplicate = await track(client, key, event_id="e1", reservation_id=rid)
    assert duplicate.json()["status"] == "duplicate"
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)


async def test_usage_after_a_commit_is_that_call_and_a_second_usage_another(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # A gateway that commits the reservation, then sends the usage naming it for billing:
    # one call, the usage's tokens (not the committed ones on top).
    _, key = await owner(client, admin_key)
    rid = (await check(client, key, estimated_tokens=1000)).json()["reservation_id"]
    committed = await client.post(
        f"{QUOTA}/reservations/{rid}/commit", json={"actual_tokens": 150}, headers=auth(key)
    )
    assert committed.status_code == 200, committed.text
    await track(client, key, event_id="e1", reservation_id=rid)
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)
    # Another stored call naming the same reservation is a call of its own, as stored.
    await track(client, key, event_id="e2", reservation_id=rid)
    assert await remaining(client, key) == (FREE_CALLS - 2, FREE_TOKENS - 300, 0)
    # Released (its call given back), then used all the same: counted whole.
    rid = (await check(client, key, estimated_tokens=10)).json()["reservation_id"]
    released = await client.post(f"{QUOTA}/reservations/{rid}/release", headers=auth(key))
    assert released.status_code == 200, released.text
    await track(client, key, event_id="e3", reservation_id=rid)
    assert await remaining(client, key) == (FREE_CALLS - 3, FREE_TOKENS - 450, 0)


async def test_usage_without_a_check_counts_its_calls_and_tokens(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner(client, admin_key)
    for n in range(3):
        await track(client, key, event_id=f"t{n}")
    events = [call(event_id="b1"), call(event_id="b2"), call(event_id="t0"), call(model="nope")]
    response = await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["accepted", "accepted", "duplicate", "rejected"]
    assert await remaining(client, key) == (FREE_CALLS - 5, FREE_TOKENS - 5 * 150, 0)


async def test_late_usage_of_an_earlier_period_is_stored_but_not_counted_now(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)  # free plan: the period began at its creation
    before = (billing.clock.now() - timedelta(days=40)).isoformat()
    events = [call(event_id="old", timestamp=before), call(event_id="new")]
    response = await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))
    assert response.json()["accepted"] == 2
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)
    await lose_counters(billing)  # a rebuild from stored usage agrees
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)


async def test_a_reservation_that_expired_still_counts_the_real_tokens(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    rid = (await check(client, key, estimated_tokens=1000)).json()["reservation_id"]
    billing.clock.advance(seconds=billing.quota.reservation_ttl + 1)  # type: ignore[attr-defined]
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS, 0)
    await track(client, key, event_id="late", reservation_id=rid)
    assert await remaining(client, key) == (FREE_CALLS - 1, FREE_TOKENS - 150, 0)


async def test_lost_counters_are_rebuilt_from_the_stored_usage(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    for n in range(4):
        await track(client, key, event_id=f"r{n}")
    await lose_counters(billing)
    body = (await check(client, key, estimated_tokens=0)).json()
    assert (body["remaining_calls"], body["remaining_tokens"]) == (
        FREE_CALLS - 5,
        FREE_TOKENS - 4 * 150,
    )


async def test_a_plan_change_applies_to_the_next_check_at_once(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner(client, admin_key)
    assert (await check(client, key)).json()["remaining_calls"] == FREE_CALLS - 1
    await subscribe(client, key)  # pro, from the same instant: the same period
    status = (await client.get(QUOTA, headers=auth(key))).json()
    assert (status["plan_type"], status["remaining_calls"]) == ("pro", 10_000 - 1)
    assert (await check(client, key)).json()["remaining_calls"] == 10_000 - 2


# Without Redis there is one process only: nothing to tell.
@pytest.mark.parametrize("billing", ["redis"], indirect=True)
async def test_another_process_drops_its_cached_limits_when_told(
    billing: BillingService, client: httpx.AsyncClient, admin_key: str
) -> None:
    assert billing.redis is not None
    account_id, _ = await owner(client, admin_key)
    other = BillingService(make_config(billing.config.database_url, **_redis(billing)))
    stop = asyncio.Event()
    background = asyncio.create_task(other.run_quota_background(stop))
    try:
        ctx = other.context(Actor(role=Role.ADMIN))
        async with other.transaction() as session:
            await other.quota.limits(session, ctx, account_id)
        assert account_id in other.quota._cache
        for _ in range(50):  # the listener subscribes in the background
            await billing.limits_changed(account_id)
            await asyncio.sleep(0.05)
            if account_id not in other.quota._cache:
                break
        assert account_id not in other.quota._cache
    finally:
        stop.set()
        await background
        await other.close()


def _redis(billing: BillingService) -> dict[str, Any]:
    return {
        "redis_url": billing.config.redis_url,
        "quota_key_prefix": billing.config.quota_key_prefix,
    }


async def test_unreserved_usage_of_a_key_counts_for_the_keys_own_cap(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # A key bound to no member is capped as itself: its usage sent without a reservation
    # counts for that cap as its checks do, not only for the account.
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, member_tokens_limit=200)
    await track(client, key, event_id="e1")  # 150 tokens
    refused = await check(client, key, estimated_tokens=100)
    assert (refused.status_code, refused.json()["limit"]) == (402, "member_tokens")
    assert (await check(client, key, estimated_tokens=50)).status_code == 200


async def test_a_member_cap_a_gateway_names_survives_a_counter_rebuild(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    # The gateway (one owner key) names the end user in its checks and sends the same
    # user_id with the usage: the rebuild from the stored usage restores that user's cap.
    account_id, key = await owner(client, admin_key)
    await override(client, admin_key, account_id=account_id, member_calls_limit=2)
    for n in range(2):
        rid = (await check(client, key, user_id="user-a")).json()["reservation_id"]
        await track(client, key, event_id=f"e{n}", reservation_id=rid, user_id="user-a")
    assert (await check(client, key, user_id="user-a")).status_code == 402
    await lose_counters(billing)
    again = await check(client, key, user_id="user-a")
    assert (again.status_code, again.json()["limit"]) == (402, "member_calls")
    assert (await check(client, key, user_id="user-b")).status_code == 200
