"""The read caches' contract, in process and on the real Redis: generations make a write
invisible to no reader, TTLs expire, a stale load is never stored where it would be read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from aihub_billing.kit.cache import Cache, MemoryCache, RedisCache, account_scope
from aihub_billing.service import redis_client
from tests.quota.conftest import delete_prefix


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache(max_entries=3)
        return
    client = redis_client(request.getfixturevalue("redis_url"))
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    try:
        yield RedisCache(client, prefix=prefix)
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


async def test_a_value_is_read_until_its_scope_changes(cache: Cache) -> None:
    scope, other = account_scope("acct_a"), account_scope("acct_b")
    generation, value = await cache.lookup(scope, "stats")
    assert value is None
    await cache.put(scope, "stats", {"requests": 3}, 60, generation)
    await cache.put(other, "stats", {"requests": 9}, 60, (await cache.lookup(other, "stats"))[0])
    assert (await cache.lookup(scope, "stats"))[1] == {"requests": 3}
    await cache.invalidate([scope])
    new_generation, value = await cache.lookup(scope, "stats")
    assert value is None and new_generation == generation + 1
    assert (await cache.lookup(other, "stats"))[1] == {"requests": 9}  # its own scope only


async def test_a_load_from_before_a_write_is_never_read(cache: Cache) -> None:
    scope = account_scope("acct_a")
    generation, _ = await cache.lookup(scope, "sub")  # a reader starts, loads the old state
    await cache.invalidate([scope])  # meanwhile a write commits
    await cache.put(scope, "sub", {"plan": "old"}, 60, generation)  # the reader stores late
    assert (await cache.lookup(scope, "sub"))[1] is None


async def test_values_expire(cache: Cache) -> None:
    scope = account_scope("acct_a")
    generation, _ = await cache.lookup(scope, "plans")
    await cache.put(scope, "plans", [1, 2], 0.05, generation)
    assert (await cache.lookup(scope, "plans"))[1] == [1, 2]
    await asyncio.sleep(0.1)
    assert (await cache.lookup(scope, "plans"))[1] is None


async def test_what_a_caller_gets_is_its_own_copy(cache: Cache) -> None:
    scope = account_scope("acct_a")
    generation, _ = await cache.lookup(scope, "x")
    await cache.put(scope, "x", {"rows": [1]}, 60, generation)
    got = (await cache.lookup(scope, "x"))[1]
    got["rows"].append(2)
    assert (await cache.lookup(scope, "x"))[1] == {"rows": [1]}


async def test_the_process_cache_is_bounded() -> None:
    cache = MemoryCache(max_entries=2)
    for name in ("a", "b", "c"):
        await cache.put("s", name, name, 60, 0)
    assert [(await cache.lookup("s", n))[1] for n in ("a", "b", "c")] == [None, "b", "c"]
