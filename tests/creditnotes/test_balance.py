"""The account balance on SQLite and PostgreSQL: credit, consume (also concurrently), restore
after a void, and the operator's adjustments."""

from __future__ import annotations

import asyncio

import httpx

from aihub_billing.creditnotes import balance
from aihub_billing.models import BalanceTransaction
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, issue_key
from tests.creditnotes.helpers import balance_of, count, credited, make_invoice, owner


async def adjust(
    client: httpx.AsyncClient, key: str, account_id: str, amount: int, currency: str = "USD"
) -> httpx.Response:
    return await client.post(
        f"{API}/accounts/{account_id}/balance-adjustments",
        json={"amount_minor": amount, "currency": currency, "description": "goodwill"},
        headers=auth(key),
    )


async def test_adjustments_never_take_the_balance_below_zero(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    added = await adjust(client, admin_key, account, 500)
    assert added.status_code == 201 and added.json()["kind"] == "adjustment"
    assert (await adjust(client, admin_key, account, -200)).status_code == 201
    refused = await adjust(client, admin_key, account, -301)
    assert refused.status_code == 409 and refused.json()["code"] == "balance_insufficient"
    assert (await adjust(client, admin_key, account, 700, "EUR")).status_code == 201
    assert await balance_of(client, key, account) == {"EUR": 700, "USD": 300}

    assert (await adjust(client, key, account, 100)).status_code == 403  # owners may not
    for amount, currency in ((0, "USD"), (5, "ZZZ")):
        bad = await adjust(client, admin_key, account, amount, currency)
        assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    missing = await adjust(client, admin_key, "acct_missing", 100)
    assert missing.status_code == 404 and missing.json()["code"] == "account_not_found"
    assert await count(billing, BalanceTransaction) == 3


async def test_an_invoice_consumes_the_balance_and_a_void_gives_it_back(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    paid, _ = await make_invoice(billing, account, [(1000, None)])
    await credited(client, key, paid, {"amount_minor": 700})  # 700 USD of credit
    first, _ = await make_invoice(billing, account, [(500, None)], status="open")
    second, _ = await make_invoice(billing, account, [(500, None)], status="open")
    ctx = billing.context()
    async with billing.transaction() as session:
        assert await balance.balance(session, account, "usd") == 700
        taken = await balance.consume(
            session, ctx, account_id=account, currency="USD", invoice_id=first, up_to_minor=500
        )
        assert taken == 500
        taken = await balance.consume(
            session, ctx, account_id=account, currency="USD", invoice_id=second, up_to_minor=500
        )
        assert taken == 200
        none = await balance.consume(
            session, ctx, account_id=account, currency="USD", invoice_id=second, up_to_minor=500
        )
        other_currency = await balance.consume(
            session, ctx, account_id=account, currency="EUR", invoice_id=second, up_to_minor=500
        )
        assert none == other_currency == 0
        assert await balance.balance(session, account, "USD") == 0
    async with billing.transaction() as session:
        assert await balance.restore(session, ctx, first) == 500
        assert await balance.restore(session, ctx, first) == 0  # once only
        assert await balance.restore(session, ctx, "inv_never_consumed") == 0
    view = (await client.get(f"{API}/accounts/{account}/balance", headers=auth(key))).json()
    assert view["balances"] == [{"currency": "USD", "amount_minor": 500}]
    assert [
        (t["kind"], t["amount_minor"], t["invoice_id"]) for t in view["recent_transactions"]
    ] == [
        ("invoice_voided", 500, first),
        ("invoice_applied", -200, second),
        ("invoice_applied", -500, first),
        ("credit_note", 700, paid),
    ]
    billing_key = await issue_key(client, admin_key, account, "billing")
    assert await balance_of(client, billing_key, account) == {"USD": 500}
    assert await balance_of(client, admin_key, account) == {"USD": 500}


async def test_concurrent_consumers_never_take_more_than_the_balance(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, _ = await owner(client, admin_key)
    assert (await adjust(client, admin_key, account, 1000)).status_code == 201
    invoices = [
        (await make_invoice(billing, account, [(300, None)], status="open"))[0] for _ in range(6)
    ]

    async def take(invoice_id: str) -> int:
        async with billing.transaction() as session:
            return await balance.consume(
                session,
                billing.context(),
                account_id=account,
                currency="USD",
                invoice_id=invoice_id,
                up_to_minor=300,
            )

    taken = await asyncio.gather(*(take(i) for i in invoices))
    assert sum(taken) == 1000 and sorted(taken) == [0, 0, 100, 300, 300, 300]
    async with billing.db.sessions() as session:
        assert await balance.balance(session, account, "USD") == 0
