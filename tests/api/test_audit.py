"""Every state change lands in the audit log with actor, before/after and request id."""

from __future__ import annotations

import httpx

from tests.api.helpers import API, auth, create_account, issue_key


async def test_changes_are_audited_with_actor_and_request_id(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    created = await client.post(
        f"{API}/accounts",
        json={"name": "Acme"},
        headers=auth(admin_key, **{"X-Request-ID": "req-audit-1"}),
    )
    account = created.json()
    owner = await issue_key(client, admin_key, account["id"], "owner")
    await client.post(
        f"{API}/accounts/{account['id']}/members",
        json={"email": "dev@acme.test"},
        headers=auth(owner),
    )
    log = await client.get(
        f"{API}/audit-log", params={"account_id": account["id"]}, headers=auth(admin_key)
    )
    assert log.status_code == 200
    entries = log.json()["items"]
    assert [e["action"] for e in entries] == [
        "member.created",
        "api_key.created",
        "account.created",
    ]
    account_entry = entries[-1]
    assert account_entry["request_id"] == "req-audit-1"
    assert account_entry["actor_role"] == "admin" and account_entry["actor_key_id"].startswith(
        "key_"
    )
    assert account_entry["before"] is None and account_entry["after"]["name"] == "Acme"
    member_entry = entries[0]
    assert member_entry["actor_role"] == "owner"
    assert member_entry["after"]["email"] == "dev@acme.test"
    # The key's secret is never in the log, only its prefix.
    assert "secret" not in entries[1]["after"] and owner not in log.text


async def test_seeding_is_audited_as_the_system(client: httpx.AsyncClient, admin_key: str) -> None:
    log = await client.get(
        f"{API}/audit-log", params={"action": "plan.created"}, headers=auth(admin_key)
    )
    entries = log.json()["items"]
    assert len(entries) == 3
    assert {e["actor_role"] for e in entries} == {"system"}
    assert {e["after"]["code"] for e in entries} == {"free", "pro", "enterprise"}


async def test_a_failed_request_leaves_no_audit_entry(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    body = {"code": "free", "name": "Dup", "prices": [{"currency": "USD", "amount_minor": 0}]}
    response = await client.post(f"{API}/plans", json=body, headers=auth(admin_key))
    assert response.status_code == 409
    log = await client.get(
        f"{API}/audit-log", params={"action": "plan.created"}, headers=auth(admin_key)
    )
    assert len(log.json()["items"]) == 3


async def test_only_the_operator_reads_the_audit_log(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    account = await create_account(client, admin_key)
    owner = await issue_key(client, admin_key, account["id"], "owner")
    response = await client.get(f"{API}/audit-log", headers=auth(owner))
    assert response.status_code == 403


async def test_the_audit_log_pages_newest_first(client: httpx.AsyncClient, admin_key: str) -> None:
    for i in range(4):
        await create_account(client, admin_key, name=f"A{i}")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"action": "account.created", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"{API}/audit-log", params=params, headers=auth(admin_key))).json()
        seen += [e["after"]["name"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["A3", "A2", "A1", "A0"]
