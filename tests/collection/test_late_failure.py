"""A charge the provider accepts as pending and reports failed later enters dunning as a decline
does: once, and never once the invoice is paid or its retry is already scheduled."""

from __future__ import annotations

import copy
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from aihub_billing.models import Job, Payment
from aihub_billing.service import BillingService
from tests.collection.test_dunning import (
    START,
    first_invoice,
    notifications,
    stripe_customer,
    subscription_status,
)
from tests.invoices.helpers import advance, clocked_account
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.server import Response
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import paypal_event, stripe_event
from tests.subscriptions.helpers import SEED_BODY, ok
from tests.webhooks.test_webhooks import send_paypal, send_stripe


def stripe_processing(fake: StripeFake, times: int = 1) -> None:
    """The next `times` confirms answer `processing` (e.g. a bank debit): no charge yet."""
    confirm = fake._confirm
    left = [times]

    def processing(pi: str, params: dict[str, Any]) -> Response:
        if not left[0] or pi not in fake.intents:
            return confirm(pi, params)
        left[0] -= 1
        intent = fake.intents[pi]
        intent["payment_method"] = params.get("payment_method") or intent["payment_method"]
        intent["status"] = "processing"
        return Response(200, copy.deepcopy(intent))

    fake._confirm = processing  # type: ignore[method-assign]


def paypal_pending(fake: PayPalFake) -> None:
    """Every capture comes back `PENDING` (e.g. an eCheck): PayPal settles it later."""
    capture = fake._capture

    def pending(oid: str) -> Response:
        response = capture(oid)
        if response.status == 201:
            [unit] = response.body["purchase_units"]
            for item in unit["payments"]["captures"]:
                item["status"] = "PENDING"
                fake.captures[item["id"]]["status"] = "PENDING"
        return response

    fake._capture = pending  # type: ignore[method-assign]


async def payments_of(billing: BillingService) -> list[Payment]:
    async with billing.db.sessions() as session:
        rows = await session.execute(select(Payment).order_by(Payment.created_at, Payment.id))
        return list(rows.scalars())


async def retries(billing: BillingService) -> list[int]:
    """The attempt numbers of the collection retries scheduled so far."""
    async with billing.db.sessions() as session:
        rows = await session.execute(select(Job).where(Job.name == "invoices.collect"))
        return sorted(
            int(job.payload["attempt"]) for job in rows.scalars() if job.payload.get("attempt")
        )


def stripe_intent_failed(intent_id: str, event_id: str) -> dict[str, Any]:
    return stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id=event_id,
        type="payment_intent.payment_failed",
        created=1767300000,  # 2026-01-01T20:40:00Z
        object={
            "id": intent_id,
            "status": "requires_payment_method",
            "metadata": {},
            "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"},
        },
    )


def stripe_charge_failed(intent_id: str, event_id: str) -> dict[str, Any]:
    return stripe_event(
        "FAKE_EVENT_CHARGE_SUCCEEDED",
        id=event_id,
        type="charge.failed",
        created=1767300001,
        object={
            "id": "ch_late_failure",
            "payment_intent": intent_id,
            "status": "failed",
            "failure_code": "card_declined",
            "metadata": {},
        },
    )


async def deliver_stripe(
    client: httpx.AsyncClient, billing: BillingService, event: dict[str, Any]
) -> None:
    assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()


async def test_a_processing_stripe_charge_that_fails_later_enters_dunning_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_processing(stripe_fake)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    pending = await first_invoice(client, key)
    assert (pending["status"], pending["attempt_count"]) == ("open", 1)
    assert pending["next_payment_attempt_at"] is None
    [payment] = await payments_of(billing)
    assert payment.status == "processing"
    assert await subscription_status(client, key) == ("active", "pro")

    # Stripe reports the failure: the attempt fails as a decline does.
    await deliver_stripe(
        client, billing, stripe_intent_failed(payment.provider_payment_id, "evt_1")
    )
    unpaid = await first_invoice(client, key)
    assert (unpaid["status"], unpaid["attempt_count"]) == ("open", 1)
    assert unpaid["next_payment_attempt_at"] == "2026-01-02T01:00:00Z"
    assert await subscription_status(client, key) == ("past_due", "pro")
    assert await notifications(billing) == ["invoice.payment_failed:1", "subscription.past_due"]
    assert await retries(billing) == [2]

    # The same event again, and Stripe's charge.failed for the same charge: nothing more.
    await deliver_stripe(
        client, billing, stripe_intent_failed(payment.provider_payment_id, "evt_1")
    )
    await deliver_stripe(
        client, billing, stripe_charge_failed(payment.provider_payment_id, "evt_2")
    )
    assert await first_invoice(client, key) == unpaid
    assert await notifications(billing) == ["invoice.payment_failed:1", "subscription.past_due"]
    assert await retries(billing) == [2]

    # The day-1 retry asks for 3-D Secure (the day-3 retry is scheduled); the customer fails
    # it: Stripe's failure event changes nothing, the retry is already scheduled.
    stripe_fake.behave("3ds")
    ran = await advance(client, admin_key, clock_id, "2026-01-02T02:00:00Z")
    assert [at for name, at in ran if name == "invoices.collect"] == ["2026-01-02T01:00:00Z"]
    second = await first_invoice(client, key)
    assert (second["attempt_count"], second["next_payment_attempt_at"]) == (
        2,
        "2026-01-04T01:00:00Z",
    )
    _, asked = await payments_of(billing)
    assert asked.status == "requires_action"
    await deliver_stripe(client, billing, stripe_intent_failed(asked.provider_payment_id, "evt_3"))
    assert await first_invoice(client, key) == second
    assert await retries(billing) == [2, 3]
    assert (await notifications(billing))[2:] == ["invoice.payment_failed:2"]

    # The day-3 retry charges the card: paid, active again, nothing else scheduled.
    await advance(client, admin_key, clock_id, "2026-01-10T00:00:00Z")
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["attempt_count"]) == ("paid", 3)
    assert len(stripe_fake.charges) == 1
    assert await subscription_status(client, key) == ("active", "pro")
    assert await retries(billing) == [2, 3]


async def test_a_pending_paypal_capture_that_is_denied_later_enters_dunning_once(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    clock_id, _, key = await clocked_account(client, admin_key, START)
    body = {**SEED_BODY, "payment_provider": "paypal", "payment_method_id": "paypal-buyer"}
    await ok(client, key, "/subscriptions", body)
    paypal_pending(paypal_fake)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    pending = await first_invoice(client, key)
    assert (pending["status"], pending["next_payment_attempt_at"]) == ("open", None)
    [payment] = await payments_of(billing)
    assert (payment.status, payment.provider_charge_id) == ("processing", paypal_fake.charges[0])

    def denied(event_id: str) -> dict[str, Any]:
        return paypal_event(
            "payment.capture.denied",
            id=event_id,
            create_time="2026-01-01T20:00:00Z",
            resource={"id": payment.provider_charge_id, "custom_id": payment.id},
        )

    for event_id in ("WH-DENIED-1", "WH-DENIED-1", "WH-DENIED-2"):
        sent = await send_paypal(client, paypal_fake, paypal_key, denied(event_id))
        assert sent.status_code == 200, sent.text
        await billing.worker().drain()
    unpaid = await first_invoice(client, key)
    assert (unpaid["status"], unpaid["attempt_count"]) == ("open", 1)
    assert unpaid["next_payment_attempt_at"] == "2026-01-02T01:00:00Z"
    assert await subscription_status(client, key) == ("past_due", "pro")
    assert await notifications(billing) == ["invoice.payment_failed:1", "subscription.past_due"]
    assert await retries(billing) == [2]
    assert paypal_fake.schema_violations == []


async def test_a_late_failure_after_the_invoice_was_paid_changes_nothing(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_processing(stripe_fake, times=2)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    [first] = await payments_of(billing)
    await deliver_stripe(client, billing, stripe_intent_failed(first.provider_payment_id, "evt_1"))
    assert await subscription_status(client, key) == ("past_due", "pro")
    # The day-1 retry is pending too; meanwhile the invoice is paid out of band.
    await advance(client, admin_key, clock_id, "2026-01-02T02:00:00Z")
    _, second = await payments_of(billing)
    assert second.status == "processing"
    invoice_id = (await first_invoice(client, key))["id"]
    await ok(client, admin_key, f"/invoices/{invoice_id}/mark-paid")
    paid = await first_invoice(client, key)
    assert paid["status"] == "paid"
    before = (await subscription_status(client, key), await notifications(billing))

    await deliver_stripe(client, billing, stripe_intent_failed(second.provider_payment_id, "evt_2"))
    assert await first_invoice(client, key) == paid
    assert (await subscription_status(client, key), await notifications(billing)) == before
    assert await retries(billing) == [2]
    ran = await advance(client, admin_key, clock_id, "2026-01-10T00:00:00Z")
    assert [name for name, _ in ran if name == "invoices.collect"] == []
