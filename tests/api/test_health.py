"""Liveness, readiness, OpenAPI, request ids and problem details for unexpected errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.main import create_app
from aihub_billing.service import BillingService
from tests.conftest import make_config, wipe


@asynccontextmanager
async def serving(billing: BillingService) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app around `billing`, which is closed afterwards."""
    app = create_app(billing=billing)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield client
    finally:
        await billing.close()


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok"}}


async def test_readyz_checks_redis_when_configured(database_url: str, redis_url: str) -> None:
    async with serving(BillingService(make_config(database_url, redis_url=redis_url))) as client:
        ready = await client.get("/readyz")
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_readyz_reports_redis_down_without_taking_the_instance_out(
    sqlite_url: str,
) -> None:
    # Port 9 (discard) has no Redis: readiness says so, and stays 200 (every instance shares
    # Redis: a load balancer gating on it would drop them all, usage and invoices included).
    config = make_config(sqlite_url, redis_url="redis://127.0.0.1:9/0")
    async with serving(BillingService(config)) as client:
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["redis"].startswith("error")


async def test_readyz_checks_the_replica(sqlite_url: str) -> None:
    config = make_config(sqlite_url, database_replica_url="sqlite+aiosqlite:////nonexistent/x.db")
    async with serving(BillingService(config)) as client:
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
        assert ready.json()["checks"]["database_replica"].startswith("error")


async def test_readyz_is_503_when_the_database_is_down() -> None:
    config = make_config("sqlite+aiosqlite:////nonexistent/dir/x.db")
    async with serving(BillingService(config)) as client:
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")
        assert ready.json()["checks"]["database"].startswith("error")


async def test_openapi_lists_the_api_with_stable_operation_ids(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = {
        op["operationId"]
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {
        "plans-list_plans",
        "plans-get_plan",
        "plans-create_plan",
        "accounts-create_account",
        "accounts-get_account",
        "accounts-create_api_key",
        "audit-list_audit_log",
    } <= operations
    assert "/api/v1/billing/accounts/{account_id}/api-keys" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"].startswith("req_")


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/billing/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
    wrong = await client.delete("/api/v1/billing/plans")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    sqlite_url: str, clock: FrozenClock
) -> None:
    key = "ahb_bootstrap_key_for_the_500_test_000000000000"
    billing = BillingService(make_config(sqlite_url, admin_key=key), clock=clock)
    await billing.bootstrap()
    # A clock that explodes stands in for any bug inside a request.
    billing.clock = _ExplodingClock()
    async with serving(billing) as client:
        response = await client.post(
            "/api/v1/billing/accounts",
            json={"name": "x"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 500
        body = response.json()
        assert body["code"] == "internal_error"
        assert "secret-internals" not in response.text
        assert body["request_id"] == response.headers["x-request-id"]


class _ExplodingClock:
    def now(self) -> datetime:
        raise RuntimeError("secret-internals")


async def test_a_configured_admin_key_retires_the_bootstrap_keys_before_it(
    database_url: str, clock: FrozenClock
) -> None:
    # The first start's random key, then AIHUB_BILLING_ADMIN_KEY set, then rotated: each
    # earlier bootstrap key kept working, so a leaked one could not be rotated away.
    first = BillingService(make_config(database_url), clock=clock)
    await wipe(first)
    random_secret = (await first.bootstrap()).admin_secret
    assert random_secret is not None
    await first.close()
    old = "ahb_configured_admin_key_number_one_000000000000"
    new = "ahb_configured_admin_key_number_two_000000000000"
    named = None
    for secret in (old, new):
        billing = BillingService(make_config(database_url, admin_key=secret), clock=clock)
        await billing.bootstrap()
        if named is None:  # an admin key issued by name (the CLI) is the operator's own
            _, named = await billing.issue_api_key(account_id=None, role="admin", name="ops")
        await billing.close()
    billing = BillingService(make_config(database_url, admin_key=new), clock=clock)
    try:
        async with serving(billing) as client:
            for secret, status in ((random_secret, 401), (old, 401), (new, 200), (named, 200)):
                plans = await client.get(
                    "/api/v1/billing/plans", headers={"Authorization": f"Bearer {secret}"}
                )
                assert plans.status_code == status, (secret, plans.text)
    finally:
        await wipe(billing)
        await billing.close()
