"""Plan versions and archiving as subscriptions see them; the plan-change hook."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.subscriptions.helpers import (
    SEED_BODY,
    current,
    drain,
    items_of,
    minor,
    ok,
    owner,
    post,
    subscribe,
)


async def test_running_subscriptions_keep_their_version_until_renewal(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    patch = {"name": "Pro 2", "prices": [{"currency": "USD", "amount_minor": 3499}]}
    updated = await client.patch(f"{API}/plans/pro", json=patch, headers=auth(admin_key))
    assert updated.status_code == 200, updated.text
    v2 = updated.json()
    assert (v2["version"], v2["name"], v2["limits"]["included_api_calls"]) == (2, "Pro 2", 10_000)
    assert (await current(client, key))["plan"]["version"] == 1
    clock.set(datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert await drain(billing) == 1
    renewed = await current(client, key)
    assert (renewed["plan"]["version"], renewed["subscription"]["amount_minor"]) == (2, 3499)
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("subscription_fee", 3499),
    ]


async def test_plan_update_rules(client: httpx.AsyncClient, admin_key: str) -> None:
    account, key = await owner(client, admin_key)
    denied = await client.patch(f"{API}/plans/pro", json={"name": "X"}, headers=auth(key))
    assert denied.status_code == 403
    missing = await client.patch(f"{API}/plans/gold", json={"name": "X"}, headers=auth(admin_key))
    assert missing.status_code == 404
    bad = await client.patch(f"{API}/plans/pro", json={"prices": []}, headers=auth(admin_key))
    assert bad.status_code == 422
    kept = await client.patch(f"{API}/plans/pro", json={"trial_days": 7}, headers=auth(admin_key))
    assert kept.json()["prices"][0]["amount_minor"] == 2999 and kept.json()["trial_days"] == 7


async def test_archived_plans_take_no_new_subscriptions_but_existing_ones_renew(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    await subscribe(client, key)
    archived = await ok(client, admin_key, "/plans/pro/archive")
    assert archived["status"] == "archived"
    listed = await client.get(f"{API}/plans", headers=auth(key))
    assert "pro" not in [p["code"] for p in listed.json()]
    other, other_key = await owner(client, admin_key)
    refused = await post(client, other_key, "/subscriptions", SEED_BODY)
    assert refused.status_code == 409 and refused.json()["code"] == "plan_archived"
    clock.set(datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert await drain(billing) == 1
    assert (await current(client, key))["plan"]["code"] == "pro"


async def test_plan_changes_call_the_hook_after_commit_only(
    client: httpx.AsyncClient, admin_key: str, limits_changes: list[str]
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    await asyncio.sleep(0)
    assert limits_changes == [account]
    conflict = await post(client, key, "/subscriptions", SEED_BODY)
    assert conflict.status_code == 409
    await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    await asyncio.sleep(0)
    assert limits_changes == [account, account]
    # A preview changes nothing, so nobody is told.
    await ok(
        client,
        key,
        f"/subscriptions/{sub['id']}/change",
        {"plan_type": "pro", "preview": True, "when": "immediate"},
    )
    await asyncio.sleep(0)
    assert limits_changes == [account, account]


async def test_the_hook_waits_for_the_outer_commit_not_a_savepoint(
    billing: BillingService, limits_changes: list[str]
) -> None:
    """A savepoint released inside the transaction (an invoice insert, a webhook record) is
    not the commit: telling then let another process re-read and cache the old limits; a
    savepoint rolled back must not forget the changes made before it either."""
    from aihub_billing.accounts.changes import limits_changed

    async with billing.db.sessions() as session:
        limits_changed(session, "acct_released")
        async with session.begin_nested():
            pass
        await asyncio.sleep(0)
        assert limits_changes == []
        limits_changed(session, "acct_kept")
        try:
            async with session.begin_nested():
                raise LookupError("a savepoint rolled back")
        except LookupError:
            pass
        await session.commit()
    await asyncio.sleep(0)
    assert sorted(limits_changes) == ["acct_kept", "acct_released"]
    async with billing.db.sessions() as session:
        limits_changed(session, "acct_rolled_back")
        await session.rollback()
    await asyncio.sleep(0)
    assert "acct_rolled_back" not in limits_changes
