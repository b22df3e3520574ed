"""Request body limits: 413 problems before an oversized body is read, /usage/batch with a
limit of its own, and a realistic 1,000-event batch within the default."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sqlalchemy import func, select

from aihub_billing.config import BillingConfig
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Account
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key, serving

SMALL = {"max_body_bytes": 2048, "max_batch_body_bytes": 16384}


async def accounts(service: BillingService) -> int:
    async with service.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Account))).scalar_one())


async def test_a_declared_length_over_the_limit_is_413_and_writes_nothing(
    sqlite_url: str, clock: FrozenClock
) -> None:
    async with serving(sqlite_url, clock, **SMALL) as (client, service, admin_key):
        before = await accounts(service)
        response = await client.post(
            f"{API}/accounts", json={"name": "x" * 4000}, headers=auth(admin_key)
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-request-id"] == response.json()["request_id"]
        assert response.json()["code"] == "payload_too_large"
        assert response.json()["instance"] == f"{API}/accounts"
        assert await accounts(service) == before
        # At the limit it goes through (and is validated as usual).
        fits = await client.post(f"{API}/accounts", json={"name": "Acme"}, headers=auth(admin_key))
        assert fits.status_code == 201


async def test_usage_batch_has_a_limit_of_its_own(sqlite_url: str, clock: FrozenClock) -> None:
    event = {"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5}
    body = json.dumps({"events": [event] * 80}).encode()  # ~5 KB: over 2 KB, under 16 KB
    assert SMALL["max_body_bytes"] < len(body) < SMALL["max_batch_body_bytes"]
    async with serving(sqlite_url, clock, **SMALL) as (client, _, admin_key):
        account = await create_account(client, admin_key)
        key = await issue_key(client, admin_key, account["id"])
        headers = auth(key, **{"Content-Type": "application/json"})
        batch = await client.post(f"{API}/usage/batch", content=body, headers=headers)
        assert batch.status_code == 200, batch.text
        assert batch.json()["accepted"] == 80
        # The same bytes anywhere else are over the general limit.
        track = await client.post(f"{API}/usage/track", content=body, headers=headers)
        assert track.status_code == 413
        big = json.dumps({"events": [event] * 300}).encode()
        refused = await client.post(f"{API}/usage/batch", content=big, headers=headers)
        assert refused.status_code == 413
        assert refused.json()["code"] == "payload_too_large"


async def test_a_streamed_body_is_cut_off_at_the_limit(sqlite_url: str, clock: FrozenClock) -> None:
    """No Content-Length (chunked): counted as it arrives; the rest is never read."""
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for n in range(100):
            sent.append(n)
            yield b"x" * 512
        yield b'"}'

    async with serving(sqlite_url, clock, **SMALL) as (client, service, admin_key):
        before = await accounts(service)
        for path in ("/accounts", "/usage/batch", "/quota/check"):  # regular and lean routes
            sent.clear()
            response = await client.post(f"{API}{path}", content=chunks(), headers=auth(admin_key))
            assert response.status_code == 413, (path, response.text)
            assert response.json()["code"] == "payload_too_large"
            assert len(sent) < 40  # 2 KB (16 KB for the batch) of 50 KB were read
        assert await accounts(service) == before


async def test_a_rich_batch_of_1000_events_fits_the_default(
    sqlite_url: str, clock: FrozenClock
) -> None:
    event = {
        "event_id": "evt_01KG9YS7G0PSEP1BVY8V8SZA5S",
        "model": "gpt-4o-mini",
        "input_tokens": 12345,
        "output_tokens": 678,
        "cached_input_tokens": 1024,
        "timestamp": "2026-01-31T11:59:00.123456Z",
        "user_id": "user_2f8c1d3e9a7b4c5d",
        "cost_center": "research-platform-team",
        "latency_ms": 1834,
        "metadata": {
            "request_id": "req_01KG9YS7G0PSEP1BVY8V8SZA5S",
            "region": "us-east-1",
            "route": "/v1/chat/completions",
            "client": "python-sdk/1.42.0",
            "conversation_id": "conv_7f3a9c2e1b",
            "tags": ["prod", "batch"],
        },
    }
    events = [{**event, "event_id": f"evt_{n:026d}"} for n in range(1000)]
    body = json.dumps({"events": events}).encode()
    assert 500_000 < len(body) < BillingConfig().max_batch_body_bytes
    async with serving(sqlite_url, clock) as (client, _, admin_key):
        account = await create_account(client, admin_key)
        key = await issue_key(client, admin_key, account["id"])
        response = await client.post(
            f"{API}/usage/batch",
            content=body,
            headers=auth(key, **{"Content-Type": "application/json"}),
        )
        assert response.status_code == 200, response.text[:500]
        assert response.json()["accepted"] == 1000
