"""Where the real PostgreSQL and Redis are, and whether the suite may skip them."""

from __future__ import annotations

import asyncio
import os

import pytest

PG_ADMIN_URL = os.environ.get(
    "AIHUB_BILLING_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("AIHUB_BILLING_TEST_REDIS", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


async def _pg_up() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _redis_up() -> str | None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


PG_ERROR = asyncio.run(_pg_up())
REDIS_ERROR = asyncio.run(_redis_up())


def require(service: str, error: str | None) -> None:
    """Skips when the server is down, except under CI=true where that is a failure."""
    if error is None:
        return
    message = f"{service} unreachable ({error}); its half of the suite did not run"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
    pytest.skip(message)
