"""Credit notes through the HTTP API on SQLite and PostgreSQL: by line, by amount, tax,
over-credit, outcomes, numbering, currencies, isolation and bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import AuditEntry, BalanceTransaction, CreditNote, InvoiceSequence
from aihub_billing.service import BillingService
from tests.api.helpers import issue_key
from tests.creditnotes.helpers import (
    balance_of,
    count,
    credit,
    credited,
    get,
    invoice,
    make_invoice,
    owner,
)

RATE = Decimal("0.2")


async def test_a_whole_line_credits_its_whole_tax_to_the_balance(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, (taxed, exempt) = await make_invoice(billing, account, [(1000, RATE), (500, None)])
    note = await credited(client, key, inv, {"lines": [{"invoice_line_id": taxed}]})
    assert note["number"] == "CN-2026-000001" and note["currency"] == "USD"
    assert (note["subtotal_minor"], note["tax_minor"], note["total_minor"]) == (1000, 200, 1200)
    assert [(x["invoice_line_id"], x["amount_minor"], x["tax_minor"]) for x in note["lines"]] == [
        (taxed, 1000, 200)
    ]
    assert note["credited_to_balance_minor"] == 1200 and note["refunded_minor"] == 0
    assert note["applied_to_amount_due_minor"] == 0
    assert await balance_of(client, key, account) == {"USD": 1200}
    row = await invoice(billing, inv)
    assert row.amount_credited_minor == 1200 and row.status == "paid"

    # The exempt line carries no tax; the same line cannot be credited twice.
    second = await credited(client, key, inv, {"lines": [{"invoice_line_id": exempt}]})
    assert (second["number"], second["tax_minor"], second["total_minor"]) == (
        "CN-2026-000002",
        0,
        500,
    )
    again = await credit(client, key, inv, {"lines": [{"invoice_line_id": taxed}]})
    assert again.status_code == 422 and again.json()["code"] == "credit_note_exceeds_creditable"
    assert (await invoice(billing, inv)).amount_credited_minor == 1700

    shown = await get(client, key, f"/credit-notes/{note['id']}")
    assert shown.status_code == 200 and shown.json() == note
    balance = (await get(client, key, f"/accounts/{account}/balance")).json()
    assert [(t["kind"], t["amount_minor"]) for t in balance["recent_transactions"]] == [
        ("credit_note", 500),
        ("credit_note", 1200),
    ]
    async with billing.db.sessions() as session:
        actions = set(
            (
                await session.execute(
                    select(AuditEntry.action).where(AuditEntry.account_id == account)
                )
            )
            .scalars()
            .all()
        )
    assert {"credit_note.created", "invoice.credited", "balance.credit_note"} <= actions


async def test_a_partial_line_credits_rounded_tax_and_the_rest_takes_the_remaining_tax(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, (line,) = await make_invoice(billing, account, [(1000, Decimal("0.19"))])  # tax 190
    part = await credited(
        client, key, inv, {"lines": [{"invoice_line_id": line, "amount_minor": 333}]}
    )
    # 3.33 x 0.19 = 0.6327 -> 63
    assert (part["subtotal_minor"], part["tax_minor"]) == (333, 63)
    rest = await credited(client, key, inv, {"lines": [{"invoice_line_id": line}]})
    assert (rest["subtotal_minor"], rest["tax_minor"]) == (667, 127)
    assert part["tax_minor"] + rest["tax_minor"] == 190
    more = await credit(client, key, inv, {"lines": [{"invoice_line_id": line, "amount_minor": 1}]})
    assert more.status_code == 422 and more.json()["code"] == "credit_note_exceeds_creditable"
    assert (await invoice(billing, inv)).amount_credited_minor == 1190


async def test_a_plain_amount_is_tax_inclusive_and_split_by_the_invoice_tax_ratio(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, RATE), (500, None)])  # 1700, tax 200
    note = await credited(client, key, inv, {"amount_minor": 850})
    # 8.50 x 200 / 1700 = 1.00 -> 100 of tax, 750 before tax
    assert (note["subtotal_minor"], note["tax_minor"], note["total_minor"]) == (750, 100, 850)
    assert note["lines"][0]["invoice_line_id"] is None
    assert note["lines"][0]["description"] == f"Credit against invoice T-{inv}"
    over = await credit(client, key, inv, {"amount_minor": 851})
    assert over.status_code == 422 and over.json()["code"] == "credit_note_exceeds_creditable"
    rest = await credited(client, key, inv, {"amount_minor": 850})
    assert rest["tax_minor"] == 100 and (await invoice(billing, inv)).amount_credited_minor == 1700


async def test_over_credit_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, (line, other) = await make_invoice(billing, account, [(1000, RATE), (500, RATE)])
    cases = [
        {"amount_minor": 1801},
        {"lines": [{"invoice_line_id": line, "amount_minor": 1001}]},
        {"lines": [{"invoice_line_id": line}, {"invoice_line_id": other, "amount_minor": 501}]},
    ]
    for body in cases:
        refused = await credit(client, key, inv, body)
        assert refused.status_code == 422, body
        assert refused.json()["code"] == "credit_note_exceeds_creditable"
    assert await count(billing, CreditNote) == 0 and await count(billing, BalanceTransaction) == 0
    assert await count(billing, InvoiceSequence) == 0
    # A plain amount counts against the lines too: after 1000 off the invoice, the lines' 1800
    # no longer fit in what remains (800).
    await credited(client, key, inv, {"amount_minor": 1000})
    refused = await credit(client, key, inv, {"lines": [{"invoice_line_id": line}]})
    assert refused.status_code == 422 and refused.json()["code"] == "credit_note_exceeds_creditable"
    ok = await credited(client, key, inv, {"lines": [{"invoice_line_id": other}]})
    assert ok["total_minor"] == 600


async def test_concurrent_credit_notes_never_exceed_the_creditable_amount(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)])
    answers = await asyncio.gather(
        *(credit(client, key, inv, {"amount_minor": 300}) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [201, 201, 201, 422, 422, 422]
    assert (await invoice(billing, inv)).amount_credited_minor == 900
    numbers = sorted(a.json()["number"] for a in answers if a.status_code == 201)
    assert numbers == ["CN-2026-000001", "CN-2026-000002", "CN-2026-000003"]
    assert await balance_of(client, key, account) == {"USD": 900}


async def test_on_an_open_invoice_the_credit_reduces_the_amount_due_first(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    # 1200 total, 400 of it paid from the balance already: 800 still owed.
    inv, (line,) = await make_invoice(
        billing, account, [(1000, RATE)], status="open", balance_applied_minor=400
    )
    first = await credited(client, key, inv, {"amount_minor": 500})
    assert first["applied_to_amount_due_minor"] == 500 and first["credited_to_balance_minor"] == 0
    assert (await invoice(billing, inv)).amount_due_minor == 300
    assert await balance_of(client, key, account) == {}
    second = await credited(client, key, inv, {"amount_minor": 700})
    assert second["applied_to_amount_due_minor"] == 300
    assert second["credited_to_balance_minor"] == 400
    row = await invoice(billing, inv)
    # Nothing is owed any more: the invoice is paid (by credit), and no collection follows.
    assert (row.amount_due_minor, row.amount_credited_minor, row.status) == (0, 1200, "paid")
    assert await balance_of(client, key, account) == {"USD": 400}


async def test_only_open_or_paid_invoices_take_credit_notes(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    for status in ("draft", "void", "uncollectible"):
        inv, _ = await make_invoice(billing, account, [(1000, RATE)], status=status)
        refused = await credit(client, key, inv, {"amount_minor": 100})
        assert refused.status_code == 409 and refused.json()["code"] == "invoice_not_creditable"


async def test_a_refund_needs_a_payment_through_a_processor(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, RATE)])
    refused = await credit(client, key, inv, {"amount_minor": 100, "outcome": "refund"})
    assert refused.status_code == 409 and refused.json()["code"] == "refund_not_possible"
    assert await count(billing, CreditNote) == 0
    # The refused note took no number.
    note = await credited(client, key, inv, {"amount_minor": 100})
    assert note["number"] == "CN-2026-000001"


async def test_numbers_are_gapless_per_year(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, clock: FrozenClock
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(10_000, None)])
    numbers = []
    for amount in (100, 99_999, 200, 0, 300):
        response = await credit(client, key, inv, {"amount_minor": amount})
        if response.status_code == 201:
            numbers.append(response.json()["number"])
    assert numbers == ["CN-2026-000001", "CN-2026-000002", "CN-2026-000003"]
    clock.set(datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    assert (await credited(client, key, inv, {"amount_minor": 1}))["number"] == "CN-2027-000001"
    assert (await credited(client, key, inv, {"amount_minor": 1}))["number"] == "CN-2027-000002"


async def test_zero_and_three_decimal_currencies(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key, currency="JPY")
    inv, (line,) = await make_invoice(billing, account, [(1000, Decimal("0.1"))], currency="JPY")
    note = await credited(
        client, key, inv, {"lines": [{"invoice_line_id": line, "amount_minor": 333}]}
    )
    assert (note["currency"], note["subtotal_minor"], note["tax_minor"]) == ("JPY", 333, 33)
    plain = await credited(client, key, inv, {"amount_minor": 110})  # 110 x 100/1100 = 10
    assert (plain["subtotal_minor"], plain["tax_minor"]) == (100, 10)
    assert await balance_of(client, key, account) == {"JPY": 476}

    kwd_account, kwd_key = await owner(client, admin_key, currency="KWD")
    inv, (line,) = await make_invoice(
        billing, kwd_account, [(12_345, Decimal("0.05"))], currency="KWD"
    )  # 12.345 KWD, tax 0.61725 -> 617 fils
    assert (await invoice(billing, inv)).tax_minor == 617
    note = await credited(
        client, kwd_key, inv, {"lines": [{"invoice_line_id": line, "amount_minor": 1001}]}
    )
    assert (note["subtotal_minor"], note["tax_minor"]) == (1001, 50)  # 0.05005 -> 50 fils
    mismatch = await credit(client, kwd_key, inv, {"amount_minor": 10, "currency": "USD"})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "currency_mismatch"
    same = await credit(client, kwd_key, inv, {"amount_minor": 10, "currency": "kwd"})
    assert same.status_code == 201, same.text


async def test_bad_input_is_a_problem_with_a_stable_code(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, (line,) = await make_invoice(billing, account, [(1000, RATE)])
    other_inv, (other_line,) = await make_invoice(billing, account, [(1000, RATE)])
    cases = [
        ({"lines": [{"invoice_line_id": "invl_nope"}]}, "invoice_line_not_found"),
        ({"lines": [{"invoice_line_id": other_line}]}, "invoice_line_not_found"),
        (
            {"lines": [{"invoice_line_id": line}, {"invoice_line_id": line}]},
            "duplicate_invoice_line",
        ),
        ({"amount_minor": 0}, "validation_error"),
        ({"amount_minor": -5}, "validation_error"),
        ({"lines": [{"invoice_line_id": line, "amount_minor": 0}]}, "validation_error"),
        ({"lines": []}, "validation_error"),
        ({"amount_minor": 10, "lines": [{"invoice_line_id": line}]}, "validation_error"),
        ({}, "validation_error"),
        ({"amount_minor": 10, "reason": "because"}, "validation_error"),
        ({"amount_minor": 10, "outcome": "cash"}, "validation_error"),
        ({"amount_minor": 10, "currency": "XXY"}, "validation_error"),
        ({"amount_minor": 10, "currency": "EUR"}, "currency_mismatch"),
    ]
    for body, code in cases:
        response = await credit(client, key, inv, body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code, body
    missing = await credit(client, key, "inv_missing", {"amount_minor": 10})
    assert missing.status_code == 404 and missing.json()["code"] == "invoice_not_found"
    assert await count(billing, CreditNote) == 0
    assert (await invoice(billing, other_inv)).amount_credited_minor == 0


async def test_other_accounts_see_nothing_and_members_may_not(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    other, other_key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, RATE)])
    note = await credited(client, key, inv, {"amount_minor": 100})
    theirs_inv, _ = await make_invoice(billing, other, [(1000, RATE)])
    theirs = await credited(client, other_key, theirs_inv, {"amount_minor": 200})

    refused = await credit(client, other_key, inv, {"amount_minor": 100})
    assert refused.status_code == 404 and refused.json()["code"] == "invoice_not_found"
    hidden = await get(client, other_key, f"/credit-notes/{note['id']}")
    assert hidden.status_code == 404 and hidden.json()["code"] == "credit_note_not_found"
    balance = await get(client, other_key, f"/accounts/{account}/balance")
    assert balance.status_code == 404 and balance.json()["code"] == "account_not_found"
    listed = (await get(client, other_key, "/credit-notes")).json()
    assert [n["id"] for n in listed["items"]] == [theirs["id"]]
    assert (await get(client, other_key, "/credit-notes", account_id=account)).json()["items"] == []

    member = await issue_key(client, admin_key, account, "member")
    forbidden = await credit(client, member, inv, {"amount_minor": 100})
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
    assert (await get(client, member, "/credit-notes")).status_code == 403
    assert (await get(client, member, f"/accounts/{account}/balance")).status_code == 403
    billing_key = await issue_key(client, admin_key, account, "billing")
    assert (await credit(client, billing_key, inv, {"amount_minor": 100})).status_code == 201

    everything = (await get(client, admin_key, "/credit-notes")).json()["items"]
    assert len(everything) == 3
    mine = (await get(client, admin_key, "/credit-notes", account_id=account)).json()["items"]
    assert len(mine) == 2


async def test_credit_notes_page_and_filter_by_invoice(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    first, _ = await make_invoice(billing, account, [(1000, None)])
    second, _ = await make_invoice(billing, account, [(1000, None)])
    made = [await credited(client, key, first, {"amount_minor": 10}) for _ in range(3)]
    await credited(client, key, second, {"amount_minor": 10})
    page = (await get(client, key, "/credit-notes", invoice_id=first, limit="2")).json()
    assert [n["id"] for n in page["items"]] == [made[0]["id"], made[1]["id"]]
    rest = (
        await get(client, key, "/credit-notes", invoice_id=first, cursor=page["next_cursor"])
    ).json()
    assert [n["id"] for n in rest["items"]] == [made[2]["id"]] and rest["next_cursor"] is None
    bad = await get(client, key, "/credit-notes", cursor="!!")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


async def test_a_replayed_create_makes_one_credit_note(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    inv, _ = await make_invoice(billing, account, [(1000, None)])
    body = {"amount_minor": 100}
    first = await credit(client, key, inv, body, **{"Idempotency-Key": "cn-1"})
    second = await credit(client, key, inv, body, **{"Idempotency-Key": "cn-1"})
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert await count(billing, CreditNote) == 1
    assert await balance_of(client, key, account) == {"USD": 100}


async def test_concurrent_notes_on_different_invoices_take_distinct_gapless_numbers(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    invoices = [(await make_invoice(billing, account, [(1000, None)]))[0] for _ in range(5)]
    answers = await asyncio.gather(
        *(credit(client, key, i, {"amount_minor": 10}) for i in invoices)
    )
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    assert sorted(a.json()["number"] for a in answers) == [f"CN-2026-{n:06d}" for n in range(1, 6)]
