"""An account with one object of every kind, made through the API where the API can make it
(payments and payment methods need a provider, so those rows are written directly).

The fuzz tests and the tenant-isolation matrix start from it: ids that exist, owned by a
known account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from aihub_billing.kit.ids import new_id, new_token
from aihub_billing.models import Payment, PaymentMethodRecord
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth, create_account, issue_key
from tests.creditnotes.helpers import make_invoice


@dataclass(frozen=True)
class Tenant:
    account_id: str
    owner_key: str
    owner_key_id: str
    member_id: str
    billing_key_id: str
    subscription_id: str
    invoice_id: str
    credit_note_id: str
    payment_id: str
    payment_method_id: str
    reservation_id: str


@dataclass(frozen=True)
class Operator:
    """Global, operator-owned objects."""

    test_clock_id: str
    coupon_code: str
    plan_code: str


async def _ok(
    client: httpx.AsyncClient, key: str, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    response = await client.request(method, f"{API}{path}", json=body, headers=auth(key))
    assert response.status_code in (200, 201), f"{method} {path}: {response.text}"
    result: dict[str, Any] = response.json()
    return result


async def make_tenant(
    client: httpx.AsyncClient, billing: BillingService, admin_key: str, name: str
) -> Tenant:
    account = await create_account(client, admin_key, name=name, email=f"{name}@example.test")
    account_id = account["id"]
    owner_key = await issue_key(client, admin_key, account_id, "owner")
    listed = await client.get(f"{API}/accounts/{account_id}/api-keys", headers=auth(admin_key))
    owner_key_id = listed.json()[0]["id"]
    member = await _ok(
        client,
        owner_key,
        "POST",
        f"/accounts/{account_id}/members",
        {"email": f"dev@{name}.example.test", "name": f"{name} dev"},
    )
    billing_key = await _ok(
        client, owner_key, "POST", f"/accounts/{account_id}/api-keys", {"role": "billing"}
    )
    subscription = await _ok(
        client,
        owner_key,
        "POST",
        "/subscriptions",
        {
            "plan_type": "pro",
            "billing_cycle": "monthly",
            "payment_provider": "stripe",
            "payment_method_id": "pm_123",
        },
    )
    events = [
        {"model": "gpt-4o-mini", "input_tokens": 100 + i, "output_tokens": 20, "user_id": "u1"}
        for i in range(5)
    ]
    await _ok(client, owner_key, "POST", "/usage/batch", {"events": events})
    check = await _ok(
        client, owner_key, "POST", "/quota/check", {"model": "gpt-4o-mini", "estimated_tokens": 50}
    )
    invoice_id, _ = await make_invoice(billing, account_id, [(2500, None), (500, None)])
    note = await _ok(
        client,
        owner_key,
        "POST",
        f"/invoices/{invoice_id}/credit-notes",
        {"reason": "order_change", "outcome": "credit", "amount_minor": 100},
    )
    method_id, payment_id = await _payment_rows(billing, account_id, invoice_id)
    return Tenant(
        account_id=account_id,
        owner_key=owner_key,
        owner_key_id=owner_key_id,
        member_id=member["id"],
        billing_key_id=billing_key["id"],
        subscription_id=subscription["subscription"]["id"],
        invoice_id=invoice_id,
        credit_note_id=note["id"],
        payment_id=payment_id,
        payment_method_id=method_id,
        reservation_id=check["reservation_id"],
    )


async def _payment_rows(
    billing: BillingService, account_id: str, invoice_id: str
) -> tuple[str, str]:
    """A saved card and a succeeded payment of the invoice, as a provider would leave them."""
    now = billing.clock.now()
    method = PaymentMethodRecord(
        id=new_id("pm", now),
        account_id=account_id,
        provider="stripe",
        provider_method_id=f"pm_{new_token(8)}",
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=2030,
        status="active",
        created_at=now,
    )
    payment = Payment(
        id=new_id("pay", now),
        account_id=account_id,
        provider="stripe",
        provider_payment_id=f"pi_{new_token(8)}",
        payment_method_id=method.id,
        invoice_id=invoice_id,
        amount_minor=3000,
        currency="USD",
        refunded_minor=0,
        status="succeeded",
        status_at=now - timedelta(minutes=1),
        created_at=now,
        updated_at=now,
    )
    async with billing.transaction() as session:
        session.add(method)
        await session.flush()
        session.add(payment)
    return method.id, payment.id


async def make_operator_objects(client: httpx.AsyncClient, admin_key: str) -> Operator:
    clock = await _ok(
        client, admin_key, "POST", "/test-clocks", {"frozen_time": "2026-01-31T12:00:00Z"}
    )
    coupon = await _ok(
        client,
        admin_key,
        "POST",
        "/coupons",
        {"code": "WELCOME10", "percent_off": "10", "duration": "once"},
    )
    return Operator(test_clock_id=clock["id"], coupon_code=coupon["code"], plan_code="pro")
