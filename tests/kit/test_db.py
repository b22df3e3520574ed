"""The PostgreSQL connection pool: connections opened for a burst are kept for the next."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from aihub_billing.kit.db import Database, open_database
from aihub_billing.service import BillingService
from tests.conftest import make_config

BURST = 15  # above the pool size this project used to keep (10, plus 20 overflow)


async def _backend_pids(db: Database, n: int) -> set[int]:
    """The server processes that n concurrent connections ran on."""

    async def pid() -> int:
        async with db.engine.connect() as conn:
            # The sleep holds each connection until all n are out of the pool at once.
            return int(await conn.scalar(text("SELECT pg_backend_pid() FROM pg_sleep(0.05)")))

    return set(await asyncio.gather(*(pid() for _ in range(n))))


async def test_a_burst_reuses_the_connections_of_the_last(postgres_url: str) -> None:
    db = open_database(postgres_url, pool_size=BURST)
    try:
        first = await _backend_pids(db, BURST)
        second = await _backend_pids(db, BURST)
    finally:
        await db.dispose()
    assert len(first) == BURST
    # With overflow connections (closed on their return) the second burst would open new ones.
    assert second == first


async def test_the_pool_size_is_configured(postgres_url: str) -> None:
    billing = BillingService(make_config(postgres_url, database_pool_size=7))
    try:
        assert billing.db.engine.pool.size() == 7  # type: ignore[attr-defined]
    finally:
        await billing.close()
