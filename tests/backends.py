"""Where the real PostgreSQL and Redis are, and whether the suite may skip them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = os.environ.get(
    "AIHUB_BILLING_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _with_read_timeout(url: str, seconds: int = 30) -> str:
    """The suite's process builds an app per test, and the cyclic GC collects their garbage
    in full passes of millions of objects that held the event loop for up to 6 s (measured),
    past redis-py's default 5 s read timeout: a reply that had arrived during the pause
    failed the test (a Redis engine test, about one full run in three)."""
    if "socket_timeout=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}socket_timeout={seconds}"


REDIS_URL = _with_read_timeout(
    os.environ.get("AIHUB_BILLING_TEST_REDIS", "redis://127.0.0.1:6379/15")
)
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


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own (asyncpg URL), dropped afterwards."""
    from sqlalchemy.engine import make_url

    require("PostgreSQL", PG_ERROR)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
