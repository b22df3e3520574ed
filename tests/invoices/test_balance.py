"""Invoices and the account balance: credit is consumed at finalization, returned by void,
and a credit note that covers an open invoice pays it."""

from __future__ import annotations

import httpx

from tests.api.helpers import API, auth
from tests.invoices.helpers import advance, check_sums, clocked_account, invoice, list_invoices
from tests.subscriptions.helpers import SEED_BODY, ok


async def balances(client: httpx.AsyncClient, key: str, account: str) -> dict[str, int]:
    view = (await client.get(f"{API}/accounts/{account}/balance", headers=auth(key))).json()
    return {b["currency"]: b["amount_minor"] for b in view["balances"] if b["amount_minor"]}


async def test_credit_pays_the_next_invoice_and_a_void_gives_it_back(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, account, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [first] = await list_invoices(client, key)
    await ok(client, admin_key, f"/invoices/{first['id']}/mark-paid")
    note = {"reason": "product_unsatisfactory", "outcome": "credit", "amount_minor": 1000}
    await ok(client, key, f"/invoices/{first['id']}/credit-notes", note)
    assert await balances(client, key, account) == {"USD": 1000}

    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    cycle = next(i for i in await list_invoices(client, key) if i["id"] != first["id"])
    cycle = await invoice(client, key, cycle["id"])
    assert (cycle["status"], cycle["total_minor"]) == ("open", 2999)
    assert (cycle["balance_applied_minor"], cycle["amount_due_minor"]) == (1000, 1999)
    check_sums(cycle)
    assert await balances(client, key, account) == {}

    await ok(client, admin_key, f"/invoices/{cycle['id']}/void")
    assert await balances(client, key, account) == {"USD": 1000}


async def test_credit_that_covers_the_whole_invoice_leaves_nothing_due(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, account, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [first] = await list_invoices(client, key)
    await ok(client, admin_key, f"/invoices/{first['id']}/mark-paid")
    note = {"reason": "duplicate", "outcome": "credit", "amount_minor": 2999}
    await ok(client, key, f"/invoices/{first['id']}/credit-notes", note)
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    cycle = next(i for i in await list_invoices(client, key) if i["id"] != first["id"])
    assert (cycle["status"], cycle["balance_applied_minor"], cycle["amount_due_minor"]) == (
        "paid",
        2999,
        0,
    )


async def test_a_credit_note_covering_an_open_invoice_pays_it(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, account, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", SEED_BODY)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [first] = await list_invoices(client, key)
    assert first["status"] == "open"
    half = {"reason": "order_change", "outcome": "credit", "amount_minor": 1500}
    await ok(client, key, f"/invoices/{first['id']}/credit-notes", half)
    shown = await invoice(client, key, first["id"])
    assert (shown["status"], shown["amount_due_minor"]) == ("open", 1499)
    rest = {"reason": "order_change", "outcome": "credit", "amount_minor": 1499}
    await ok(client, key, f"/invoices/{first['id']}/credit-notes", rest)
    shown = await invoice(client, key, first["id"])
    assert (shown["status"], shown["amount_due_minor"], shown["amount_credited_minor"]) == (
        "paid",
        0,
        2999,
    )
    assert await balances(client, key, account) == {}


async def test_a_negative_total_becomes_credit_that_the_next_invoice_consumes(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    clock_id, account, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    sub = (await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "enterprise"}))[
        "subscription"
    ]
    await advance(client, admin_key, clock_id, "2026-01-16T00:00:00Z")
    down = {"plan_type": "pro", "when": "immediate"}
    change = await ok(client, key, f"/subscriptions/{sub['id']}/change", down)
    prorated = sum(i["amount_minor"] for i in change["invoice_items"])
    assert prorated < -2999  # the unused enterprise days are worth more than a pro month
    await advance(client, admin_key, clock_id, "2026-02-01T02:00:00Z")
    cycle = await invoice(
        client,
        key,
        next(
            i["id"]
            for i in await list_invoices(client, key)
            if i["billing_reason"] == "subscription_cycle"
        ),
    )
    assert cycle["total_minor"] == 2999 + prorated < 0
    assert (cycle["status"], cycle["amount_due_minor"], cycle["balance_applied_minor"]) == (
        "paid",
        0,
        0,
    )
    credit = -cycle["total_minor"]
    assert await balances(client, key, account) == {"USD": credit}
    await advance(client, admin_key, clock_id, "2026-03-01T02:00:00Z")
    march = next(
        i
        for i in await list_invoices(client, key)
        if i["billing_reason"] == "subscription_cycle" and i["id"] != cycle["id"]
    )
    assert (march["balance_applied_minor"], march["amount_due_minor"]) == (
        credit,
        2999 - credit,
    )
    assert await balances(client, key, account) == {}
