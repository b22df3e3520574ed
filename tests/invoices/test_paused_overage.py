"""Overage of a period the subscription was paused for part of: only the usage made while it
was not paused is billed (while paused the account is on `free` and nothing is billed), against
the plan's included allowance, whatever the status at the period's end."""

from __future__ import annotations

import httpx

from tests.api.helpers import API, auth
from tests.invoices.helpers import (
    INVOICES,
    advance,
    billing_jobs,
    check_sums,
    clocked_account,
    invoice,
    invoices_by_period,
    kinds,
    list_invoices,
    metered_plan,
    track,
)
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok

JAN = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")


async def _subscribe(client: httpx.AsyncClient, admin_key: str) -> tuple[str, str, str]:
    # 10 calls and 1,000 tokens included; 0.50 a call, 0.005 a token beyond them.
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    sub = (await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"}))[
        "subscription"
    ]
    return clock_id, key, sub["id"]


async def _january_cycle(client: httpx.AsyncClient, key: str) -> dict[str, object]:
    [cycle] = [
        x
        for x in await list_invoices(client, key)
        if x["period_start"] == JAN[0] and x["billing_reason"] == "subscription_cycle"
    ]
    full = await invoice(client, key, cycle["id"])
    assert (full["period_start"], full["period_end"]) == JAN
    check_sums(full)
    return full


async def test_usage_made_while_paused_is_not_billed_when_the_period_ends_active(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, key, sub_id = await _subscribe(client, admin_key)
    # Active: 5 calls, 500 tokens (within what is included).
    await track(client, key, "gpt-4o-mini", 100, "2026-01-05T10:00:00Z", n=5)
    await advance(client, admin_key, clock_id, "2026-01-10T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub_id}/pause")
    # Paused (on `free`, whose 100 calls and 10,000 tokens admit it): 20 calls, 2,000 tokens.
    await track(client, key, "gpt-4o-mini", 100, "2026-01-12T10:00:00Z", n=20)
    await advance(client, admin_key, clock_id, "2026-01-20T00:00:00Z")
    resumed = await ok(client, key, f"/subscriptions/{sub_id}/resume")
    assert resumed["invoice_items"] == []  # January's fee was billed in advance
    # Active again: 3 calls, 300 tokens. In all 8 calls and 800 tokens while not paused.
    await track(client, key, "gpt-4o-mini", 100, "2026-01-25T10:00:00Z", n=3)
    ran = await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    assert ("invoices.generate", "2026-02-01T00:00:00Z") in billing_jobs(ran)
    cycle = await _january_cycle(client, key)
    # Only February's fee: the 28 calls and 2,800 tokens of the whole period would have
    # billed 18 calls (900) and 1,800 tokens (900) of overage.
    assert kinds(cycle) == [("subscription_fee", 5000)]


async def test_active_usage_past_the_allowance_is_billed_without_the_paused_part(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, key, sub_id = await _subscribe(client, admin_key)
    # Active: 10 calls of 100 tokens (all included).
    await track(client, key, "gpt-4o-mini", 100, "2026-01-05T10:00:00Z", n=10)
    await advance(client, admin_key, clock_id, "2026-01-10T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub_id}/pause")
    await track(client, key, "gpt-4o-mini", 100, "2026-01-12T10:00:00Z", n=20)  # paused
    await advance(client, admin_key, clock_id, "2026-01-20T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub_id}/resume")
    await track(client, key, "gpt-3.5-turbo", 100, "2026-01-25T10:00:00Z", n=10)
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    cycle = await _january_cycle(client, key)
    # 20 calls (10 over: 0.010k x 500 = 5.00) and 2,000 tokens (1,000 over: 5.00, split
    # 500/500 by the models' shares of the tokens made while not paused).
    assert kinds(cycle) == [
        ("subscription_fee", 5000),
        ("overage_calls", 500),
        ("overage_tokens", 250),
        ("overage_tokens", 250),
    ]


async def test_overage_of_the_active_part_is_billed_when_the_period_ends_paused(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, key, sub_id = await _subscribe(client, admin_key)
    # Active: 14 calls and 1,400 tokens (4 calls, 400 tokens over), admitted under `bill`.
    await track(client, key, "gpt-4o-mini", 100, "2026-01-05T10:00:00Z", n=14)
    await advance(client, admin_key, clock_id, "2026-01-20T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub_id}/pause")
    await track(client, key, "gpt-4o-mini", 100, "2026-01-25T10:00:00Z", n=20)  # paused
    # The preview while paused shows what the period's end will bill.
    await advance(client, admin_key, clock_id, "2026-01-26T00:00:00Z")
    upcoming = await client.get(f"{INVOICES}/upcoming", headers=auth(key))
    assert upcoming.status_code == 200, upcoming.text
    assert kinds(upcoming.json()) == [("overage_calls", 200), ("overage_tokens", 200)]
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    cycle = await _january_cycle(client, key)
    # No fee (February starts paused), January's overage of its active part.
    assert kinds(cycle) == [("overage_calls", 200), ("overage_tokens", 200)]


async def test_a_period_paused_throughout_bills_no_overage(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, key, sub_id = await _subscribe(client, admin_key)
    await advance(client, admin_key, clock_id, "2026-01-20T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub_id}/pause")
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")  # February: paused
    await advance(client, admin_key, clock_id, "2026-02-10T12:00:00Z")
    await track(client, key, "gpt-4o-mini", 100, "2026-02-10T10:00:00Z", n=40)
    await advance(client, admin_key, clock_id, "2026-03-01T00:30:00Z")
    periods = [(reason, start) for reason, start, _, _ in await invoices_by_period(client, key)]
    # The creation invoice of January only: January (ends paused, no usage) and February
    # (paused throughout, 40 calls) have nothing to bill.
    assert periods == [("subscription_create", JAN[0])]


async def test_storage_held_while_paused_is_not_billed(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    plan = metered_plan(
        "stored", 1000, included_storage_gb="10", storage_policy="bill", per_gb_month="1.5"
    )
    await add_plan(client, admin_key, **plan)
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    sub = (await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "stored"}))[
        "subscription"
    ]
    snapshot = {"usage_type": "storage", "storage_gb": "31", "timestamp": JAN[0]}
    response = await client.post(
        f"{API}/usage/batch", json={"events": [snapshot]}, headers=auth(key)
    )
    assert response.json()["accepted"] == 1, response.text
    await advance(client, admin_key, clock_id, "2026-01-11T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub['id']}/pause")
    await advance(client, admin_key, clock_id, "2026-01-21T00:00:00Z")
    await ok(client, key, f"/subscriptions/{sub['id']}/resume")
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    cycle = await _january_cycle(client, key)
    # 31 GB held for the 21 unpaused days of 31: 21 GB-months, 11 beyond the 10 at 1.50
    # (the whole month would be 31 GB-months: 21 over, 31.50).
    assert kinds(cycle) == [("subscription_fee", 1000), ("storage", 1650)]
    [storage] = [x for x in cycle["lines"] if x["kind"] == "storage"]
    assert storage["quantity"] == "11"
