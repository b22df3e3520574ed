"""PayPal's PAYMENT.CAPTURE.REVERSED ("PayPal reverses a payment capture"; a refund-shaped
resource, amount {currency_code, value}, a link "up" to the capture) and PAYMENT.SALE.REVERSED
take the money back: the payment counts it as refunded. Vendor examples:
vendor-specs/paypal/events/dj-paypal/webhooks/payment.{capture,sale}.reversed.json."""

from __future__ import annotations

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from aihub_billing.models import Payment, WebhookEvent
from aihub_billing.service import BillingService
from aihub_billing.webhooks.mapping import map_event
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.support import owner_of_new_account, paypal_event, post
from tests.webhooks.test_webhooks import rows, send_paypal


def reversed_capture(capture_id: str, value: str) -> dict[str, object]:
    # The vendor example, in the v2 shape the refund schema (payments_payment_v2.json) gives.
    return paypal_event(
        "payment.capture.reversed",
        resource={
            "amount": {"value": value, "currency_code": "USD"},
            "status": "COMPLETED",
            "note_to_payer": "Payment reversed",
            "links": [
                {"href": "https://api.paypal.com/v2/payments/refunds/1RJ65796SJ857301V",
                 "rel": "self", "method": "GET"},
                {"href": f"https://api.paypal.com/v2/payments/captures/{capture_id}",
                 "rel": "up", "method": "GET"},
            ],
        },
    )  # fmt: skip


def test_the_vendor_reversal_examples_are_not_dropped() -> None:
    for name in ("payment.capture.reversed", "payment.sale.reversed"):
        assert map_event("paypal", "WH-x", paypal_event(name)) is not None, name


async def test_a_reversed_capture_takes_the_money_back(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    body = {"amount_minor": 747, "currency": "USD", "provider": "paypal"}
    payment = (await post(client, key, "/payments/intents", body)).json()
    completed = paypal_event(
        "payment.capture.completed", resource={"id": "CAPTURE1", "custom_id": payment["id"]}
    )
    for event in (completed, reversed_capture("CAPTURE1", "7.47")):
        assert (await send_paypal(client, paypal_fake, paypal_key, event)).status_code == 200
    await billing.worker().drain()
    outcomes = {e.type: (e.status, e.outcome) for e in await rows(billing, WebhookEvent)}
    (stored,) = await rows(billing, Payment)
    assert stored.refunded_minor == 747, (stored.status, stored.refunded_minor, outcomes)
