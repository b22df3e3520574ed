"""The allowance an invoice bills overage against is the one the quota enforced: the plan's
limits with the account's quota override on top, per month of the period."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from tests.api.helpers import API, auth
from tests.invoices.helpers import (
    advance,
    clocked_account,
    invoice,
    kinds,
    list_invoices,
    metered_plan,
    track,
)
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok


@pytest.fixture(autouse=True)
def _service_clock_after_the_usage(clock: FrozenClock) -> None:
    # Usage timestamps are checked against the service clock; the test clock drives the rest.
    clock.set(datetime(2030, 12, 1, tzinfo=UTC))


async def _override(client: httpx.AsyncClient, admin_key: str, **fields: Any) -> None:
    put = await client.put(f"{API}/quota/overrides", json=fields, headers=auth(admin_key))
    assert put.status_code == 200, put.text


async def _by_reason(
    client: httpx.AsyncClient, key: str, reason: str, start: str
) -> dict[str, Any]:
    [found] = [
        x
        for x in await list_invoices(client, key)
        if x["billing_reason"] == reason and x["period_start"] == start
    ]
    return await invoice(client, key, found["id"])


async def _january_usage_lines(
    client: httpx.AsyncClient, admin_key: str, clock_id: str, key: str
) -> list[tuple[str, int]]:
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    cycle = await _by_reason(client, key, "subscription_cycle", "2026-01-01T00:00:00Z")
    return [k for k in kinds(cycle) if k[0] != "subscription_fee"]


async def test_an_override_that_grants_more_leaves_no_overage(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # The plan includes 1,000 tokens; the override grants 1,000,000, and the quota let the
    # 2,000 through as within it: billing 1,000 of them as overage would charge for a grant.
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, account_id, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await _override(client, admin_key, account_id=account_id, included_tokens=1_000_000)
    await track(client, key, "gpt-4o-mini", 2000, "2026-01-10T00:00:00Z")
    assert await _january_usage_lines(client, admin_key, clock_id, key) == []


async def test_an_override_to_bill_bills_what_it_let_through(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # The plan blocks past 1,000 tokens; the override bills them instead, at the price's
    # 5,000.00 per 1M: 2,000 over is 10.00.
    await add_plan(client, admin_key, **metered_plan("metered", 5000, tokens_policy="block"))
    clock_id, account_id, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await _override(client, admin_key, account_id=account_id, tokens_policy="bill")
    await track(client, key, "gpt-4o-mini", 3000, "2026-01-10T00:00:00Z")
    assert await _january_usage_lines(client, admin_key, clock_id, key) == [
        ("overage_tokens", 1000)
    ]


async def test_an_override_plan_code_swaps_the_allowance_not_the_prices(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # The custom deal includes 2,500 tokens (its own price would be 100,000.00 per 1M); the
    # subscription's price (5,000.00 per 1M) bills the 500 beyond them: 2.50.
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    deal = metered_plan("deal", 9000, included_tokens=2500, per_1m_tokens="100000")
    await add_plan(client, admin_key, **deal)
    clock_id, account_id, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await _override(client, admin_key, account_id=account_id, plan_code="deal")
    await track(client, key, "gpt-4o-mini", 3000, "2026-01-10T00:00:00Z")
    assert await _january_usage_lines(client, admin_key, clock_id, key) == [("overage_tokens", 250)]


async def _yearly_met(client: httpx.AsyncClient, admin_key: str) -> tuple[str, str]:
    # 10 calls and 1,000 tokens included a month; 30.00 a month or 300.00 a year.
    plan = metered_plan("met", 3000)
    plan["prices"].append({**plan["prices"][0], "interval_count": 12, "amount_minor": 30000})
    await add_plan(client, admin_key, **plan)
    clock_id, _, key = await clocked_account(client, admin_key, "2028-01-31T00:00:00Z")
    body = {**SEED_BODY, "plan_type": "met", "billing_cycle": "yearly"}
    await ok(client, key, "/subscriptions", body)
    return clock_id, key


async def test_a_yearly_period_holds_each_month_against_the_monthly_allowance(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # One call of 800 tokens in each month stays within every month's allowance; a second
    # call of 700 tokens in the month from Apr 30 puts that month 500 tokens over (2.50).
    # Held against one month's allowance, the year's 13 calls and 10,300 tokens billed 48.00.
    clock_id, key = await _yearly_met(client, admin_key)
    days = [f"2028-{month:02d}-10" for month in range(2, 13)] + ["2029-01-10"]
    for day in days:
        await track(client, key, "gpt-4o-mini", 800, f"{day}T00:00:00Z")
    await track(client, key, "gpt-4o-mini", 700, "2028-05-10T00:00:00Z")
    await advance(client, admin_key, clock_id, "2029-02-01T00:00:00Z")
    [cycle] = [
        x for x in await list_invoices(client, key) if x["billing_reason"] == "subscription_cycle"
    ]
    assert kinds(await invoice(client, key, cycle["id"])) == [
        ("subscription_fee", 30000),
        ("overage_tokens", 250),
    ]


async def test_a_yearly_quota_resets_every_month_of_the_period(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, key = await _yearly_met(client, admin_key)
    await track(client, key, "gpt-4o-mini", 800, "2028-02-10T00:00:00Z")

    async def quota() -> tuple[int, str]:
        got = (await client.get(f"{API}/quota", headers=auth(key))).json()
        return got["remaining_tokens"], got["reset_at"]

    await advance(client, admin_key, clock_id, "2028-02-20T00:00:00Z")
    # A Jan 31 start: the months end Feb 29, then Mar 31.
    assert await quota() == (200, "2028-02-29T00:00:00Z")
    await advance(client, admin_key, clock_id, "2028-03-01T00:00:00Z")
    assert await quota() == (1000, "2028-03-31T00:00:00Z")


async def test_a_closed_period_is_recomputed_under_the_override_it_had(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # January's override grants 1,000,000 tokens; 3,000 are used and January's invoice bills
    # no overage. The override is dropped in February, with no late usage: the late-usage
    # look recomputed January under today's override and billed 2,000 tokens (10.00) the
    # quota had admitted as included. Overrides keep no history; the audit log dates them.
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, account_id, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await _override(client, admin_key, account_id=account_id, included_tokens=1_000_000)
    await track(client, key, "gpt-4o-mini", 3000, "2026-01-10T00:00:00Z")
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    jan = await _by_reason(client, key, "subscription_cycle", "2026-01-01T00:00:00Z")
    assert jan["status"] == "open"
    assert [k for k in kinds(jan) if k[0] != "subscription_fee"] == []
    await _override(client, admin_key, account_id=account_id)  # back to the plan's limits
    await advance(client, admin_key, clock_id, "2026-03-01T00:30:00Z")
    feb = await _by_reason(client, key, "subscription_cycle", "2026-02-01T00:00:00Z")
    assert [k for k in kinds(feb) if k[0] == "adjustment"] == []


async def test_a_month_cut_short_holds_and_includes_its_share_of_a_gb_month(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # A 90-day cycle from 2026-02-01 ends 2026-05-02; months_of gives Feb, Mar, Apr and
    # [May 1, May 2) (one day). 10 GB held throughout, 5 GB included, 1.00 per GB-month.
    # Right: 5 GB over for 3 whole months = 15 GB-months, plus 5 GB over for 1 day of a
    # 31-day month = 5/31 = 0.1613 GB-months -> 15.1613 -> 15.16 (1516 minor).
    # The day's average GB (10) counted as a whole month billed 20 GB-months (20.00).
    plan = metered_plan(
        "q90", 9000, included_storage_gb="5", storage_policy="bill", per_gb_month="1"
    )
    plan["prices"][0].update(interval_unit="day", interval_count=90)
    await add_plan(client, admin_key, **plan)
    clock_id, _, key = await clocked_account(client, admin_key, "2026-02-01T00:00:00Z")
    await ok(
        client, key, "/subscriptions", {**SEED_BODY, "plan_type": "q90", "billing_cycle": "custom"}
    )
    snap = {"usage_type": "storage", "storage_gb": "10", "timestamp": "2026-02-01T00:00:00Z"}
    response = await client.post(f"{API}/usage/batch", json={"events": [snap]}, headers=auth(key))
    assert response.json()["accepted"] == 1, response.text
    await advance(client, admin_key, clock_id, "2026-05-02T00:30:00Z")
    cycle = await _by_reason(client, key, "subscription_cycle", "2026-02-01T00:00:00Z")
    assert cycle["period_end"] == "2026-05-02T00:00:00Z"
    [storage] = [x for x in cycle["lines"] if x["kind"] == "storage"]
    assert storage["amount_minor"] == 1516, storage


async def test_each_month_is_held_against_the_plan_it_was_on(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # Yearly 'met' (1,000 tokens a month included, 5,000 per 1M over). February: 3,000 tokens,
    # 2,000 past that month's allowance, admitted by the quota as overage (10.00). July 1: an
    # immediate upgrade to 'big' (1,000,000 a month) on the same yearly cycle: the period runs
    # on. Held against the plan at the period's end, February's 10.00 was never billed.
    met = metered_plan("met", 3000)
    met["prices"].append({**met["prices"][0], "interval_count": 12, "amount_minor": 30000})
    big = metered_plan("big", 6000, included_tokens=1_000_000)
    big["prices"].append({**big["prices"][0], "interval_count": 12, "amount_minor": 60000})
    await add_plan(client, admin_key, **met)
    await add_plan(client, admin_key, **big)
    clock_id, _, key = await clocked_account(client, admin_key, "2028-01-01T00:00:00Z")
    body = {**SEED_BODY, "plan_type": "met", "billing_cycle": "yearly"}
    sub = (await ok(client, key, "/subscriptions", body))["subscription"]
    await track(client, key, "gpt-4o-mini", 3000, "2028-02-10T00:00:00Z")
    await advance(client, admin_key, clock_id, "2028-07-01T00:00:00Z")
    changed = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "big"})
    assert changed.get("when", "immediate") == "immediate", changed
    await advance(client, admin_key, clock_id, "2029-01-01T00:30:00Z")
    cycle = await _by_reason(client, key, "subscription_cycle", "2028-01-01T00:00:00Z")
    assert [k for k in kinds(cycle) if k[0] == "overage_tokens"] == [("overage_tokens", 1000)]


async def test_a_bill_limit_no_price_bills_any_more_blocks(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # The override's `bill` was accepted on `metered`, whose price bills token overage; the
    # subscription then moved to `plain`, whose price does not: the quota went on admitting
    # tokens past the allowance as overage, and no invoice could ever bill them.
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    plain = {
        "code": "plain",
        "name": "Plain",
        "limits": {"included_api_calls": 10, "included_tokens": 1000},
        "prices": [{"currency": "USD", "amount_minor": 5000}],
    }
    await add_plan(client, admin_key, **plain)
    clock_id, account_id, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    body = {**SEED_BODY, "plan_type": "metered"}
    sub = (await ok(client, key, "/subscriptions", body))["subscription"]
    await _override(client, admin_key, account_id=account_id, tokens_policy="bill")
    quota = (await client.get(f"{API}/quota", headers=auth(key))).json()
    assert quota["tokens_policy"] == "bill"
    await advance(client, admin_key, clock_id, "2026-01-02T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "plain"})
    quota = (await client.get(f"{API}/quota", headers=auth(key))).json()
    assert quota["tokens_policy"] == "block"
    check = {"model": "gpt-4o-mini", "estimated_tokens": 1500}
    refused = await client.post(f"{API}/quota/check", json=check, headers=auth(key))
    assert (refused.status_code, refused.json()["code"]) == (402, "quota_exceeded")
