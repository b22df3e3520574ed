"""PATCH /accounts/{id}: partial changes, the create rules, who may change what, the audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from tests.api.helpers import API, auth, create_account, issue_key
from tests.invoices.helpers import advance, clocked_account, invoice, list_invoices, metered_plan
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok


async def patch(client: httpx.AsyncClient, key: str, account_id: str, body: Any) -> httpx.Response:
    return await client.patch(f"{API}/accounts/{account_id}", json=body, headers=auth(key))


async def changed(
    client: httpx.AsyncClient, key: str, account_id: str, body: Any
) -> dict[str, Any]:
    response = await patch(client, key, account_id, body)
    assert response.status_code == 200, response.text
    account: dict[str, Any] = response.json()
    return account


async def audit_entries(client: httpx.AsyncClient, admin_key: str) -> list[dict[str, Any]]:
    log = await client.get(
        f"{API}/audit-log", params={"action": "account.updated"}, headers=auth(admin_key)
    )
    assert log.status_code == 200, log.text
    entries: list[dict[str, Any]] = log.json()["items"]
    return entries


async def test_the_operator_changes_only_the_fields_sent(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await create_account(client, admin_key, email="ops@acme.test", currency="EUR")
    account_id = created["id"]
    renamed = await changed(client, admin_key, account_id, {"name": "  Acme SE "})
    assert renamed == {**created, "name": "Acme SE"}
    taxed = await changed(client, admin_key, account_id, {"tax_rate": "0.190000"})
    assert taxed == {**renamed, "tax_rate": "0.19"}
    cleared = await changed(client, admin_key, account_id, {"email": None, "tax_rate": None})
    assert cleared == {**renamed, "email": None}
    exempt = await changed(client, admin_key, account_id, {"tax_exempt": True})
    assert exempt == {**cleared, "tax_exempt": True}
    fetched = await client.get(f"{API}/accounts/{account_id}", headers=auth(admin_key))
    assert fetched.json() == exempt


async def test_a_change_is_audited_with_before_and_after(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await create_account(client, admin_key, tax_rate="0.07")
    response = await client.patch(
        f"{API}/accounts/{created['id']}",
        json={"email": "billing@acme.test", "tax_rate": "0.2"},
        headers=auth(admin_key, **{"X-Request-ID": "req-account-update"}),
    )
    assert response.status_code == 200, response.text
    [entry] = await audit_entries(client, admin_key)
    assert (entry["object_id"], entry["account_id"]) == (created["id"], created["id"])
    assert entry["request_id"] == "req-account-update" and entry["actor_role"] == "admin"
    assert entry["before"] == created
    assert entry["after"] == {**created, "email": "billing@acme.test", "tax_rate": "0.2"}


async def test_nothing_to_change_writes_nothing(client: httpx.AsyncClient, admin_key: str) -> None:
    created = await create_account(client, admin_key, name="Acme", tax_rate="0.1")
    for body in ({}, {"name": "Acme"}, {"tax_rate": "0.100"}, {"tax_exempt": False}):
        assert await changed(client, admin_key, created["id"], body) == created, body
    assert await audit_entries(client, admin_key) == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "   "}, ["body", "name"]),
        ({"name": ""}, ["body", "name"]),
        ({"name": None}, ["body", "name"]),
        ({"name": "x" * 201}, ["body", "name"]),
        ({"email": "not-an-email"}, ["body", "email"]),
        ({"tax_rate": "1"}, ["body", "tax_rate"]),
        ({"tax_rate": "-0.01"}, ["body", "tax_rate"]),
        ({"tax_rate": "0.0000001"}, ["body", "tax_rate"]),
        ({"tax_exempt": None}, ["body", "tax_exempt"]),
        ({"tax_exempt": 1}, ["body", "tax_exempt"]),
        ({"tax_exempt": True, "tax_rate": "0.07"}, ["body"]),
        ({"currency": "EUR"}, ["body"]),
        ({"status": "closed"}, ["body", "status"]),
    ],
)
async def test_a_change_is_validated_as_a_creation_is(
    client: httpx.AsyncClient, admin_key: str, body: dict[str, Any], loc: list[str]
) -> None:
    created = await create_account(client, admin_key)
    response = await patch(client, admin_key, created["id"], body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["loc"] == loc, error
    if "currency" in body:
        assert "currency cannot change" in error["msg"], error
    fetched = await client.get(f"{API}/accounts/{created['id']}", headers=auth(admin_key))
    assert fetched.json() == created


async def test_a_negative_zero_rate_is_stored_as_0(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await create_account(client, admin_key)
    assert (await changed(client, admin_key, created["id"], {"tax_rate": "-0"}))["tax_rate"] == "0"


async def test_an_exemption_and_a_rate_cannot_meet_on_the_account(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """An exempt account has no rate: turning one on while the other stays is a 409 that says
    what to send with it."""
    taxed = await create_account(client, admin_key, tax_rate="0.07")
    conflict = await patch(client, admin_key, taxed["id"], {"tax_exempt": True})
    assert conflict.status_code == 409, conflict.text
    assert conflict.headers["content-type"] == "application/problem+json"
    assert conflict.json()["code"] == "tax_settings_conflict"
    assert "send tax_rate null" in conflict.json()["detail"]
    exempt = await changed(client, admin_key, taxed["id"], {"tax_exempt": True, "tax_rate": None})
    assert (exempt["tax_exempt"], exempt["tax_rate"]) == (True, None)
    again = await patch(client, admin_key, taxed["id"], {"tax_rate": "0.2"})
    assert again.status_code == 409 and again.json()["code"] == "tax_settings_conflict"
    assert "send tax_exempt false" in again.json()["detail"]
    back = await changed(client, admin_key, taxed["id"], {"tax_exempt": False, "tax_rate": "0.2"})
    assert (back["tax_exempt"], back["tax_rate"]) == (False, "0.2")


async def test_the_owner_changes_its_name_and_email_but_not_its_tax(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, created["id"], "owner")
    mine = await changed(client, owner, created["id"], {"name": "Acme Inc", "email": "a@acme.test"})
    assert (mine["name"], mine["email"]) == ("Acme Inc", "a@acme.test")
    [entry] = await audit_entries(client, admin_key)
    assert entry["actor_role"] == "owner"
    for body in ({"tax_rate": "0"}, {"tax_exempt": True}, {"name": "X", "tax_rate": None}):
        refused = await patch(client, owner, created["id"], body)
        assert refused.status_code == 403, (body, refused.text)
        assert refused.json()["code"] == "forbidden"
    fetched = await client.get(f"{API}/accounts/{created['id']}", headers=auth(owner))
    assert fetched.json() == mine


@pytest.mark.parametrize("role", ["billing", "member"])
async def test_roles_below_owner_change_nothing(
    client: httpx.AsyncClient, admin_key: str, role: str
) -> None:
    created = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, created["id"], role)
    refused = await patch(client, key, created["id"], {"name": "Mine now"})
    assert refused.status_code == 403 and refused.json()["code"] == "role_not_allowed"


async def test_another_accounts_or_an_unknown_id_is_not_found(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    a = await create_account(client, admin_key, name="A")
    b = await create_account(client, admin_key, name="B")
    owner_b = await issue_key(client, admin_key, b["id"], "owner")
    for key, account_id in ((owner_b, a["id"]), (owner_b, "acct_nothing"), (admin_key, "acct_x")):
        response = await patch(client, key, account_id, {"name": "Hijacked"})
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "account_not_found"
    fetched = await client.get(f"{API}/accounts/{a['id']}", headers=auth(admin_key))
    assert fetched.json() == a


async def test_a_new_tax_rate_applies_to_invoices_generated_afterwards(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    clock.set(datetime(2029, 12, 1, tzinfo=UTC))  # the real clock past the test clock's months
    await add_plan(client, admin_key, **metered_plan("metered", 2999))
    clock_id, account_id, key = await clocked_account(
        client, admin_key, "2026-01-01T00:00:00Z", tax_rate="0.07"
    )
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await advance(client, admin_key, clock_id, "2026-01-01T00:10:00Z")
    await changed(client, admin_key, account_id, {"tax_rate": "0.2"})
    await advance(client, admin_key, clock_id, "2026-02-01T00:10:00Z")
    found = await list_invoices(client, key)
    first, second = [await invoice(client, key, i["id"]) for i in reversed(found)]
    assert {line["tax_rate"] for line in first["lines"]} == {"0.07"}  # generated before
    assert {line["tax_rate"] for line in second["lines"]} == {"0.2"}
    assert (first["tax_minor"], second["tax_minor"]) == (210, 600)  # 29.99 × 0.07, × 0.2
