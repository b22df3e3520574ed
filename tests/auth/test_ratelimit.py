"""The per-API-key rate limit: both buckets (in process, Redis) against the same contract,
then over HTTP on every kind of route (the lean quota and usage routes included)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import event

from aihub_billing.auth.ratelimit import Bucket, MemoryBucket, RedisBucket
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import redis_client
from tests.api.helpers import API, auth, create_account, issue_key, serving
from tests.quota.conftest import delete_prefix

SECOND = 1_000_000  # us
T0 = 1_800_000_000 * SECOND

# --- the bucket contract ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def make_bucket(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[int, int], Bucket]]:
    """Buckets of (interval us, burst); on Redis all of one test share a key prefix, as the
    processes of one deployment do."""
    if request.param == "memory":
        yield lambda interval, burst: MemoryBucket(interval, interval * (burst - 1))
        return
    client = redis_client(request.getfixturevalue("redis_url"))
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    try:
        yield lambda interval, burst: RedisBucket(
            client, interval, interval * (burst - 1), prefix=prefix
        )
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


async def test_burst_then_one_per_interval(make_bucket: Callable[[int, int], Bucket]) -> None:
    bucket = make_bucket(SECOND, 3)  # 60 a minute, 3 at once
    assert [await bucket.hit("k", T0) for _ in range(4)] == [0, 0, 0, SECOND]
    assert await bucket.hit("k", T0 + SECOND // 2) == SECOND // 2  # refusals cost nothing
    assert await bucket.hit("k", T0 + SECOND) == 0
    assert await bucket.hit("k", T0 + SECOND) == SECOND
    # Idle for a long time: the bucket refills to its burst, not beyond.
    later = T0 + 3600 * SECOND
    assert [await bucket.hit("k", later) for _ in range(4)] == [0, 0, 0, SECOND]


async def test_keys_are_counted_apart(make_bucket: Callable[[int, int], Bucket]) -> None:
    bucket = make_bucket(SECOND, 1)
    assert await bucket.hit("a", T0) == 0
    assert await bucket.hit("b", T0) == 0
    assert await bucket.hit("a", T0) == SECOND


async def test_concurrent_hits_admit_exactly_the_burst(
    make_bucket: Callable[[int, int], Bucket],
) -> None:
    """Hits of one loop turn go out together (on Redis one script call per key); two
    limiters on one Redis are two processes of a deployment: the limit is theirs together."""
    first, second = make_bucket(SECOND, 10), make_bucket(SECOND, 10)
    waits = await asyncio.gather(
        *(bucket.hit(key, T0) for bucket in (first, second) for key in ("a", "b") * 15)
    )
    admitted = sum(1 for wait in waits if wait == 0)
    if isinstance(first, MemoryBucket):
        assert admitted == 40  # in process: each process has its own buckets
    else:
        assert admitted == 20  # 10 per key, whichever process asked
    assert all(wait in (0, *range(SECOND, 21 * SECOND, SECOND)) for wait in waits)


async def test_redis_unreachable_lets_requests_through() -> None:
    client = redis_client("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        bucket = RedisBucket(client, SECOND, 0)
        assert [await bucket.hit("k", T0) for _ in range(3)] == [0, 0, 0]
    finally:
        await client.aclose()


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest) -> dict[str, object]:
    if request.param == "memory":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "quota_key_prefix": f"t{uuid.uuid4().hex[:12]}:",
    }


Call = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]
EVENT = {"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5}
# One route of each kind: FastAPI's dependencies, and the three lean routes.
ROUTES: dict[str, Call] = {
    "GET /plans": lambda c, k: c.get(f"{API}/plans", headers=auth(k)),
    "POST /quota/check": lambda c, k: c.post(
        f"{API}/quota/check", json={"model": "gpt-4o-mini"}, headers=auth(k)
    ),
    "POST /usage/track": lambda c, k: c.post(f"{API}/usage/track", json=EVENT, headers=auth(k)),
    "POST /usage/batch": lambda c, k: c.post(
        f"{API}/usage/batch", json={"events": [EVENT]}, headers=auth(k)
    ),
}


@pytest.mark.parametrize("route", ROUTES)
async def test_a_key_over_its_rate_gets_429_on_every_route(
    route: str, counters: dict[str, object], sqlite_url: str, clock: FrozenClock
) -> None:
    call = ROUTES[route]
    async with serving(
        sqlite_url, clock, api_rate_limit_per_minute=60, api_rate_limit_burst=3, **counters
    ) as (client, _, admin_key):
        account = await create_account(client, admin_key)
        key = await issue_key(client, admin_key, account["id"])
        other = await issue_key(client, admin_key, account["id"])
        assert [(await call(client, key)).status_code < 300 for _ in range(3)] == [True] * 3

        refused = await call(client, key)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["code"] == "rate_limited"
        assert problem["limit"] == "api_key_requests"
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["RateLimit-Limit"] == "3"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.headers["RateLimit-Reset"] == "1"

        # Per key: another key of the same account is not slowed down.
        assert (await call(client, other)).status_code < 300
        # One second later one more request fits (60 a minute).
        clock.advance(seconds=1)
        assert (await call(client, key)).status_code < 300
        assert (await call(client, key)).status_code == 429


async def test_operator_keys_are_unlimited_by_default_or_have_their_own_rate(
    sqlite_url: str, clock: FrozenClock
) -> None:
    plans = ROUTES["GET /plans"]
    async with serving(sqlite_url, clock, api_rate_limit_per_minute=60, api_rate_limit_burst=2) as (
        client,
        _,
        admin_key,
    ):
        assert {(await plans(client, admin_key)).status_code for _ in range(10)} == {200}
    async with serving(
        sqlite_url,
        clock,
        api_rate_limit_per_minute=60,
        api_rate_limit_burst=2,
        api_rate_limit_operator_per_minute=120,
    ) as (client, _, admin_key):
        statuses = [(await plans(client, admin_key)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]


async def test_zero_disables_the_limit(sqlite_url: str, clock: FrozenClock) -> None:
    async with serving(sqlite_url, clock, api_rate_limit_per_minute=0) as (client, _, admin):
        account = await create_account(client, admin)
        key = await issue_key(client, admin, account["id"])
        statuses = {(await ROUTES["GET /plans"](client, key)).status_code for _ in range(50)}
        assert statuses == {200}


async def test_the_limit_adds_no_database_query(sqlite_url: str, clock: FrozenClock) -> None:
    """A warm /quota/check (key and limits cached) touches no database, limit or not."""
    async with serving(
        sqlite_url, clock, api_rate_limit_per_minute=6000, api_rate_limit_burst=5
    ) as (client, service, admin_key):
        account = await create_account(client, admin_key)
        key = await issue_key(client, admin_key, account["id"])
        check = ROUTES["POST /quota/check"]
        assert (await check(client, key)).status_code == 200  # warms the caches
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        engine = service.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            statuses = [(await check(client, key)).status_code for _ in range(6)]
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert statements == []
