"""Test clocks drive renewals, trial ends and scheduled changes through the real job handlers."""

from __future__ import annotations

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
