"""Engine fixtures: every contract test runs on the in-process engine and on the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.quota.engine import QuotaEngine
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.redis_engine import RedisQuotaEngine
from aihub_billing.service import BillingService, redis_client
from tests.conftest import make_config, wipe


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Deletes this test's keys only (the Redis is shared: never FLUSHDB)."""
    async for key in client.scan_iter(match=f"{prefix}*", count=500):
        await client.delete(key)


@pytest.fixture
async def redis_engine(redis_url: str) -> AsyncIterator[RedisQuotaEngine]:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    client = redis_client(redis_url)
    engine = RedisQuotaEngine(client, prefix=prefix, owns_client=True)
    try:
        yield engine
    finally:
        await delete_prefix(client, prefix)
        await engine.close()


@pytest.fixture(params=["memory", "redis"])
def engine(request: pytest.FixtureRequest) -> QuotaEngine:
    if request.param == "memory":
        return MemoryQuotaEngine()
    engine: QuotaEngine = request.getfixturevalue("redis_engine")
    return engine


@pytest.fixture(params=["memory", "redis"])
async def billing(
    request: pytest.FixtureRequest,
    database_url: str,
    clock: FrozenClock,
    config_overrides: dict[str, object],
) -> AsyncIterator[BillingService]:
    """The façade with in-process counters, and again with the Redis engine (own prefix)."""
    overrides: dict[str, object] = dict(config_overrides)
    if request.param == "redis":
        overrides |= {
            "redis_url": request.getfixturevalue("redis_url"),
            "quota_key_prefix": f"t{uuid.uuid4().hex[:12]}:",
        }
    service = BillingService(make_config(database_url, **overrides), clock=clock)
    await wipe(service)
    try:
        yield service
    finally:
        await wipe(service)
        if service.redis is not None:
            await delete_prefix(service.redis, service.config.quota_key_prefix)
        await service.close()


async def lose_counters(billing: BillingService) -> None:
    """What a Redis flush or restart does to the counters (of this test only)."""
    engine = billing.quota.engine
    if isinstance(engine, MemoryQuotaEngine):
        engine.forget()
        return
    assert billing.redis is not None
    await delete_prefix(billing.redis, billing.config.quota_key_prefix)
