"""Helpers for the credit note tests: accounts through the API, invoices straight through the
ORM (the invoice generator is another domain), requests and lookups."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from aihub_billing.kit.ids import new_id
from aihub_billing.kit.money import minor_to_decimal, round_to_minor
from aihub_billing.models import Invoice, InvoiceLine
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key

Line = tuple[int, Decimal | None]  # (amount_minor, tax_rate)


async def owner(
    client: httpx.AsyncClient, admin_key: str, currency: str = "USD"
) -> tuple[str, str]:
    """A new account and an owner key for it."""
    account = await create_account(client, admin_key, currency=currency)
    return account["id"], await issue_key(client, admin_key, account["id"], "owner")


def line_tax(amount_minor: int, rate: Decimal | None, currency: str) -> int:
    if rate is None:
        return 0
    return round_to_minor(minor_to_decimal(amount_minor, currency) * rate, currency)


async def make_invoice(
    billing: BillingService,
    account_id: str,
    lines: list[Line],
    *,
    status: str = "paid",
    currency: str = "USD",
    balance_applied_minor: int = 0,
) -> tuple[str, list[str]]:
    """An invoice with numbered lines whose totals are the integer sums of the lines."""
    now = billing.clock.now()
    invoice_id = new_id("inv", now)
    taxes = [line_tax(amount, rate, currency) for amount, rate in lines]
    subtotal = sum(amount for amount, _ in lines)
    tax = sum(taxes)
    total = subtotal + tax
    due = total - balance_applied_minor if status == "open" else 0
    rows: list[InvoiceLine] = []
    for position, ((amount, rate), line_tax_minor) in enumerate(zip(lines, taxes, strict=True)):
        precise = minor_to_decimal(amount, currency)
        rows.append(
            InvoiceLine(
                id=new_id("invl", now),
                invoice_id=invoice_id,
                position=position,
                kind="subscription_fee",
                description=f"Line {position + 1}",
                period_start=now,
                period_end=now,
                quantity=Decimal(1),
                unit_price=precise,
                amount=precise,
                amount_minor=amount,
                tax_rate=rate,
                tax_minor=line_tax_minor,
            )
        )
    async with billing.transaction() as session:
        session.add(
            Invoice(
                id=invoice_id,
                account_id=account_id,
                subscription_id=None,
                billing_reason="manual",
                status=status,
                currency=currency,
                period_start=now,
                period_end=now,
                number=f"T-{invoice_id}",
                subtotal_minor=subtotal,
                tax_minor=tax,
                total_minor=total,
                balance_applied_minor=balance_applied_minor,
                amount_due_minor=due,
                amount_paid_minor=total - balance_applied_minor if status == "paid" else 0,
                amount_credited_minor=0,
                attempt_count=0,
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        session.add_all(rows)
    return invoice_id, [r.id for r in rows]


async def invoice(billing: BillingService, invoice_id: str) -> Invoice:
    async with billing.db.sessions() as session:
        row = await session.get(Invoice, invoice_id)
        assert row is not None
        return row


async def count(billing: BillingService, model: type) -> int:
    async with billing.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def credit(
    client: httpx.AsyncClient, key: str, invoice_id: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(
        f"{API}/invoices/{invoice_id}/credit-notes",
        json={"reason": "order_change", "outcome": "credit", **body},
        headers=auth(key, **headers),
    )


async def credited(
    client: httpx.AsyncClient, key: str, invoice_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await credit(client, key, invoice_id, body)
    assert response.status_code == 201, response.text
    note: dict[str, Any] = response.json()
    return note


async def get(client: httpx.AsyncClient, key: str, path: str, **params: str) -> httpx.Response:
    return await client.get(f"{API}{path}", params=params, headers=auth(key))


async def balance_of(client: httpx.AsyncClient, key: str, account_id: str) -> dict[str, int]:
    response = await get(client, key, f"/accounts/{account_id}/balance")
    assert response.status_code == 200, response.text
    return {b["currency"]: b["amount_minor"] for b in response.json()["balances"]}
