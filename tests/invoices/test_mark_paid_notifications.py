"""A payment recorded by hand (`mark-paid`, e.g. a bank transfer) tells the account as a
provider's payment does: `invoice.paid`, and `subscription.recovered` when it ends dunning;
each event once, whichever path pays the invoice."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from aihub_billing.models import Job
from aihub_billing.service import BillingService
from tests.collection.test_dunning import (
    first_invoice,
    notifications,
    stripe_customer,
    subscription_status,
)
from tests.collection.test_money_edges import succeeded
from tests.collection.test_payment_invoice_match import open_invoice
from tests.invoices.helpers import advance
from tests.payments import support
from tests.payments.fakes.stripe_server import StripeFake
from tests.subscriptions.helpers import ok

# The collection tests' fixtures: both provider fakes and a BillingService paying at them.
billing, stripe_fake = support.billing, support.stripe_fake
paypal_fake, paypal_key = support.paypal_fake, support.paypal_key


async def _deliveries(billing: BillingService, event_type: str) -> list[dict[str, Any]]:
    async with billing.db.sessions() as session:
        rows = await session.execute(select(Job).where(Job.name == "notifications.deliver"))
        return [
            {"payload": job.payload, "test_clock_id": job.test_clock_id}
            for job in rows.scalars()
            if job.payload["type"] == event_type
        ]


async def _past_due(
    client: httpx.AsyncClient, admin_key: str, stripe_fake: StripeFake
) -> tuple[str, str, dict[str, Any]]:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline")
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    assert await subscription_status(client, key) == ("past_due", "pro")
    return clock_id, key, await first_invoice(client, key)


async def test_marked_paid_by_hand_during_dunning_notifies_paid_and_recovered(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, unpaid = await _past_due(client, admin_key, stripe_fake)
    assert await notifications(billing) == ["invoice.payment_failed:1", "subscription.past_due"]
    # The customer paid by bank transfer; the operator records it.
    await ok(client, admin_key, f"/invoices/{unpaid['id']}/mark-paid", {"payment_id": "wire-1"})
    assert await subscription_status(client, key) == ("active", "pro")
    assert await notifications(billing) == [
        "invoice.payment_failed:1",
        "subscription.past_due",
        "invoice.paid",
        "subscription.recovered",
    ]
    [recovered] = await _deliveries(billing, "subscription.recovered")
    assert recovered["test_clock_id"] == clock_id  # run by the clock, as collection's
    assert recovered["payload"]["id"] == f"subscription.recovered:{unpaid['id']}"
    assert recovered["payload"]["data"]["subscription_id"] == unpaid["subscription_id"]
    [paid] = await _deliveries(billing, "invoice.paid")
    assert paid["payload"]["id"] == f"invoice.paid:{unpaid['id']}"
    assert (paid["payload"]["data"]["payment_id"], paid["payload"]["data"]["amount_minor"]) == (
        "wire-1",
        2999,
    )


async def test_a_provider_payment_during_dunning_notifies_each_event_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    # Collection pays through mark_paid(recover=False) and notifies itself: no doubles.
    _, key, unpaid = await _past_due(client, admin_key, stripe_fake)
    await succeeded(billing, unpaid, "pay_card", 2999)
    assert await subscription_status(client, key) == ("active", "pro")
    assert await notifications(billing) == [
        "invoice.payment_failed:1",
        "subscription.past_due",
        "invoice.paid",
        "subscription.recovered",
    ]


async def test_marked_paid_in_parts_notifies_once_fully_paid_and_nothing_to_recover(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    _, _, invoice = await open_invoice(client, admin_key, stripe_fake)  # active, not past due
    path = f"/invoices/{invoice['id']}/mark-paid"
    await ok(client, admin_key, path, {"amount_minor": 999})
    assert await notifications(billing) == []  # partly paid: still open
    await ok(client, admin_key, path)
    assert await notifications(billing) == ["invoice.paid"]
    [paid] = await _deliveries(billing, "invoice.paid")
    assert paid["payload"]["data"]["amount_minor"] == 2000  # what this recording paid
