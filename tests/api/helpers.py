"""Small helpers shared by the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.main import create_app
from aihub_billing.service import BillingService
from tests.conftest import make_config, wipe
from tests.quota.conftest import delete_prefix

API = "/api/v1/billing"


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


async def create_account(client: httpx.AsyncClient, admin_key: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        f"{API}/accounts", json={"name": "Acme", **body}, headers=auth(admin_key)
    )
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


async def issue_key(
    client: httpx.AsyncClient, key: str, account_id: str, role: str = "owner", **body: Any
) -> str:
    response = await client.post(
        f"{API}/accounts/{account_id}/api-keys", json={"role": role, **body}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


@asynccontextmanager
async def serving(
    database_url: str, clock: FrozenClock, **config: object
) -> AsyncIterator[tuple[httpx.AsyncClient, BillingService, str]]:
    """An app on its own config; yields the client, the service and an operator key."""
    service = BillingService(make_config(database_url, **config), clock=clock)
    await wipe(service)
    try:
        admin_key = (await service.bootstrap()).admin_secret
        assert admin_key is not None
        app = create_app(billing=service)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield client, service, admin_key
    finally:
        await wipe(service)
        if service.redis is not None:
            await delete_prefix(service.redis, service.config.quota_key_prefix)
        await service.close()
