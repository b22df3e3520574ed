"""The seed's caches through the API, on SQLite with the in-process cache and on PostgreSQL
with Redis: a hit is served from the cache, and every write that changes a cached read is
seen by the next read (in another process too)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.main import create_app
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.conftest import make_config, wipe
from tests.quota.conftest import delete_prefix
from tests.subscriptions.helpers import ok, owner, subscribe

CALL = {"model": "gpt-3.5-turbo", "input_tokens": 100, "output_tokens": 50}


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, database_url: str, clock: FrozenClock
) -> AsyncIterator[tuple[BillingService, httpx.AsyncClient, httpx.AsyncClient]]:
    """One billing database served by two processes (two services, two apps); on
    PostgreSQL they share a Redis cache, on SQLite each has its own (one process there)."""
    url = database_url
    overrides: dict[str, object] = {}
    if url.startswith("postgresql"):
        overrides = {
            "redis_url": request.getfixturevalue("redis_url"),
            "quota_key_prefix": f"t{uuid.uuid4().hex[:12]}:",
        }
    services = [BillingService(make_config(url, **overrides), clock=clock) for _ in range(2)]
    await wipe(services[0])
    apps = [create_app(billing=s) for s in services]
    try:
        async with (
            apps[0].router.lifespan_context(apps[0]),
            apps[1].router.lifespan_context(apps[1]),
        ):
            clients = [
                httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
                for a in apps
            ]
            yield services[0], clients[0], clients[1]
            for c in clients:
                await c.aclose()
    finally:
        await wipe(services[0])
        if services[0].redis is not None:
            await delete_prefix(services[0].redis, services[0].config.quota_key_prefix)
        for s in services:
            await s.close()


async def _get(client: httpx.AsyncClient, path: str, key: str, **params: str) -> Any:
    response = await client.get(f"{API}{path}", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def test_plans_are_served_from_the_cache_until_a_plan_changes(
    stack: tuple[BillingService, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    billing, one, two = stack
    admin = (await billing.bootstrap()).admin_secret
    assert admin is not None
    before = await _get(one, "/plans/pro", admin)
    # Behind the service's back (no write through it): the cached answer stays.
    async with billing.db.engine.begin() as conn:
        await conn.execute(text("UPDATE plans SET name = 'Sneaky' WHERE code = 'pro'"))
    assert (await _get(one, "/plans/pro", admin))["name"] == before["name"]
    # A write through the API: both processes see it at once.
    patched = await one.patch(f"{API}/plans/pro", json={"name": "Pro 2"}, headers=auth(admin))
    assert patched.status_code == 200, patched.text
    for client in (one, two) if billing.redis is not None else (one,):
        assert (await _get(client, "/plans/pro", admin))["name"] == "Pro 2"
        assert {p["code"]: p["name"] for p in await _get(client, "/plans", admin)}["pro"] == (
            "Pro 2"
        )


async def test_statistics_and_subscription_follow_every_write(
    stack: tuple[BillingService, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    billing, one, two = stack
    admin = (await billing.bootstrap()).admin_secret
    assert admin is not None
    _, key = await owner(one, admin)
    readers = (one, two) if billing.redis is not None else (one,)
    for client in readers:
        assert (await _get(client, "/usage/stats", key, group_by="model"))["rows"] == []
        assert (await _get(client, "/subscriptions/current", key))["plan"]["code"] == "free"
    # Usage recorded through one process: the statistics of both count it.
    for n, path in enumerate(("/usage/track", "/usage/batch")):
        body: Any = {**CALL, "event_id": f"t{n}"}
        if path.endswith("batch"):
            body = {"events": [{**CALL, "event_id": f"b{i}"} for i in range(3)]}
        response = await one.post(f"{API}{path}", json=body, headers=auth(key))
        assert response.status_code in (200, 201), response.text
        for client in readers:
            stats = await _get(client, "/usage/stats", key, group_by="model")
            assert stats["rows"][0]["requests"] == 1 + 3 * n
    await subscribe(one, key)
    for client in readers:
        assert (await _get(client, "/subscriptions/current", key))["plan"]["code"] == "pro"


async def test_a_test_clock_advance_moves_the_cached_period(
    stack: tuple[BillingService, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    billing, client, _ = stack
    admin = (await billing.bootstrap()).admin_secret
    assert admin is not None
    clock = await ok(client, admin, "/test-clocks", {"frozen_time": "2026-01-10T00:00:00Z"})
    account, key = await owner(client, admin)
    await ok(client, admin, f"/test-clocks/{clock['id']}/accounts", {"account_id": account})
    first = await _get(client, "/subscriptions/current", key)
    await ok(client, admin, f"/test-clocks/{clock['id']}/advance",
             {"frozen_time": "2026-03-15T00:00:00Z"})  # fmt: skip
    later = await _get(client, "/subscriptions/current", key)
    assert later["period_start"] > first["period_end"]  # a later free-plan month


async def test_a_write_whose_invalidation_failed_is_not_served_stale_once_redis_is_back() -> None:
    """Redis unreachable at a write's commit (its data kept, as a restart with persistence or a
    network blip keeps it): the generation moves on as soon as Redis answers again, before
    anything is read from it."""
    import redis.asyncio as aioredis

    from aihub_billing.kit.cache import RedisCache
    from tests.quota.test_redis_outage import REDIS_SERVER, OwnRedis

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(persistent=True)
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    cache = RedisCache(client)
    try:
        generation, _ = await cache.lookup("acct:a", "plan")
        await cache.put("acct:a", "plan", {"code": "pro"}, ttl=3600, generation=generation)
        server.stop()
        with pytest.raises(Exception):  # noqa: B017 - the write stands; the caller logs this
            await cache.invalidate(["acct:a"])  # the account moved to another plan
        server.start()
        assert await cache.lookup("acct:a", "plan") == (generation + 1, None)
    finally:
        await client.aclose()
        server.stop()
