"""A payment pays an invoice only in the invoice's own currency."""

from __future__ import annotations

import httpx

from aihub_billing.collection.service import collection
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import Payment
from aihub_billing.service import BillingService
from tests.collection.test_dunning import first_invoice, stripe_customer
from tests.invoices.helpers import advance
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import post
from tests.subscriptions.helpers import ok


async def open_invoice(
    client: httpx.AsyncClient, admin_key: str, stripe_fake: StripeFake
) -> tuple[str, str, dict[str, object]]:
    clock_id, key, _, method_id = await stripe_customer(client, admin_key, stripe_fake)
    await advance(client, admin_key, clock_id, "2026-01-01T00:30:00Z")  # the draft exists
    draft = await first_invoice(client, key)
    # Finalized by hand: its collection job waits on the clock.
    await ok(client, admin_key, f"/invoices/{draft['id']}/finalize")
    invoice = await first_invoice(client, key)
    assert (invoice["status"], invoice["currency"], invoice["amount_due_minor"]) == (
        "open",
        "USD",
        2999,
    )
    return key, method_id, invoice


async def test_a_payment_in_another_currency_is_refused_for_an_invoice(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    key, method_id, invoice = await open_invoice(client, admin_key, stripe_fake)
    # 2999 yen (about 20 dollars) must not pay a 29.99 dollar invoice.
    body = {
        "amount_minor": 2999,
        "currency": "JPY",
        "invoice_id": invoice["id"],
        "payment_method_id": method_id,
    }
    created = await post(client, key, "/payments/intents", body)
    assert created.status_code == 422, created.text
    assert created.json()["code"] == "currency_mismatch"
    assert stripe_fake.charges == []
    assert (await first_invoice(client, key))["status"] == "open"


async def test_a_succeeded_payment_in_another_currency_never_pays_the_invoice(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    key, _, invoice = await open_invoice(client, admin_key, stripe_fake)
    ctx = Context(SYSTEM, billing.clock)
    async with billing.db.sessions() as session:
        now = billing.clock.now()
        payment = Payment(
            id="pay_foreign_currency",
            account_id=invoice["account_id"],
            provider="stripe",
            provider_payment_id="pi_foreign",
            invoice_id=invoice["id"],
            amount_minor=2999,
            currency="JPY",
            refunded_minor=0,
            confirm_attempts=0,
            status="succeeded",
            created_at=now,
            updated_at=now,
        )
        session.add(payment)
        await session.flush()
        await collection.paid(session, ctx, payment)
        await session.commit()
    unpaid = await first_invoice(client, key)
    assert (unpaid["status"], unpaid["amount_paid_minor"]) == ("open", 0)
