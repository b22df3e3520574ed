"""Late usage, finalization, the status machine, the upcoming preview (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import AuditEntry
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.invoices.helpers import (
    INVOICES,
    advance,
    billing_jobs,
    check_sums,
    clocked_account,
    invoice,
    kinds,
    list_invoices,
    metered_plan,
    track,
)
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok, post


@pytest.fixture(autouse=True)
def _late_real_clock(clock: FrozenClock) -> None:
    # Usage timestamps are checked against the service clock; test clocks drive the rest.
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))


async def _metered(
    client: httpx.AsyncClient,
    admin_key: str,
    frozen_time: str = "2026-01-01T00:00:00Z",
    **account: object,
) -> tuple[str, str, str, str]:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, account_id, key = await clocked_account(client, admin_key, frozen_time, **account)
    sub = await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    return clock_id, account_id, key, sub["subscription"]["id"]


def _usage(inv: dict[str, object]) -> list[tuple[str, int]]:
    return [k for k in kinds(inv) if k[0] != "subscription_fee"]  # type: ignore[arg-type]


async def test_late_usage_joins_a_draft_and_after_finalization_the_next_invoice(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, _, key, _ = await _metered(client, admin_key)
    await track(client, key, "gpt-4o-mini", 2000, "2026-01-10T00:00:00Z")  # 1,000 over
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    cycle = (await list_invoices(client, key, status="draft"))[0]
    cycle = await invoice(client, key, cycle["id"])
    assert _usage(cycle) == [("overage_tokens", 500)]
    # Late, while the invoice is a draft: included when it is finalized.
    await track(client, key, "gpt-4o-mini", 1000, "2026-01-31T23:59:00Z")
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    cycle = await invoice(client, key, cycle["id"])
    assert cycle["status"] == "open" and cycle["number"] == "TEST-INV-2026-000002"
    assert _usage(cycle) == [("overage_tokens", 1000)]
    [tokens] = [x for x in cycle["lines"] if x["kind"] == "overage_tokens"]
    assert tokens["quantity"] == "0.002"
    check_sums(cycle)
    # Late again, after finalization: the next invoice carries the difference for January.
    await track(client, key, "gpt-4o-mini", 400, "2026-01-20T00:00:00Z")
    await advance(client, admin_key, clock_id, "2026-03-01T00:30:00Z")
    nxt = (await list_invoices(client, key, status="draft"))[0]
    nxt = await invoice(client, key, nxt["id"])
    assert nxt["period_start"] == "2026-02-01T00:00:00Z"
    [adjustment] = [x for x in nxt["lines"] if x["kind"] == "adjustment"]
    assert adjustment["amount_minor"] == 200  # 400 tokens × 5,000 per 1M
    assert (adjustment["period_start"], adjustment["period_end"]) == (
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
    )
    # Finalizing refreshes without counting the adjustment twice.
    await advance(client, admin_key, clock_id, "2026-03-01T02:00:00Z")
    nxt = await invoice(client, key, nxt["id"])
    assert [x["amount_minor"] for x in nxt["lines"] if x["kind"] == "adjustment"] == [200]
    check_sums(nxt)


async def test_late_usage_of_an_ended_subscription_gets_its_own_invoice_once(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # Canceled at the end of January: its final invoice bills 500 of overage and is final by
    # 02:00; 400 more tokens of January arrive after that. No invoice follows a canceled
    # subscription's, so the look one period later bills them on a `late_usage` invoice.
    clock_id, _, key, sub_id = await _metered(client, admin_key)
    await ok(client, key, f"/subscriptions/{sub_id}/cancel", {"at_period_end": True})
    await track(client, key, "gpt-4o-mini", 2000, "2026-01-10T00:00:00Z")
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    await track(client, key, "gpt-4o-mini", 400, "2026-01-20T00:00:00Z")
    await advance(client, admin_key, clock_id, "2026-02-28T00:00:00Z")
    assert [i["billing_reason"] for i in await list_invoices(client, key)] == [
        "subscription_final",
        "subscription_create",
    ]
    await advance(client, admin_key, clock_id, "2026-04-01T00:00:00Z")
    late = [i for i in await list_invoices(client, key) if i["billing_reason"] == "late_usage"]
    [one] = [await invoice(client, key, i["id"]) for i in late]
    assert (one["status"], kinds(one)) == ("open", [("adjustment", 200)])
    assert (one["period_start"], one["period_end"]) == (
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
    )
    check_sums(one)


async def test_late_usage_of_an_ended_period_that_owed_nothing_makes_its_final_invoice(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    # Nothing was due when January ended (no final invoice); 2,000 tokens of January arrive
    # after: the look one period later makes the final invoice, with their overage.
    clock_id, _, key, sub_id = await _metered(client, admin_key)
    await ok(client, key, f"/subscriptions/{sub_id}/cancel", {"at_period_end": True})
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    await track(client, key, "gpt-4o-mini", 2000, "2026-01-20T00:00:00Z")
    await advance(client, admin_key, clock_id, "2026-03-02T00:00:00Z")
    [final] = [
        await invoice(client, key, i["id"])
        for i in await list_invoices(client, key)
        if i["billing_reason"] == "subscription_final"
    ]
    assert kinds(final) == [("overage_tokens", 500)]


async def test_status_machine_and_audit(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    clock_id, account, key, _ = await _metered(client, admin_key)
    await advance(client, admin_key, clock_id, "2026-01-01T00:10:00Z")
    [draft] = await list_invoices(client, key)
    # A draft is neither paid nor voided: it is finalized first.
    for action in ("void", "mark-paid", "mark-uncollectible"):
        response = await post(client, admin_key, f"/invoices/{draft['id']}/{action}")
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "invoice_invalid_transition"
    opened = await ok(client, admin_key, f"/invoices/{draft['id']}/finalize")
    assert (opened["status"], opened["number"]) == ("open", "TEST-INV-2026-000001")
    response = await post(client, admin_key, f"/invoices/{draft['id']}/finalize")
    assert response.status_code == 409
    # The scheduled finalization later finds it open and does nothing.
    assert billing_jobs(await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")) == [
        ("invoices.finalize", "2026-01-01T01:00:00Z")
    ]
    assert (await invoice(client, key, draft["id"]))["number"] == "TEST-INV-2026-000001"
    # A partial payment, then too much, then the rest.
    part = await ok(client, admin_key, f"/invoices/{draft['id']}/mark-paid", {"amount_minor": 1000})
    assert (part["status"], part["amount_paid_minor"]) == ("open", 1000)
    response = await post(
        client, admin_key, f"/invoices/{draft['id']}/mark-paid", {"amount_minor": 4001}
    )
    assert response.status_code == 400 and response.json()["code"] == "invoice_invalid_amount"
    uncollectible = await ok(client, admin_key, f"/invoices/{draft['id']}/mark-uncollectible")
    assert uncollectible["status"] == "uncollectible"
    paid = await ok(client, admin_key, f"/invoices/{draft['id']}/mark-paid")
    assert (paid["status"], paid["amount_paid_minor"], paid["paid_at"]) == (
        "paid",
        5000,
        "2026-01-01T02:00:00Z",
    )
    for action in ("void", "mark-uncollectible", "mark-paid"):
        response = await post(client, admin_key, f"/invoices/{draft['id']}/{action}")
        assert response.status_code == 409
    async with billing.db.sessions() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.object_id == draft["id"])
                .order_by(AuditEntry.id)
            )
        ).all()
    assert list(actions) == [
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_recorded",
        "invoice.marked_uncollectible",
        "invoice.paid",
    ]
    response = await post(client, admin_key, "/invoices/inv_nope/void")
    assert response.status_code == 404


async def test_void_an_open_invoice(client: httpx.AsyncClient, admin_key: str) -> None:
    clock_id, _, key, _ = await _metered(client, admin_key)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [inv] = await list_invoices(client, key)
    voided = await ok(client, admin_key, f"/invoices/{inv['id']}/void")
    assert (voided["status"], voided["voided_at"]) == ("void", "2026-01-01T02:00:00Z")
    assert await list_invoices(client, key, status="void") != []
    assert await list_invoices(client, key, status="open") == []


async def test_a_partly_paid_invoice_is_not_voided(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """Voiding would drop the payment on the floor: neither refunded nor credited."""
    clock_id, _, key, _ = await _metered(client, admin_key)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [inv] = await list_invoices(client, key)
    await ok(client, admin_key, f"/invoices/{inv['id']}/mark-paid", {"amount_minor": 1000})
    for path in ("void", "mark-uncollectible", "void"):
        response = await post(client, admin_key, f"/invoices/{inv['id']}/{path}")
        if path == "mark-uncollectible":
            assert response.status_code == 200, response.text
            continue
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "invoice_invalid_transition"
    kept = await invoice(client, key, inv["id"])
    assert (kept["status"], kept["amount_paid_minor"]) == ("uncollectible", 1000)


async def test_a_fully_discounted_invoice_is_finalized_straight_to_paid(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    await ok(
        client,
        admin_key,
        "/coupons",
        {"code": "FREE100", "percent_off": "100", "duration": "once"},
    )
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(
        client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered", "coupon": "FREE100"}
    )
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [inv] = await list_invoices(client, key)
    inv = await invoice(client, key, inv["id"])
    assert kinds(inv) == [("subscription_fee", 5000), ("discount", -5000)]
    assert (inv["status"], inv["total_minor"], inv["number"]) == ("paid", 0, "TEST-INV-2026-000001")


async def test_upcoming_previews_the_current_period_without_storing(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, account, key, sub_id = await _metered(client, admin_key, tax_rate="0.2")
    await advance(client, admin_key, clock_id, "2026-01-15T00:00:00Z")
    await track(client, key, "gpt-4o-mini", 3000, "2026-01-10T00:00:00Z")
    up = await client.get(f"{INVOICES}/upcoming", headers=auth(key))
    assert up.status_code == 200, up.text
    body = up.json()
    assert (body["status"], body["subscription_id"], body["period_end"]) == (
        "upcoming",
        sub_id,
        "2026-02-01T00:00:00Z",
    )
    # The first fee is on its own (draft) invoice already; overage so far: 2,000 tokens.
    assert kinds(body) == [("overage_tokens", 1000)]
    assert body["tax_minor"] == 200 and body["total_minor"] == 1200
    check_sums(body)
    assert len(await list_invoices(client, key)) == 1
    admin_view = await client.get(
        f"{INVOICES}/upcoming", params={"account_id": account}, headers=auth(admin_key)
    )
    assert admin_view.json()["total_minor"] == 1200
    _, _, lonely = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    none = await client.get(f"{INVOICES}/upcoming", headers=auth(lonely))
    assert none.status_code == 404 and none.json()["code"] == "no_upcoming_invoice"


async def test_list_filters_and_cursor_pages(client: httpx.AsyncClient, admin_key: str) -> None:
    clock_id, _, key, _ = await _metered(client, admin_key)
    await advance(client, admin_key, clock_id, "2026-04-01T02:00:00Z")
    all_ = await list_invoices(client, key)
    assert [i["billing_reason"] for i in all_] == ["subscription_cycle"] * 3 + [
        "subscription_create"
    ]
    assert [i["number"] for i in all_] == [f"TEST-INV-2026-00000{n}" for n in (4, 3, 2, 1)]
    first = await client.get(INVOICES, params={"limit": 3}, headers=auth(key))
    page = first.json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = await client.get(
        INVOICES, params={"limit": 3, "cursor": page["next_cursor"]}, headers=auth(key)
    )
    assert [i["id"] for i in page["items"] + rest.json()["items"]] == [i["id"] for i in all_]
    feb = await list_invoices(
        client, key, period_from="2026-02-01T00:00:00Z", period_to="2026-03-01T00:00:00Z"
    )
    assert [i["period_start"] for i in feb] == ["2026-02-01T00:00:00Z"]
    bad = await client.get(INVOICES, params={"cursor": "!!"}, headers=auth(key))
    assert bad.status_code == 400
    # A bound without a UTC offset is refused as invalid input, not a 500.
    for params in ({"period_from": "2026-02-01T00:00:00"}, {"period_to": "2026-03-01"}):
        naive = await client.get(INVOICES, params=params, headers=auth(key))
        assert naive.status_code == 422, naive.text
        assert naive.headers["content-type"].startswith("application/problem+json")
    offset = await list_invoices(client, key, period_from="2026-02-01T01:00:00+01:00")
    assert [i["period_start"] for i in offset][-1] == "2026-02-01T00:00:00Z"


async def test_usage_of_an_account_on_a_clock_ahead_is_billed_in_the_clocks_period(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """Sent with no timestamps while the clock is months ahead of the real date."""
    clock_id, _, key, _ = await _metered(client, admin_key, "2026-06-01T00:00:00Z")
    events = [{"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 0}] * 13
    batch = await client.post(f"{API}/usage/batch", json={"events": events}, headers=auth(key))
    assert batch.json()["accepted"] == 13, batch.text
    await advance(client, admin_key, clock_id, "2026-07-01T02:00:00Z")
    [cycle] = [
        i for i in await list_invoices(client, key) if i["billing_reason"] == "subscription_cycle"
    ]
    cycle = await invoice(client, key, cycle["id"])
    assert (cycle["period_start"], cycle["status"]) == ("2026-06-01T00:00:00Z", "open")
    # 13 calls, 10 included: 3 at 500 per 1,000 = 1.50; 1,300 tokens, 1,000 included: 300 at
    # 5,000 per million = 1.50.
    assert sorted(_usage(cycle)) == [("overage_calls", 150), ("overage_tokens", 150)]
    check_sums(cycle)
