"""Credit notes of an account on a test clock are at the clock's time, like its invoices: the
note's `created_at`, its number series (TEST-CN-{year}, apart from the real CN-{year}) and
the balance transactions it writes."""

from __future__ import annotations

from decimal import Decimal

import httpx

from aihub_billing.service import BillingService
from tests.creditnotes.helpers import credited, get, make_invoice, owner
from tests.subscriptions.helpers import ok


async def test_a_note_on_an_account_on_a_test_clock_takes_the_clocks_time_and_year(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    # The service clock is in January 2026; the account's test clock in March 2027.
    assert billing.clock.now().year == 2026
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2027-03-10T08:00:00Z"})
    account, key = await owner(client, admin_key)
    await ok(client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": account})
    inv, _ = await make_invoice(billing, account, [(1000, Decimal("0.2"))])

    note = await credited(client, key, inv, {"amount_minor": 300})
    assert (note["number"], note["created_at"]) == ("TEST-CN-2027-000001", "2027-03-10T08:00:00Z")
    response = await get(client, key, f"/credit-notes/{note['id']}")
    assert response.json()["created_at"] == "2027-03-10T08:00:00Z"

    # The clock moves into 2028: the next note opens that year's series.
    await ok(
        client,
        admin_key,
        f"/test-clocks/{clock['id']}/advance",
        {"frozen_time": "2028-01-02T00:00:00Z"},
    )
    later = await credited(client, key, inv, {"amount_minor": 200})
    assert (later["number"], later["created_at"]) == ("TEST-CN-2028-000001", "2028-01-02T00:00:00Z")

    # The balance credits (and an operator's adjustment) are at the clock's time too.
    await ok(
        client,
        admin_key,
        f"/accounts/{account}/balance-adjustments",
        {"amount_minor": -100, "currency": "USD", "description": "goodwill taken back"},
    )
    found = await get(client, key, f"/accounts/{account}/balance")
    assert found.status_code == 200, found.text
    assert [
        (t["kind"], t["amount_minor"], t["created_at"]) for t in found.json()["recent_transactions"]
    ] == [
        ("adjustment", -100, "2028-01-02T00:00:00Z"),
        ("credit_note", 200, "2028-01-02T00:00:00Z"),
        ("credit_note", 300, "2027-03-10T08:00:00Z"),
    ]


async def test_a_note_on_an_account_without_a_test_clock_keeps_the_service_clock(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    await ok(client, admin_key, "/test-clocks", {"frozen_time": "2027-03-10T08:00:00Z"})
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)])
    note = await credited(client, key, inv, {"amount_minor": 300})
    assert (note["number"], note["created_at"]) == ("CN-2026-000001", "2026-01-31T12:00:00Z")
