"""PostgreSQL unreachable (stopped, restarting, refusing connections): every route answers
503 `service_unavailable` with Retry-After, which clients and gateways retry, and logs one
line, not a 500 with a traceback per request."""

from __future__ import annotations

import socket

import httpx
import pytest

from aihub_billing.config import BillingConfig
from aihub_billing.main import create_app
from aihub_billing.service import BillingService
from tests.api.helpers import API


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once it is closed


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/plans", None),
        ("GET", "/invoices", None),
        ("POST", "/usage/track", {"model": "gpt-4o", "input_tokens": 1}),
        ("POST", "/quota/check", {"model": "gpt-4o"}),
    ],
)
async def test_an_unreachable_database_is_503_with_retry_after(
    method: str, path: str, body: dict[str, object] | None
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/gone"
    config = BillingConfig(
        environment="test", database_url=url, embedded_worker=False, log_level="WARNING"
    )
    billing = BillingService(config)
    app = create_app(billing=billing)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.request(
            method, f"{API}{path}", json=body, headers={"Authorization": "Bearer ahb_x"}
        )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "service_unavailable"
