"""A payment intent for an invoice is refused up front when the invoice cannot take it: a
draft, paid or void invoice takes no payment, and no invoice takes more than is still due.
Refused before anything is written or sent to the provider."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from aihub_billing.models import Invoice, Payment
from aihub_billing.service import BillingService
from tests.creditnotes.helpers import balance_of, make_invoice
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import owner_of_new_account, post

PAYABLE = ["open", "uncollectible"]
NOT_PAYABLE = ["draft", "paid", "void"]


async def invoice_in(
    billing: BillingService, account: str, status: str, *, paid_minor: int = 0
) -> str:
    """An invoice of 1,000 USD due in `status` (a paid one has all of it paid)."""
    invoice_id, _ = await make_invoice(billing, account, [(1000, None)], status="open")
    async with billing.transaction() as session:
        row = await session.get(Invoice, invoice_id)
        assert row is not None
        row.status = status
        row.amount_paid_minor = 1000 if status == "paid" else paid_minor
    return invoice_id


async def card(client: httpx.AsyncClient, key: str, stripe: StripeFake) -> str:
    token = stripe.add_payment_method()
    attached = await post(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    assert attached.status_code == 201, attached.text
    method_id: str = attached.json()["id"]
    return method_id


async def intent_for(
    client: httpx.AsyncClient, key: str, method_id: str, invoice_id: str, amount: int
) -> httpx.Response:
    body = {
        "amount_minor": amount,
        "currency": "USD",
        "provider": "stripe",
        "payment_method_id": method_id,
        "invoice_id": invoice_id,
    }
    return await post(client, key, "/payments/intents", body)


async def payments_count(billing: BillingService) -> int:
    async with billing.db.sessions() as session:
        query = select(func.count()).select_from(Payment)
        return int((await session.execute(query)).scalar_one())


def intents_sent(stripe: StripeFake) -> int:
    return sum(1 for m, p, *_ in stripe.requests if m == "POST" and p == "/v1/payment_intents")


@pytest.mark.parametrize("status", NOT_PAYABLE)
async def test_an_invoice_that_takes_no_payment_is_refused_before_the_provider(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    status: str,
) -> None:
    account, key = await owner_of_new_account(client, admin_key)
    method_id = await card(client, key, stripe_fake)
    invoice_id = await invoice_in(billing, account, status)

    refused = await intent_for(client, key, method_id, invoice_id, 1000)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "invoice_not_payable"
    assert status in problem["detail"]
    assert await payments_count(billing) == 0 and intents_sent(stripe_fake) == 0


@pytest.mark.parametrize("status", PAYABLE)
async def test_open_and_uncollectible_invoices_take_what_is_still_due(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    status: str,
) -> None:
    account, key = await owner_of_new_account(client, admin_key)
    method_id = await card(client, key, stripe_fake)
    invoice_id = await invoice_in(billing, account, status, paid_minor=400)

    # 600 of the 1,000 are still due: more is refused, 600 or less is taken.
    over = await intent_for(client, key, method_id, invoice_id, 601)
    assert over.status_code == 409, over.text
    assert over.json()["code"] == "payment_exceeds_amount_due"
    assert "600" in over.json()["detail"]
    assert await payments_count(billing) == 0 and intents_sent(stripe_fake) == 0

    part = await intent_for(client, key, method_id, invoice_id, 250)
    assert part.status_code == 201, part.text
    rest = await intent_for(client, key, method_id, invoice_id, 600)
    assert rest.status_code == 201, rest.text
    assert rest.json()["invoice_id"] == invoice_id
    assert await payments_count(billing) == 2 and intents_sent(stripe_fake) == 2


async def test_an_open_invoice_with_nothing_left_due_is_not_payable(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    account, key = await owner_of_new_account(client, admin_key)
    method_id = await card(client, key, stripe_fake)
    invoice_id = await invoice_in(billing, account, "open", paid_minor=1000)

    refused = await intent_for(client, key, method_id, invoice_id, 1)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "invoice_not_payable"
    assert await payments_count(billing) == 0


def test_the_intent_route_declares_its_409s(billing: BillingService) -> None:
    from aihub_billing.main import create_app

    operation = create_app(billing.config).openapi()["paths"]["/api/v1/billing/payments/intents"]
    conflict = operation["post"]["responses"]["409"]
    assert "invoice_not_payable" in conflict["description"]
    assert "payment_exceeds_amount_due" in conflict["description"]


async def test_two_payments_in_flight_still_overpay_into_the_balance(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    """Each intent fits what is due when it is made; the one that succeeds after the invoice
    is paid is not lost: it is the account's overpayment credit."""
    account, key = await owner_of_new_account(client, admin_key)
    method_id = await card(client, key, stripe_fake)
    invoice_id = await invoice_in(billing, account, "open")
    first = await intent_for(client, key, method_id, invoice_id, 1000)
    second = await intent_for(client, key, method_id, invoice_id, 1000)
    assert (first.status_code, second.status_code) == (201, 201)
    for made in (first, second):
        confirmed = await post(client, key, f"/payments/{made.json()['id']}/confirm")
        assert confirmed.status_code == 200 and confirmed.json()["status"] == "succeeded"
    async with billing.db.sessions() as session:
        row = await session.get(Invoice, invoice_id)
        assert row is not None and (row.status, row.amount_paid_minor) == ("paid", 1000)
    assert await balance_of(client, key, account) == {"USD": 1000}
    # A third is refused up front now that the invoice is paid.
    third = await intent_for(client, key, method_id, invoice_id, 1)
    assert third.status_code == 409 and third.json()["code"] == "invoice_not_payable"
