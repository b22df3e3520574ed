"""Invoices and credit notes of accounts on test clocks are numbered in series of their own
(`TEST-INV-{year}`, `TEST-CN-{year}`): a simulation never takes a number of the real, gapless
series of any year, past or future."""

from __future__ import annotations

import httpx

from aihub_billing.service import BillingService
from tests.creditnotes.helpers import credited
from tests.invoices.helpers import advance, clocked_account, list_invoices
from tests.subscriptions.helpers import SEED_BODY, ok, owner


async def first_invoice_number(client: httpx.AsyncClient, key: str) -> tuple[str, str | None]:
    [first] = await list_invoices(client, key)
    return first["id"], first["number"]


async def test_test_clock_documents_never_take_real_numbers(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    # A simulation in 2027 and one in the past, both before any real invoice exists.
    for when, later in (
        ("2027-03-01T00:00:00Z", "2027-03-01T02:00:00Z"),
        ("2020-01-01T00:00:00Z", "2020-01-01T02:00:00Z"),
    ):
        clock_id, _, key = await clocked_account(client, admin_key, when)
        await ok(client, key, "/subscriptions", SEED_BODY)
        await advance(client, admin_key, clock_id, later)  # generated, then finalized
        inv, number = await first_invoice_number(client, key)
        assert number == f"TEST-INV-{when[:4]}-000001"
        paid = await ok(client, admin_key, f"/invoices/{inv}/mark-paid", {})
        assert paid["status"] == "paid"
        note = await credited(client, key, inv, {"outcome": "credit", "amount_minor": 100})
        assert note["number"] == f"TEST-CN-{when[:4]}-000001"

    # The real series are untouched: the first real invoice is number 1 of its year.
    _, key = await owner(client, admin_key)
    await ok(client, key, "/subscriptions", SEED_BODY)
    await billing.worker().drain()  # generates the first invoice, a draft
    inv, number = await first_invoice_number(client, key)
    assert number is None
    finalized = await ok(client, admin_key, f"/invoices/{inv}/finalize", {})
    assert finalized["number"] == f"INV-{billing.clock.now().year}-000001"
