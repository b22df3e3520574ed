"""A Redis of our own: flushed, script cache emptied, stopped and restarted.

Counters come back from the usage source (the database) and an outage follows
quota_fail_mode, counted in the metrics.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.kit.clock import FrozenClock, monotonic
from aihub_billing.kit.periods import Period
from aihub_billing.main import create_app
from aihub_billing.quota.errors import QuotaUnavailable
from aihub_billing.quota.schemas import QuotaCheckResult
from aihub_billing.quota.service import QuotaManager, UsageTotals
from aihub_billing.service import BillingService
from tests.conftest import make_config, wipe

REDIS_SERVER = shutil.which("redis-server")


class OwnRedis:
    """A throwaway redis-server; without persistence (the default) a stop loses every key,
    with it (an append-only file) a restart keeps them."""

    def __init__(self, persistent: bool = False) -> None:
        self.persistent = persistent
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="aihub-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                if monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


class StoredUsage:
    """Stands in for the usage table: 10 calls and 1,000 tokens are stored this period."""

    async def used(self, account_id: str, period: Period) -> UsageTotals:
        return UsageTotals(calls=10, tokens=1000)


@pytest.fixture
async def billing_on_own_redis(
    own_redis: OwnRedis, sqlite_url: str, clock: FrozenClock
) -> AsyncIterator[tuple[BillingService, str]]:
    config = make_config(sqlite_url, redis_url=own_redis.url, quota_fail_mode="fail_closed")
    billing = BillingService(config, clock=clock)
    await wipe(billing)
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Acme"))
    billing.quota.usage_source = StoredUsage()
    try:
        yield billing, account.id
    finally:
        await wipe(billing)
        await billing.close()


async def _check(billing: BillingService, quota: QuotaManager, account_id: str) -> QuotaCheckResult:
    async with billing.transaction() as session:
        return await quota.check(
            session, billing.context(), account_id=account_id, model="m", estimated_tokens=5
        )


def _errors(mode: str) -> float:
    value = REGISTRY.get_sample_value(
        "aihub_billing_quota_backend_errors_total", {"fail_mode": mode}
    )
    return value or 0.0


async def test_counters_are_rebuilt_and_outages_follow_the_fail_mode(
    own_redis: OwnRedis, billing_on_own_redis: tuple[BillingService, str]
) -> None:
    billing, account_id = billing_on_own_redis
    quota = billing.quota
    assert billing.redis is not None
    # First check: no counters yet, rebuilt from the stored 10 calls, then this one.
    assert (await _check(billing, quota, account_id)).remaining_calls == 89

    await billing.redis.flushall()  # our own server: loses every counter
    rebuilt = await _check(billing, quota, account_id)
    assert (rebuilt.remaining_calls, rebuilt.remaining_tokens) == (89, 10_000 - 1000 - 5)

    await billing.redis.script_flush()  # NOSCRIPT: loaded again, transparently
    assert (await _check(billing, quota, account_id)).remaining_calls == 88
    await billing.redis.script_flush()  # and inside a pipelined batch of checks
    batch = await asyncio.gather(*(_check(billing, quota, account_id) for _ in range(5)))
    assert sorted(r.remaining_calls for r in batch) == [83, 84, 85, 86, 87]

    own_redis.stop()
    closed_before = _errors("fail_closed")
    with pytest.raises(QuotaUnavailable):
        await _check(billing, quota, account_id)
    assert _errors("fail_closed") == closed_before + 1

    fail_open = QuotaManager(quota.engine, fail_mode="fail_open", usage_source=StoredUsage())
    open_before = _errors("fail_open")
    degraded = await _check(billing, fail_open, account_id)
    assert degraded.degraded and degraded.remaining_calls is None
    assert _errors("fail_open") == open_before + 1

    # Over HTTP: 503 problem with Retry-After when closed.
    key = (await billing.issue_api_key(account_id=account_id, role="owner"))[1]
    app = create_app(billing=billing)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/api/v1/billing/quota/check",
                json={"model": "m"},
                headers={"Authorization": f"Bearer {key}"},
            )
    assert response.status_code == 503
    assert response.json()["code"] == "quota_unavailable"
    assert response.headers["Retry-After"] == "1"

    own_redis.start()  # empty again: rebuilt on the next check
    assert (await _check(billing, quota, account_id)).remaining_calls == 89
