"""Exactness under concurrency: two OS processes on Redis, 2,000 asyncio tasks in process."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.ids import new_id
from aihub_billing.quota.engine import CheckRequest, Limits, QuotaEngine
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.redis_engine import RedisQuotaEngine
from aihub_billing.service import redis_client
from tests.quota.conftest import delete_prefix

PERIOD = "2026-01"
PERIOD_END = datetime(2026, 2, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def _request(account_id: str, tokens: int = 0) -> CheckRequest:
    return CheckRequest(account_id, PERIOD, PERIOD_END, NOW, new_id("rsv", NOW), tokens)


async def _burst(engine: QuotaEngine, account_id: str, n: int, limits: Limits) -> int:
    outcomes = await asyncio.gather(*(engine.check(_request(account_id), limits) for _ in range(n)))
    return sum(o.admitted for o in outcomes)


def _process_burst(redis_url: str, prefix: str, account_id: str, n: int, barrier: Any) -> int:
    """One OS process: its own event loop, connection pool and script cache."""

    async def run() -> int:
        client = redis_client(redis_url, max_connections=50)
        engine = RedisQuotaEngine(client, prefix=prefix, owns_client=True)
        try:
            await client.ping()
            barrier.wait(timeout=60)  # both processes fire together
            return await _burst(engine, account_id, n, Limits(calls=100))
        finally:
            await engine.close()

    return asyncio.run(run())


async def test_two_processes_admit_exactly_the_remaining_calls_on_redis(
    redis_url: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    account_id = "acct_race"
    client = aioredis.from_url(redis_url)
    engine = RedisQuotaEngine(client, prefix=prefix)
    try:
        await engine.load(account_id, PERIOD, PERIOD_END, NOW, calls=0, tokens=0)
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
            barrier = manager.Barrier(2)
            loop = asyncio.get_running_loop()
            admitted = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, _process_burst, redis_url, prefix, account_id, 1000, barrier
                    )
                    for _ in range(2)
                )
            )
        assert sum(admitted) == 100, admitted
        status = await engine.status(account_id, PERIOD, NOW)
        assert (status.calls_used, status.concurrent) == (100, 100)
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


async def test_in_process_engine_admits_exactly_the_remaining_calls() -> None:
    engine = MemoryQuotaEngine()
    await engine.load("acct_race", PERIOD, PERIOD_END, NOW, calls=900, tokens=0)
    assert await _burst(engine, "acct_race", 2000, Limits(calls=1000)) == 100
    assert (await engine.status("acct_race", PERIOD, NOW)).calls_used == 1000


@pytest.mark.parametrize("seed", [1, 2])
async def test_tpm_with_reservations_never_exceeds_the_limit(
    engine: QuotaEngine, seed: int
) -> None:
    rng = random.Random(seed)
    clock = FrozenClock(NOW)
    account_id = new_id("acct", NOW)
    limits = Limits(tpm=5_000)
    await engine.load(account_id, PERIOD, PERIOD_END, NOW, calls=0, tokens=0)
    for _ in range(3):  # three rounds within the same minute window
        requests = [
            CheckRequest(
                account_id,
                PERIOD,
                PERIOD_END,
                clock.now(),
                new_id("rsv", clock.now()),
                rng.randint(1, 200),
            )
            for _ in range(400)
        ]
        outcomes = await asyncio.gather(*(engine.check(r, limits) for r in requests))
        admitted = [r for r, o in zip(requests, outcomes, strict=True) if o.admitted]
        assert all(o.tpm_used <= 5_000 for o in outcomes)
        status = await engine.status(account_id, PERIOD, clock.now())
        assert status.tpm_used <= 5_000
        # Settle at or below the estimate, concurrently: room comes back, never more.
        await asyncio.gather(
            *(
                engine.commit(
                    account_id,
                    PERIOD,
                    r.reservation_id,
                    rng.randint(0, r.estimated_tokens),
                    clock.now(),
                )
                for r in admitted
            )
        )
        assert (await engine.status(account_id, PERIOD, clock.now())).tpm_used <= 5_000
        clock.advance(seconds=10)
