"""With log_json every line a request writes is one JSON object with its request id: an access
line per request (route template, never the raw path), the app's own lines, an unexpected
error's traceback; secrets and card numbers never appear."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import structlog

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.api.test_health import serving
from tests.conftest import make_config

ADMIN_KEY = "ahb_bootstrap_key_for_the_access_log_test_0000"
SECRETS = (
    ADMIN_KEY,
    "ahb_not_a_real_key_but_a_secret_000000",
    "sk_live_51SecretStripeKey",
    "whsec_SecretWebhookSigningKey",
    "pi_3Mx_secret_ClientSecret",
    "4242424242424242",
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
async def service(sqlite_url: str, clock: FrozenClock) -> BillingService:
    billing = BillingService(
        make_config(sqlite_url, log_json=True, admin_key=ADMIN_KEY), clock=clock
    )
    await billing.bootstrap()
    return billing


@pytest.fixture
async def client(service: BillingService) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(service) as client:  # closes the service
        yield client


def lines(err: str) -> list[dict[str, Any]]:
    """Every line parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


async def test_each_request_writes_one_access_line_with_its_request_id(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    plan = await client.get(f"{API}/plans/pro", headers=auth(ADMIN_KEY))
    missing = await client.get(f"{API}/plans/gold", headers={"X-Request-ID": "caller-id-1"})
    health = await client.get("/healthz")  # probes are logged at debug only
    logged = lines(capsys.readouterr().err)
    access = [line for line in logged if line["event"] == "http.request"]
    assert [(a["method"], a["route"], a["status"], a["request_id"]) for a in access] == [
        ("GET", f"{API}/plans/{{code}}", 200, plan.headers["x-request-id"]),
        ("GET", f"{API}/plans/{{code}}", 401, "caller-id-1"),
    ]
    assert all(isinstance(a["duration_ms"], float) and a["level"] == "info" for a in access)
    assert health.status_code == 200 and missing.status_code == 401
    # Every line a request writes names the request.
    assert all(line.get("request_id") for line in logged), logged


async def test_the_access_line_can_be_left_to_a_proxy(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(sqlite_url, log_json=True, access_log=False)
    async with serving(BillingService(config)) as client:
        capsys.readouterr()
        assert (await client.get(f"{API}/plans")).status_code == 401
        assert "http.request" not in capsys.readouterr().err
        assert 'route="/api/v1/billing/plans"' in (await client.get("/metrics")).text


async def test_secrets_sent_with_requests_never_reach_the_logs(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    await client.get(f"{API}/plans", headers=auth(SECRETS[1]))
    await client.get(
        f"{API}/payments/4242424242424242",
        params={"client_secret": SECRETS[4], "key": SECRETS[2]},
        headers={**auth(ADMIN_KEY), "Stripe-Signature": SECRETS[3]},
    )
    await client.post(
        f"{API}/accounts",
        json={"name": f"Acme {SECRETS[2]} {SECRETS[5]}", "email": "x"},
        headers=auth(ADMIN_KEY),
    )
    err = capsys.readouterr().err
    assert len([line for line in lines(err) if line["event"] == "http.request"]) == 3
    for secret in SECRETS:
        assert secret not in err, secret


async def test_an_unexpected_error_is_one_masked_json_line_with_its_request_id(
    client: httpx.AsyncClient, service: BillingService, capsys: pytest.CaptureFixture[str]
) -> None:
    service.clock = _ExplodingClock()  # stands in for any bug inside a request
    capsys.readouterr()
    response = await client.post(
        f"{API}/accounts", json={"name": "x"}, headers=auth(ADMIN_KEY, **{"X-Request-ID": "r-500"})
    )
    assert response.status_code == 500
    logged = lines(capsys.readouterr().err)
    (error,) = [line for line in logged if line["event"] == "request.unhandled"]
    assert error["request_id"] == "r-500" and error["level"] == "error"
    assert "RuntimeError" in error["exception"] and "***" in error["exception"]
    assert SECRETS[2] not in json.dumps(logged)
    (access,) = [line for line in logged if line["event"] == "http.request"]
    assert (access["status"], access["request_id"]) == (500, "r-500")


def test_the_servers_lines_share_the_format_and_its_copy_of_an_error_is_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aihub_billing.kit.logs import configure_logging

    configure_logging("INFO", json=True)
    server = logging.getLogger("uvicorn.error")
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        server.error("Exception in ASGI application\n", exc_info=exc)
    server.warning("Invalid HTTP request received: %s", f"Bearer {SECRETS[1]}")
    logged = lines(capsys.readouterr().err)
    assert [(line["logger"], line["level"], line["event"]) for line in logged] == [
        ("uvicorn.error", "warning", "Invalid HTTP request received: Bearer ***")
    ]


class _ExplodingClock:
    def now(self) -> datetime:
        raise RuntimeError(f"secret-internals {SECRETS[2]}")


async def test_a_client_gone_before_its_body_arrived_is_an_access_line_not_an_error(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """wrk stopping, or a caller's timeout: not a 500 with a traceback at error level."""
    app = client._transport.app  # type: ignore[attr-defined]
    messages: list[dict[str, Any]] = [{"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = f"{API}/quota/check"  # reads its body itself (quota/endpoints.py LeanCheckRoute)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {ADMIN_KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    capsys.readouterr()
    await app(scope, receive, send)
    logged = lines(capsys.readouterr().err)
    assert [line for line in logged if line["level"] == "error"] == []
    (access,) = [line for line in logged if line["event"] == "http.request"]
    assert (access["status"], access["level"]) == (499, "info")
