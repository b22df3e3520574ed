"""Accounts, members and API keys: authentication, roles and tenant scoping."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.auth.keys import digest
from aihub_billing.models import ApiKey
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key


async def test_requests_without_a_valid_key_are_401(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Token {admin_key}"},
    ):
        response = await client.get(f"{API}/plans", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_admin_creates_an_account_with_config_defaults(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key, email="ops@acme.test")
    assert account["id"].startswith("acct_")
    assert (account["currency"], account["tax_rate"], account["tax_exempt"]) == ("USD", None, False)
    fetched = await client.get(f"{API}/accounts/{account['id']}", headers=auth(admin_key))
    assert fetched.json() == account


async def test_account_currency_and_tax_rate_are_validated(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key, currency="jpy", tax_rate="0.19")
    assert (account["currency"], account["tax_rate"]) == ("JPY", "0.19")
    for bad in ({"currency": "XYZ"}, {"tax_rate": "1.5"}, {"tax_rate": "-0.1"}, {"name": ""}):
        response = await client.post(
            f"{API}/accounts", json={"name": "Acme", **bad}, headers=auth(admin_key)
        )
        assert response.status_code == 422, bad


async def test_a_secret_is_shown_once_and_only_its_hash_is_stored(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    response = await client.post(
        f"{API}/accounts/{account['id']}/api-keys",
        json={"role": "billing", "name": "finance"},
        headers=auth(admin_key),
    )
    issued = response.json()
    secret = issued["secret"]
    assert secret.startswith("ahb_") and len(secret) > 40
    async with billing.db.sessions() as session:
        row = await session.get(ApiKey, issued["id"])
    assert row is not None and row.key_hash == digest(secret) and secret not in row.key_hash
    listed = await client.get(f"{API}/accounts/{account['id']}/api-keys", headers=auth(admin_key))
    assert [k["id"] for k in listed.json()] == [issued["id"]]
    assert "secret" not in listed.json()[0]
    assert listed.json()[0]["prefix"] == secret[:12]


async def test_a_key_of_account_a_sees_404_for_account_b(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    a = await create_account(client, admin_key, name="A")
    b = await create_account(client, admin_key, name="B")
    key_a = await issue_key(client, admin_key, a["id"], "owner")
    own = await client.get(f"{API}/accounts/{a['id']}", headers=auth(key_a))
    assert own.status_code == 200
    for method, path, body in (
        ("GET", f"/accounts/{b['id']}", None),
        ("GET", f"/accounts/{b['id']}/members", None),
        ("GET", f"/accounts/{b['id']}/api-keys", None),
        ("POST", f"/accounts/{b['id']}/members", {"email": "x@b.test"}),
        ("POST", f"/accounts/{b['id']}/api-keys", {"role": "member"}),
        ("GET", "/accounts/acct_doesnotexist", None),
    ):
        response = await client.request(method, API + path, json=body, headers=auth(key_a))
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "account_not_found"
    listed = await client.get(f"{API}/accounts", headers=auth(key_a))
    assert [acc["id"] for acc in listed.json()["items"]] == [a["id"]]


@pytest.mark.parametrize("role", ["billing", "member"])
async def test_roles_below_owner_cannot_manage_keys_or_members(
    client: httpx.AsyncClient, admin_key: str, role: str
) -> None:
    account = await create_account(client, admin_key)
    key = await issue_key(client, admin_key, account["id"], role)
    for path, body in (("/api-keys", {"role": "member"}), ("/members", {"email": "m@a.test"})):
        response = await client.post(
            f"{API}/accounts/{account['id']}{path}", json=body, headers=auth(key)
        )
        assert response.status_code == 403
        assert response.json()["code"] == "role_not_allowed"
    # ...and only the operator creates accounts and plans.
    response = await client.post(f"{API}/accounts", json={"name": "X"}, headers=auth(key))
    assert response.status_code == 403
    plan = {"code": "x", "name": "X", "prices": [{"currency": "USD", "amount_minor": 1}]}
    response = await client.post(f"{API}/plans", json=plan, headers=auth(key))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_owner_issues_keys_and_members_for_its_account(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, account["id"], "owner")
    member = await client.post(
        f"{API}/accounts/{account['id']}/members",
        json={"email": "dev@acme.test", "name": "Dev"},
        headers=auth(owner),
    )
    assert member.status_code == 201
    member_id = member.json()["id"]
    dup = await client.post(
        f"{API}/accounts/{account['id']}/members",
        json={"email": "dev@acme.test"},
        headers=auth(owner),
    )
    assert dup.status_code == 409 and dup.json()["code"] == "member_exists"
    key = await client.post(
        f"{API}/accounts/{account['id']}/api-keys",
        json={"role": "member", "member_id": member_id},
        headers=auth(owner),
    )
    assert key.status_code == 201 and key.json()["member_id"] == member_id
    member_key = key.json()["secret"]
    plans = await client.get(f"{API}/plans", headers=auth(member_key))
    assert plans.status_code == 200
    # A member of another account cannot be bound to this account's key.
    other = await create_account(client, admin_key, name="Other")
    other_member = await client.post(
        f"{API}/accounts/{other['id']}/members", json={"email": "o@o.test"}, headers=auth(admin_key)
    )
    wrong = await client.post(
        f"{API}/accounts/{account['id']}/api-keys",
        json={"role": "member", "member_id": other_member.json()["id"]},
        headers=auth(owner),
    )
    assert wrong.status_code == 404 and wrong.json()["code"] == "member_not_found"


async def test_the_api_never_mints_admin_keys(client: httpx.AsyncClient, admin_key: str) -> None:
    account = await create_account(client, admin_key)
    response = await client.post(
        f"{API}/accounts/{account['id']}/api-keys", json={"role": "admin"}, headers=auth(admin_key)
    )
    assert response.status_code == 422


async def test_a_revoked_key_is_refused(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account = await create_account(client, admin_key)
    secret = await issue_key(client, admin_key, account["id"], "owner")
    async with billing.transaction() as session:
        query = select(ApiKey).where(ApiKey.key_hash == digest(secret))
        key = (await session.execute(query)).scalar_one()
        key.revoked_at = billing.clock.now()
    response = await client.get(f"{API}/accounts/{account['id']}", headers=auth(secret))
    assert response.status_code == 401


async def test_accounts_paginate_with_a_cursor(client: httpx.AsyncClient, admin_key: str) -> None:
    created = [(await create_account(client, admin_key, name=f"A{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"{API}/accounts", params=params, headers=auth(admin_key))).json()
        assert len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(created)
    bad = await client.get(f"{API}/accounts", params={"cursor": "!!"}, headers=auth(admin_key))
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


async def test_an_owner_revokes_a_key_and_it_stops_working_at_once(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, account["id"], "owner")
    issued = await client.post(
        f"{API}/accounts/{account['id']}/api-keys", json={"role": "member"}, headers=auth(owner)
    )
    key_id, secret = issued.json()["id"], issued.json()["secret"]
    path = f"{API}/accounts/{account['id']}/api-keys/{key_id}"
    revoked = await client.delete(path, headers=auth(owner))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (await client.get(f"{API}/plans", headers=auth(secret))).status_code == 401
    again = await client.delete(path, headers=auth(owner))
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    log = await client.get(
        f"{API}/audit-log", params={"action": "api_key.revoked"}, headers=auth(admin_key)
    )
    [entry] = log.json()["items"]
    assert entry["before"]["revoked_at"] is None
    assert entry["after"]["revoked_at"] == revoked.json()["revoked_at"]


async def test_keys_of_other_accounts_cannot_be_revoked(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    a = await create_account(client, admin_key, name="A")
    b = await create_account(client, admin_key, name="B")
    owner_a = await issue_key(client, admin_key, a["id"], "owner")
    key_b = await client.post(
        f"{API}/accounts/{b['id']}/api-keys", json={"role": "member"}, headers=auth(admin_key)
    )
    key_b_id = key_b.json()["id"]
    # Through B's path (not A's account) and through A's path (not A's key): both 404.
    via_b = await client.delete(
        f"{API}/accounts/{b['id']}/api-keys/{key_b_id}", headers=auth(owner_a)
    )
    assert via_b.status_code == 404 and via_b.json()["code"] == "account_not_found"
    via_a = await client.delete(
        f"{API}/accounts/{a['id']}/api-keys/{key_b_id}", headers=auth(owner_a)
    )
    assert via_a.status_code == 404 and via_a.json()["code"] == "api_key_not_found"
    still = await client.get(f"{API}/plans", headers=auth(key_b.json()["secret"]))
    assert still.status_code == 200


@pytest.mark.parametrize("role", ["billing", "member"])
async def test_roles_below_owner_cannot_list_members_or_keys(
    client: httpx.AsyncClient, admin_key: str, role: str
) -> None:
    """Members (their emails) and keys are the owner's and the operator's to see."""
    account = await create_account(client, admin_key)
    await client.post(
        f"{API}/accounts/{account['id']}/members",
        json={"email": "boss@acme.test"},
        headers=auth(admin_key),
    )
    key = await issue_key(client, admin_key, account["id"], role)
    for path in ("/members", "/api-keys"):
        response = await client.get(f"{API}/accounts/{account['id']}{path}", headers=auth(key))
        assert response.status_code == 403, (path, response.text)
        assert response.json()["code"] == "role_not_allowed"
