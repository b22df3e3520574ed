"""Helpers for the subscription tests: an account with an owner key, requests, lookups."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import API, auth, create_account, issue_key

SUBS = f"{API}/subscriptions"
SEED_BODY = {
    "plan_type": "pro",
    "billing_cycle": "monthly",
    "payment_provider": "stripe",
    "payment_method_id": "pm_123",
}


async def owner(client: httpx.AsyncClient, admin_key: str, **account: Any) -> tuple[str, str]:
    """A new account and an owner key for it."""
    created = await create_account(client, admin_key, **account)
    return created["id"], await issue_key(client, admin_key, created["id"], "owner")


async def post(client: httpx.AsyncClient, key: str, path: str, body: Any = None) -> httpx.Response:
    return await client.post(f"{API}{path}", json=body, headers=auth(key))


async def ok(client: httpx.AsyncClient, key: str, path: str, body: Any = None) -> dict[str, Any]:
    response = await post(client, key, path, body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def subscribe(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    return await ok(client, key, "/subscriptions", {**SEED_BODY, **body})


def minor(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(i["kind"], i["amount_minor"]) for i in items]


async def history(client: httpx.AsyncClient, key: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{SUBS}/history", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def items_of(client: httpx.AsyncClient, key: str, sub_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{SUBS}/{sub_id}/invoice-items", headers=auth(key))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def current(client: httpx.AsyncClient, key: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"{SUBS}/current", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def add_plan(client: httpx.AsyncClient, admin_key: str, **body: Any) -> dict[str, Any]:
    return await ok(client, admin_key, "/plans", body)


async def drain(billing: Any) -> int:
    """Runs the due jobs; returns how many subscription jobs (renewals, trial ends) ran, not
    counting the invoice jobs they enqueue (tests/invoices covers those)."""
    from sqlalchemy import func, select

    from aihub_billing.models import Job

    async def done() -> int:
        async with billing.db.sessions() as session:
            query = select(func.count()).where(
                Job.name.like("subscriptions.%"), Job.status == "succeeded"
            )
            return int((await session.execute(query)).scalar_one())

    before = await done()
    await billing.worker().drain()
    return await done() - before
