"""Test clocks drive renewals, trial ends and scheduled changes through the real job handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from aihub_billing.models import Job
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.subscriptions.helpers import (
    SEED_BODY,
    current,
    history,
    items_of,
    minor,
    ok,
    owner,
    post,
)


async def clock_with_account(
    client: httpx.AsyncClient, admin_key: str, frozen_time: str
) -> tuple[str, str, str]:
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": frozen_time})
    account, key = await owner(client, admin_key)
    link = await ok(
        client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": account}
    )
    assert link["test_clock_id"] == clock["id"]
    return clock["id"], account, key


async def advance(
    client: httpx.AsyncClient, admin_key: str, clock_id: str, to: str
) -> list[dict[str, Any]]:
    moved = await ok(client, admin_key, f"/test-clocks/{clock_id}/advance", {"frozen_time": to})
    assert moved["frozen_time"] == to
    # The subscription jobs; the invoice jobs they enqueue are tested in tests/invoices.
    jobs: list[dict[str, Any]] = [
        j for j in moved["jobs_run"] if j["name"].startswith("subscriptions.")
    ]
    return jobs


async def test_trial_active_upgrade_renewal_cancel_at_period_end(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """End to end over HTTP only: every transition is a job the clock runs, or an API call
    made at the clock's time."""
    clock_id, account, key = await clock_with_account(client, admin_key, "2026-01-01T00:00:00Z")
    created = await ok(
        client,
        admin_key,
        "/subscriptions",
        {**SEED_BODY, "account_id": account, "trial_days": 14},
    )
    sub = created["subscription"]
    assert sub["status"] == "trialing" and sub["created_at"] == "2026-01-01T00:00:00Z"
    assert sub["trial_end"] == "2026-01-15T00:00:00Z"

    ran = await advance(client, admin_key, clock_id, "2026-01-20T00:00:00Z")
    assert [(j["name"], j["run_at"]) for j in ran] == [
        ("subscriptions.trial_end", "2026-01-15T00:00:00Z")
    ]
    active = (await current(client, key))["subscription"]
    assert active["status"] == "active"
    assert (active["current_period_start"], active["current_period_end"]) == (
        "2026-01-15T00:00:00Z",
        "2026-02-15T00:00:00Z",
    )
    fee = (await items_of(client, key, sub["id"]))[0]
    assert (fee["kind"], fee["amount_minor"], fee["created_at"]) == (
        "subscription_fee",
        2999,
        "2026-01-15T00:00:00Z",
    )

    await advance(client, admin_key, clock_id, "2026-02-01T00:00:00Z")
    # The API call runs at the clock's time: 14 of the 31 days of [Jan 15, Feb 15) are left.
    up = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "enterprise"})
    assert up["effective_at"] == "2026-02-01T00:00:00Z"
    assert minor(up["invoice_items"]) == [("proration_credit", -1354), ("proration_charge", 4516)]
    assert [i["amount"] for i in up["invoice_items"]] == [
        "-13.543870967741935484",
        "45.156774193548387097",
    ]

    ran = await advance(client, admin_key, clock_id, "2026-02-20T00:00:00Z")
    assert [(j["name"], j["run_at"]) for j in ran] == [
        ("subscriptions.renew", "2026-02-15T00:00:00Z")
    ]
    renewed = await current(client, key)
    assert renewed["plan"]["code"] == "enterprise"
    assert renewed["period_end"] == "2026-03-15T00:00:00Z"

    canceled = await ok(client, key, f"/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    assert canceled["subscription"]["canceled_at"] == "2026-02-20T00:00:00Z"
    ran = await advance(client, admin_key, clock_id, "2026-04-01T00:00:00Z")
    assert [(j["name"], j["run_at"]) for j in ran] == [
        ("subscriptions.renew", "2026-03-15T00:00:00Z")
    ]
    after = await current(client, key)
    assert after["plan"]["code"] == "free" and after["subscription"] is None
    assert minor(await items_of(client, key, sub["id"])) == [
        ("subscription_fee", 2999),
        ("proration_credit", -1354),
        ("proration_charge", 4516),
        ("subscription_fee", 9999),
    ]
    events = await history(client, key)
    assert [(e["type"], e["at"]) for e in events] == [
        ("created", "2026-01-01T00:00:00Z"),
        ("trial_ended", "2026-01-15T00:00:00Z"),
        ("plan_changed", "2026-02-01T00:00:00Z"),
        ("renewed", "2026-02-15T00:00:00Z"),
        ("cancel_scheduled", "2026-02-20T00:00:00Z"),
        ("canceled", "2026-03-15T00:00:00Z"),
    ]


async def test_one_advance_runs_chained_jobs_in_time_order(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, account, key = await clock_with_account(client, admin_key, "2026-01-31T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    # Each renewal enqueues the next one; all due by the target run, from the anchor.
    ran = await advance(client, admin_key, clock_id, "2026-05-01T00:00:00Z")
    assert [j["run_at"] for j in ran] == [
        "2026-02-28T00:00:00Z",
        "2026-03-31T00:00:00Z",
        "2026-04-30T00:00:00Z",
    ]
    assert (await current(client, key))["period_end"] == "2026-05-31T00:00:00Z"


async def test_workers_never_claim_test_clock_jobs(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    clock_id, account, key = await clock_with_account(client, admin_key, "2025-06-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    # The real (fixture) clock is months past the period end, but the job is the test clock's.
    assert await billing.worker().drain() == 0
    async with billing.db.sessions() as session:
        jobs = list((await session.execute(select(Job))).scalars())
    # The renewal and the first period's invoice generation, both on the test clock.
    assert {j.name for j in jobs} == {"subscriptions.renew", "invoices.generate"}
    assert {(j.status, j.test_clock_id) for j in jobs} == {("pending", clock_id)}


async def test_clock_rules(client: httpx.AsyncClient, admin_key: str) -> None:
    clock_id, account, key = await clock_with_account(client, admin_key, "2026-01-01T00:00:00Z")
    back = await post(
        client,
        admin_key,
        f"/test-clocks/{clock_id}/advance",
        {"frozen_time": "2025-12-31T00:00:00Z"},
    )
    assert back.status_code == 409 and back.json()["code"] == "test_clock_backwards"
    twice = await post(
        client, admin_key, f"/test-clocks/{clock_id}/accounts", {"account_id": account}
    )
    assert twice.status_code == 409 and twice.json()["code"] == "account_on_test_clock"
    other, other_key = await owner(client, admin_key)
    await ok(client, other_key, "/subscriptions", SEED_BODY)
    busy = await post(client, admin_key, f"/test-clocks/{clock_id}/accounts", {"account_id": other})
    assert busy.status_code == 409 and busy.json()["code"] == "account_has_subscription"
    nobody = await post(
        client, admin_key, f"/test-clocks/{clock_id}/accounts", {"account_id": "acct_x"}
    )
    assert nobody.status_code == 404
    denied = await post(client, key, "/test-clocks", {"frozen_time": "2026-01-01T00:00:00Z"})
    assert denied.status_code == 403
    naive = await post(client, admin_key, "/test-clocks", {"frozen_time": "2026-01-01T00:00:00"})
    assert naive.status_code == 422
    got = await client.get(f"{API}/test-clocks/{clock_id}", headers=auth(admin_key))
    assert got.json()["frozen_time"] == "2026-01-01T00:00:00Z"
    missing = await client.get(f"{API}/test-clocks/clock_nope", headers=auth(admin_key))
    assert missing.status_code == 404


async def test_listing_pages_through_every_clock_with_its_accounts(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    first, account, key = await clock_with_account(client, admin_key, "2026-01-01T00:00:00Z")
    empty = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2026-02-01T00:00:00Z"})
    third, other, _ = await clock_with_account(client, admin_key, "2026-03-01T00:00:00Z")
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await client.get(f"{API}/test-clocks", params=params, headers=auth(admin_key))
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [c["id"] for c in seen] == sorted([first, empty["id"], third])
    by_id = {c["id"]: c for c in seen}
    assert by_id[first]["account_ids"] == [account]
    assert by_id[empty["id"]]["account_ids"] == []
    assert by_id[third]["account_ids"] == [other]
    assert by_id[third]["frozen_time"] == "2026-03-01T00:00:00Z"
    one = await client.get(f"{API}/test-clocks/{first}", headers=auth(admin_key))
    assert one.json()["account_ids"] == [account]
    denied = await client.get(f"{API}/test-clocks", headers=auth(key))
    assert denied.status_code == 403
    bad = await client.get(
        f"{API}/test-clocks", params={"cursor": "not-a-cursor"}, headers=auth(admin_key)
    )
    assert bad.status_code == 400 and bad.headers["content-type"].startswith(
        "application/problem+json"
    )


async def test_usage_and_quota_of_an_account_on_a_clock_run_on_its_time(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """The app's clock is at 2026-01-31; the account's test clock months ahead of it."""
    clock_id, account, key = await clock_with_account(client, admin_key, "2026-06-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)  # pro, [Jun 1, Jul 1) on the clock

    def track(**event: Any) -> Any:
        body = {"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 10, **event}
        return client.post(f"{API}/usage/track", json=body, headers=auth(key))

    stamped = await track(event_id="e1")  # no timestamp: the clock's time
    assert stamped.status_code == 201, stamped.text
    on_time = await track(event_id="e2", timestamp="2026-06-01T00:00:00Z")
    assert on_time.status_code == 201, on_time.text  # not "in the future"
    batch = await client.post(
        f"{API}/usage/batch",
        json={"events": [{"model": "gpt-4o", "event_id": "e3"}]},
        headers=auth(key),
    )
    assert batch.json()["accepted"] == 1, batch.text
    stats = await client.get(f"{API}/usage/stats?group_by=day", headers=auth(key))
    assert [(r["group"], r["requests"]) for r in stats.json()["rows"]] == [("2026-06-01", 3)]

    quota = (await client.get(f"{API}/quota", headers=auth(key))).json()
    assert (quota["used_calls"], quota["reset_at"]) == (3, "2026-07-01T00:00:00Z")
    check = await ok(client, key, "/quota/check", {"model": "gpt-4o", "estimated_tokens": 50})
    assert check["expires_at"].startswith("2026-06-01T00:05:00")

    await advance(client, admin_key, clock_id, "2026-07-01T01:00:00Z")  # renews into July
    assert (await track(event_id="e4")).status_code == 201
    quota = (await client.get(f"{API}/quota", headers=auth(key))).json()
    assert (quota["used_calls"], quota["reset_at"]) == (1, "2026-08-01T00:00:00Z")
    stats = await client.get(f"{API}/usage/stats?group_by=day", headers=auth(key))
    assert [(r["group"], r["requests"]) for r in stats.json()["rows"]] == [("2026-07-01", 1)]


async def test_attaching_and_advancing_tell_that_the_accounts_limits_changed(
    client: httpx.AsyncClient, admin_key: str, limits_changes: list[str]
) -> None:
    """So every process drops its cached quota limits, which hold the clock's time."""
    clock_id, account, _ = await clock_with_account(client, admin_key, "2026-03-01T00:00:00Z")
    await asyncio.sleep(0)
    assert limits_changes == [account]
    await advance(client, admin_key, clock_id, "2026-03-02T00:00:00Z")
    await asyncio.sleep(0)
    assert limits_changes == [account, account]
    backwards = await post(
        client,
        admin_key,
        f"/test-clocks/{clock_id}/advance",
        {"frozen_time": "2026-01-01T00:00:00Z"},
    )
    assert backwards.status_code == 409, backwards.text  # refused: nobody is told
    await asyncio.sleep(0)
    assert limits_changes == [account, account]


async def test_a_clock_stays_where_ids_and_periods_can_follow(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """Before 1970 no id can carry the time (every subscription call of its accounts failed
    with a 500); near year 9999 no period end can be computed (nor renewed)."""
    for early in ("1960-01-01T00:00:00Z", "0001-01-01T00:00:00Z"):
        refused = await post(client, admin_key, "/test-clocks", {"frozen_time": early})
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "validation_error"
    clock_id, _, key = await clock_with_account(client, admin_key, "1970-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    far = await post(
        client,
        admin_key,
        f"/test-clocks/{clock_id}/advance",
        {"frozen_time": "9999-12-20T00:00:00Z"},
    )
    assert far.status_code == 422, far.text
    assert (await current(client, key))["period_start"] == "1970-01-01T00:00:00Z"
