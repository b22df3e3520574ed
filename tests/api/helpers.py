"""Small helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

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
