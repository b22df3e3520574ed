"""GET /summary on a real account: the seed's shape, the numbers and the forecast, on both
databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from aihub_billing.kit.clock import FrozenClock
from tests.api.helpers import API, auth
from tests.subscriptions.helpers import owner, subscribe

SUMMARY = f"{API}/summary"
# 100 in, 50 out on gpt-3.5-turbo (0.50 / 1.50 per 1M): 0.000125 USD a call.
CALL = {"usage_type": "api_call", "model": "gpt-3.5-turbo", "input_tokens": 100,
        "output_tokens": 50, "status_code": 200}  # fmt: skip


async def test_summary_in_the_seed_shape_with_a_forecast(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    account_id, key = await owner(client, admin_key)
    await subscribe(client, key)  # pro, monthly, from 2026-01-31 12:00 to 2026-02-28 12:00
    override = {"account_id": account_id, "included_tokens": 200_000}
    response = await client.put(f"{API}/quota/overrides", json=override, headers=auth(admin_key))
    assert response.status_code == 200, response.text
    clock.advance(days=7)
    batch = {"events": [{**CALL, "event_id": f"e{i}"} for i in range(700)]}
    response = await client.post(f"{API}/usage/batch", json=batch, headers=auth(key))
    assert response.status_code == 200 and response.json()["accepted"] == 700

    response = await client.get(SUMMARY, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {
        "user_id", "current_subscription", "usage_this_month", "quota_status", "forecast"
    }  # fmt: skip
    assert body["user_id"] == account_id
    assert body["current_subscription"] == {
        "plan_type": "pro", "status": "active", "days_until_renewal": 21
    }  # fmt: skip
    usage = body["usage_this_month"]
    assert (usage["total_requests"], usage["total_cost"], usage["currency"]) == (
        700, "0.09", "USD"  # 0.0875, rounded once
    )  # fmt: skip
    assert usage["costs"] == [{"currency": "USD", "amount": "0.09"}]
    quota = body["quota_status"]
    assert (quota["plan_type"], quota["remaining_calls"], quota["remaining_tokens"]) == (
        "pro", 10_000 - 700, 200_000 - 105_000
    )  # fmt: skip
    forecast = body["forecast"]
    assert forecast["projected_requests"] == 2800  # a week of a four-week period
    assert (forecast["projected_cost"], forecast["currency"]) == ("0.35", "USD")
    # 105,000 tokens a week against 200,000: out on day 13 1/3 of the period.
    assert forecast["token_quota_runs_out_on"] == "2026-02-13"
    assert forecast["period_end"].startswith("2026-02-28T12:00:00")

    # The operator names the account; another account's key cannot see it.
    as_admin = await client.get(SUMMARY, params={"account_id": account_id}, headers=auth(admin_key))
    assert as_admin.status_code == 200 and as_admin.json() == body
    missing = await client.get(SUMMARY, headers=auth(admin_key))
    assert (missing.status_code, missing.json()["code"]) == (400, "account_required")
    _, other_key = await owner(client, admin_key)
    foreign = await client.get(SUMMARY, params={"account_id": account_id}, headers=auth(other_key))
    assert (foreign.status_code, foreign.json()["code"]) == (404, "account_not_found")


async def test_a_new_account_on_the_free_plan(client: httpx.AsyncClient, admin_key: str) -> None:
    account_id, key = await owner(client, admin_key)
    response = await client.get(SUMMARY, headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["current_subscription"]["plan_type"] == "free"
    assert body["current_subscription"]["status"] == "none"
    assert body["usage_this_month"]["total_requests"] == 0
    assert body["usage_this_month"]["total_cost"] == "0.00"
    assert body["quota_status"]["remaining_calls"] == 100  # the seed's free plan
    assert body["forecast"]["token_quota_runs_out_on"] is None


async def test_a_canceled_subscription_does_not_renew(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    _, key = await owner(client, admin_key)
    sub = await subscribe(client, key)
    response = await client.post(
        f"{API}/subscriptions/{sub['subscription']['id']}/cancel",
        json={"at_period_end": True},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    clock.advance(timedelta(days=1))
    body = (await client.get(SUMMARY, headers=auth(key))).json()
    assert body["current_subscription"]["days_until_renewal"] is None


async def test_a_trial_end_not_run_yet_is_due_in_zero_days(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock
) -> None:
    from tests.subscriptions.helpers import add_plan, ok

    await add_plan(
        client,
        admin_key,
        code="trialed",
        name="Trialed",
        trial_days=14,
        prices=[{"currency": "USD", "amount_minor": 4900}],
    )
    _, key = await owner(client, admin_key)
    await ok(client, key, "/subscriptions", {"plan_type": "trialed"})
    clock.advance(days=20)  # no worker ran the trial's end, six days ago
    body = (await client.get(SUMMARY, headers=auth(key))).json()
    assert body["current_subscription"]["days_until_renewal"] == 0
