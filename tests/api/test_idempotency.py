"""Idempotency-Key on creating POSTs: one effect, the first response replayed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Account, IdempotencyRecord, Member
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key


async def count(billing: BillingService, model: type) -> int:
    async with billing.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_retry_with_the_same_key_replays_the_first_response(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    headers = auth(admin_key, **{"Idempotency-Key": "create-acme-1"})
    first = await client.post(f"{API}/accounts", json={"name": "Acme"}, headers=headers)
    second = await client.post(f"{API}/accounts", json={"name": "Acme"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count(billing, Account) == 1


async def test_the_same_json_in_another_key_order_is_the_same_request(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    headers = auth(admin_key, **{"Idempotency-Key": "k", "content-type": "application/json"})
    await client.post(f"{API}/accounts", content=b'{"name":"A","currency":"EUR"}', headers=headers)
    again = await client.post(
        f"{API}/accounts", content=b'{ "currency": "EUR", "name": "A" }', headers=headers
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert await count(billing, Account) == 1


async def test_the_same_key_with_another_body_is_409(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    headers = auth(admin_key, **{"Idempotency-Key": "k1"})
    await client.post(f"{API}/accounts", json={"name": "Acme"}, headers=headers)
    reused = await client.post(f"{API}/accounts", json={"name": "Other"}, headers=headers)
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await count(billing, Account) == 1


async def test_keys_are_scoped_per_account(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    a = await create_account(client, admin_key, name="A")
    b = await create_account(client, admin_key, name="B")
    for account in (a, b):
        owner = await issue_key(client, admin_key, account["id"], "owner")
        response = await client.post(
            f"{API}/accounts/{account['id']}/members",
            json={"email": "dev@x.test"},
            headers=auth(owner, **{"Idempotency-Key": "same-key"}),
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    assert await count(billing, Member) == 2


async def test_another_key_of_the_account_never_reads_a_stored_answer(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, account["id"], "owner")
    member = await issue_key(client, admin_key, account["id"], "member")
    path = f"{API}/accounts/{account['id']}/api-keys"
    made = await client.post(
        path, json={"role": "owner"}, headers=auth(owner, **{"Idempotency-Key": "k-123"})
    )
    assert made.status_code == 201 and made.json()["secret"]
    # A member may not create keys: the same Idempotency-Key is no way around that.
    replayed = await client.post(
        path, json={"role": "owner"}, headers=auth(member, **{"Idempotency-Key": "k-123"})
    )
    assert replayed.status_code == 403, replayed.text
    assert made.json()["secret"] not in replayed.text


async def test_a_new_keys_secret_is_neither_stored_nor_replayed(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    path = f"{API}/accounts/{account['id']}/api-keys"
    headers = auth(admin_key, **{"Idempotency-Key": "key-once"})
    made = await client.post(path, json={"role": "owner"}, headers=headers)
    secret = made.json()["secret"]
    async with billing.db.sessions() as session:
        stored = (await session.execute(select(IdempotencyRecord.response_body))).scalar_one()
    assert secret not in str(stored)
    again = await client.post(path, json={"role": "owner"}, headers=headers)
    assert again.status_code == 409 and again.json()["code"] == "idempotency_key_reused"
    assert made.json()["id"] in again.json()["detail"] and secret not in again.text


async def test_concurrent_duplicates_have_one_effect(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    headers = auth(admin_key, **{"Idempotency-Key": "burst"})
    responses = await asyncio.gather(
        *(client.post(f"{API}/accounts", json={"name": "Burst"}, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("idempotent-replayed" in r.headers for r in responses) == 7
    assert await count(billing, Account) == 1


async def test_a_failed_request_records_nothing_so_it_can_be_retried(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    path = f"{API}/accounts/{account['id']}/members"
    await client.post(path, json={"email": "dev@x.test"}, headers=auth(admin_key))
    failed = await client.post(
        path, json={"email": "dev@x.test"}, headers=auth(admin_key, **{"Idempotency-Key": "m1"})
    )
    assert failed.status_code == 409
    assert await count(billing, IdempotencyRecord) == 0


async def test_a_key_past_its_ttl_runs_again(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, clock: FrozenClock
) -> None:
    headers = auth(admin_key, **{"Idempotency-Key": "old"})
    first = await client.post(f"{API}/accounts", json={"name": "A"}, headers=headers)
    clock.advance(timedelta(hours=billing.config.idempotency_ttl_hours, seconds=1))
    second = await client.post(f"{API}/accounts", json={"name": "A"}, headers=headers)
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert await count(billing, Account) == 2


async def test_malformed_keys_are_refused(client: httpx.AsyncClient, admin_key: str) -> None:
    for key in ("has space", "x" * 256):
        response = await client.post(
            f"{API}/accounts",
            json={"name": "A"},
            headers=auth(admin_key, **{"Idempotency-Key": key}),
        )
        assert response.status_code in (400, 422), key
        assert response.json()["code"] in ("invalid_idempotency_key", "validation_error")


async def test_every_creating_post_accepts_an_idempotency_key(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    # Provider webhooks are exempt: no API key, the signature authenticates, and the
    # provider's event id (stored under a unique constraint) deduplicates redeliveries.
    posts = {
        path: ops["post"]
        for path, ops in spec["paths"].items()
        if "post" in ops and not path.startswith(f"{API}/webhooks/")
    }
    assert posts, "no POST routes found"
    for path, operation in posts.items():
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, path
