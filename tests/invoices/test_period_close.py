"""Period close end to end through the API on test clocks, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from aihub_billing.invoices.service import invoices
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Invoice, InvoiceItem
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
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok, owner, post, subscribe


async def test_cycle_invoice_has_next_fee_proration_and_overage_then_is_numbered(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    await add_plan(client, admin_key, **metered_plan("metered-plus", 10000))
    clock_id, account, key = await clocked_account(
        client, admin_key, "2026-01-01T00:00:00Z", tax_rate="0.1"
    )
    sub = (await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"}))[
        "subscription"
    ]
    # The first period is billed in advance: its invoice is generated at once, a draft.
    ran = await advance(client, admin_key, clock_id, "2026-01-01T00:30:00Z")
    assert billing_jobs(ran) == [("invoices.generate", "2026-01-01T00:00:00Z")]
    [first] = await list_invoices(client, key)
    assert (first["status"], first["billing_reason"], first["number"]) == (
        "draft",
        "subscription_create",
        None,
    )
    # Finalized an hour after creation (the default delay), with the first number.
    ran = await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    assert billing_jobs(ran) == [("invoices.finalize", "2026-01-01T01:00:00Z")]
    first = await invoice(client, key, first["id"])
    assert (first["status"], first["number"]) == ("open", "TEST-INV-2026-000001")
    assert kinds(first) == [("subscription_fee", 5000)]
    assert [x["tax_minor"] for x in first["lines"]] == [500]
    assert (first["subtotal_minor"], first["tax_minor"], first["total_minor"]) == (5000, 500, 5500)
    check_sums(first)

    # Usage in January: 12 calls (2 over), 3,000 tokens (2,000 over: 1,600 / 400 by share).
    await track(client, key, "gpt-4o-mini", 300, "2026-01-10T10:00:00Z", n=8)
    await track(client, key, "gpt-3.5-turbo", 150, "2026-01-12T10:00:00Z", n=4)
    # An upgrade on Jan 16 prorates.
    await advance(client, admin_key, clock_id, "2026-01-16T00:00:00Z")
    up = await ok(client, key, f"/subscriptions/{sub['id']}/change", {"plan_type": "metered-plus"})
    assert [i["kind"] for i in up["invoice_items"]] == ["proration_credit", "proration_charge"]

    ran = await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    assert billing_jobs(ran) == [
        ("subscriptions.renew", "2026-02-01T00:00:00Z"),
        ("invoices.generate", "2026-02-01T00:00:00Z"),
    ]
    cycle, _ = await list_invoices(client, key)
    cycle = await invoice(client, key, cycle["id"])
    assert (cycle["billing_reason"], cycle["status"]) == ("subscription_cycle", "draft")
    assert (cycle["period_start"], cycle["period_end"]) == (
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
    )
    credit, charge = (i["amount_minor"] for i in up["invoice_items"])
    assert kinds(cycle) == [
        ("proration_credit", credit),
        ("proration_charge", charge),
        ("subscription_fee", 10000),  # February, in advance, at the new plan's price
        ("overage_calls", 100),  # January in arrears: 2 calls = 0.002 thousand × 500
        ("overage_tokens", 200),  # gpt-3.5-turbo (models in name order)
        ("overage_tokens", 800),  # gpt-4o-mini
    ]
    by_model = {x["model"]: x for x in cycle["lines"] if x["kind"] == "overage_tokens"}
    assert {m: x["quantity"] for m, x in by_model.items()} == {
        "gpt-4o-mini": "0.0016",
        "gpt-3.5-turbo": "0.0004",
    }
    assert {m: x["amount_minor"] for m, x in by_model.items()} == {
        "gpt-4o-mini": 800,
        "gpt-3.5-turbo": 200,
    }
    [calls] = [x for x in cycle["lines"] if x["kind"] == "overage_calls"]
    assert (calls["quantity"], calls["unit_price"], calls["amount_minor"]) == ("0.002", "500", 100)
    assert [x["kind"] for x in cycle["lines"]][:3] == [
        "proration_credit",
        "proration_charge",
        "subscription_fee",
    ]
    assert all(x["tax_rate"] == "0.1" for x in cycle["lines"])
    check_sums(cycle)
    # Every item is on exactly one invoice now.
    async with billing.db.sessions() as session:
        pending = await session.scalar(select(func.count()).where(InvoiceItem.invoice_id.is_(None)))
    assert pending == 0

    ran = await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    assert billing_jobs(ran) == [("invoices.finalize", "2026-02-01T01:00:00Z")]
    cycle = await invoice(client, key, cycle["id"])
    assert (cycle["status"], cycle["number"]) == ("open", "TEST-INV-2026-000002")

    # A rerun of period close (the admin endpoint) finds both and creates nothing.
    again = await ok(client, admin_key, "/invoices/generate", {"account_id": account})
    assert (again["created"], again["existing"]) == (0, 2)
    async with billing.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 2


async def test_close_period_endpoint_renews_overdue_subscriptions_and_is_exactly_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, clock: FrozenClock
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    account, key = await owner(client, admin_key)
    # The fixture clock: Jan 31 12:00, so periods end Feb 28 12:00 and Mar 31 12:00.
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    clock.set(datetime(2026, 2, 6, tzinfo=UTC))
    await track(client, key, "gpt-4o-mini", 1000, "2026-02-05T00:00:00Z", n=2)
    # No worker ran: the renewal at Feb 28 is overdue when the operator closes periods.
    clock.set(datetime(2026, 3, 2, tzinfo=UTC))
    done = await ok(client, admin_key, "/invoices/generate", {"account_id": account})
    assert (done["subscriptions"], done["renewed"], done["created"]) == (1, 1, 2)
    invoices = await list_invoices(client, key)
    assert [i["billing_reason"] for i in invoices] == ["subscription_cycle", "subscription_create"]
    cycle = await invoice(client, key, invoices[0]["id"])
    assert kinds(cycle) == [("subscription_fee", 5000), ("overage_tokens", 500)]
    # The jobs the renewal enqueued find the invoices; a rerun creates nothing.
    await billing.worker().drain()
    again = await ok(client, admin_key, "/invoices/generate", {})
    assert (again["renewed"], again["created"], again["existing"]) == (0, 0, 2)
    async with billing.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 2
    # Periods that end after now are not closed.
    response = await post(client, admin_key, "/invoices/generate", {"at": "2999-01-01T00:00:00Z"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


async def test_other_accounts_invoices_are_not_found_and_actions_are_admin_only(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, account, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    _, other, other_key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await advance(client, admin_key, clock_id, "2026-01-01T00:10:00Z")
    [inv] = await list_invoices(client, key)
    assert await list_invoices(client, other_key) == []
    response = await client.get(f"{INVOICES}/{inv['id']}", headers=auth(other_key))
    assert response.status_code == 404 and response.json()["code"] == "invoice_not_found"
    response = await client.get(INVOICES, params={"account_id": account}, headers=auth(other_key))
    assert response.status_code == 404
    response = await post(client, key, f"/invoices/{inv['id']}/finalize")
    assert response.status_code == 403
    # The admin filters by account.
    assert [i["id"] for i in await list_invoices(client, admin_key, account_id=account)] == [
        inv["id"]
    ]
    assert await list_invoices(client, admin_key, account_id=other) == []


async def test_one_batch_closes_many_accounts_each_as_alone(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Period close loads, locks and finalizes a batch of subscriptions together: each
    account still gets its own usage, credit and clock."""
    monkeypatch.setattr(invoices, "finalize_after", timedelta(0))
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    # Fixture clock: Jan 31 12:00; periods end Feb 28 12:00.
    heavy, heavy_key = await owner(client, admin_key)
    credited, credited_key = await owner(client, admin_key)
    quiet, quiet_key = await owner(client, admin_key)
    clock_id, frozen, frozen_key = await clocked_account(client, admin_key, "2026-01-31T12:00:00Z")
    for key in (heavy_key, credited_key, quiet_key, frozen_key):
        await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    clock.set(datetime(2026, 2, 6, tzinfo=UTC))
    await track(client, heavy_key, "gpt-4o-mini", 1000, "2026-02-05T00:00:00Z", n=2)
    await track(client, credited_key, "gpt-4o-mini", 600, "2026-02-05T00:00:00Z", n=2)
    response = await client.post(
        f"{API}/accounts/{credited}/balance-adjustments",
        json={"amount_minor": 1000, "currency": "USD", "description": "goodwill"},
        headers=auth(admin_key),
    )
    assert response.status_code == 201, response.text
    clock.set(datetime(2026, 3, 2, tzinfo=UTC))
    done = await ok(client, admin_key, "/invoices/generate", {})
    # No worker ran: the four first invoices, and three renewals with their cycle invoices
    # (the test clock's account is still in January), all finalized in the batch.
    assert (done["subscriptions"], done["renewed"], done["created"], done["finalized"]) == (
        4,
        3,
        7,
        7,
    )

    async def cycle_of(key: str) -> dict[str, Any]:
        reasons = {i["billing_reason"]: i["id"] for i in await list_invoices(client, key)}
        return await invoice(client, key, reasons["subscription_cycle"])

    heavy_cycle = await cycle_of(heavy_key)
    assert kinds(heavy_cycle) == [("subscription_fee", 5000), ("overage_tokens", 500)]
    credited_cycle = await cycle_of(credited_key)
    assert kinds(credited_cycle) == [("subscription_fee", 5000), ("overage_tokens", 100)]
    # The credit went to the first invoice to finalize, the creation invoice, and only there.
    assert credited_cycle["balance_applied_minor"] == 0
    created = {i["billing_reason"]: i for i in await list_invoices(client, credited_key)}
    credited_first = await invoice(client, credited_key, created["subscription_create"]["id"])
    assert (credited_first["balance_applied_minor"], credited_first["amount_due_minor"]) == (
        1000,
        4000,
    )
    quiet_cycle = await cycle_of(quiet_key)
    assert kinds(quiet_cycle) == [("subscription_fee", 5000)]
    assert quiet_cycle["balance_applied_minor"] == 0
    for cycle in (heavy_cycle, credited_cycle, quiet_cycle):
        check_sums(cycle)
        assert cycle["status"] == "open" and cycle["period_end"] == "2026-02-28T12:00:00Z"
    [first] = await list_invoices(client, frozen_key)
    assert (first["billing_reason"], first["status"]) == ("subscription_create", "open")
    # One gapless run of numbers over the batch's real invoices; the test clock's account
    # numbers in a series of its own.
    async with billing.db.sessions() as session:
        rows = (await session.execute(select(Invoice.series, Invoice.sequence))).all()
    assert sorted(n for series, n in rows if series == "INV-2026") == list(range(1, 7))
    assert [(s, n) for s, n in rows if s != "INV-2026"] == [("TEST-INV-2026", 1)]
    again = await ok(client, admin_key, "/invoices/generate", {})
    assert (again["renewed"], again["created"], again["existing"]) == (0, 0, 7)


@pytest.mark.parametrize("finalize_now", [False, True])
async def test_close_period_catching_up_several_renewals_invoices_every_closed_period(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    finalize_now: bool,
) -> None:
    if finalize_now:
        monkeypatch.setattr(invoices, "finalize_after", timedelta(0))
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    account, key = await owner(client, admin_key)
    # The fixture clock: Jan 31 12:00, so periods end Feb 28 12:00 and Mar 31 12:00.
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    clock.set(datetime(2026, 2, 6, tzinfo=UTC))
    await track(client, key, "gpt-4o-mini", 1000, "2026-02-05T00:00:00Z", n=2)  # 1,000 over
    clock.set(datetime(2026, 3, 6, tzinfo=UTC))
    await track(client, key, "gpt-4o-mini", 1000, "2026-03-05T00:00:00Z", n=3)  # 2,000 over
    # No worker ran for two periods: both renewals are overdue at the close.
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    done = await ok(client, admin_key, "/invoices/generate", {"account_id": account})
    assert (done["renewed"], done["created"]) == (2, 3)
    found = [
        await invoice(client, key, i["id"]) for i in reversed(await list_invoices(client, key))
    ]
    assert [(i["billing_reason"], i["period_start"][:10], kinds(i)) for i in found] == [
        ("subscription_create", "2026-01-31", [("subscription_fee", 5000)]),
        # Each closed period has its own invoice: its overage, and the fee its renewal recorded.
        ("subscription_cycle", "2026-01-31", [("subscription_fee", 5000), ("overage_tokens", 500)]),
        (
            "subscription_cycle",
            "2026-02-28",
            [("subscription_fee", 5000), ("overage_tokens", 1000)],
        ),
    ]
    for i in found:
        check_sums(i)
    if finalize_now:  # numbered in the order of their periods
        assert [i["number"] for i in found] == [f"INV-2026-00000{n}" for n in (1, 2, 3)]
    # The jobs the renewals enqueued, and a rerun, create nothing more.
    await billing.worker().drain()
    again = await ok(client, admin_key, "/invoices/generate", {})
    assert (again["renewed"], again["created"]) == (0, 0)
    async with billing.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Invoice)) == 3


async def test_period_close_invoices_the_period_a_billing_cycle_change_ended(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    # The change to monthly at the year's end moves the anchor to that end: the closed year
    # cannot be told from the anchor, the renewal that closed it says it.
    prices = [
        {"currency": "USD", "amount_minor": 2999},
        {"currency": "USD", "interval_count": 12, "amount_minor": 29990},
    ]
    await add_plan(client, admin_key, code="team", name="Team", prices=prices)
    account, key = await owner(client, admin_key)
    created = await subscribe(client, key, plan_type="team", billing_cycle="yearly")
    clock.set(datetime(2026, 7, 31, 12, tzinfo=UTC))
    change = {"billing_cycle": "monthly"}
    assert (
        await ok(client, key, f"/subscriptions/{created['subscription']['id']}/change", change)
    )["when"] == "period_end"
    clock.set(datetime(2027, 2, 2, 12, tzinfo=UTC))  # no worker ran: the operator closes
    done = await ok(client, admin_key, "/invoices/generate", {"account_id": account})
    assert done["renewed"] == 1
    await billing.worker().drain()
    found = {
        (i["billing_reason"], i["period_start"], i["period_end"]): i["id"]
        for i in await list_invoices(client, key)
    }
    year = ("subscription_cycle", "2026-01-31T12:00:00Z", "2027-01-31T12:00:00Z")
    assert year in found, found
    assert ("subscription_fee", 2999) in kinds(await invoice(client, key, found[year]))
