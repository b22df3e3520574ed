"""A Stripe refund answered `requires_action` (spec3: refund.status is pending |
requires_action | succeeded | failed | canceled) is ours `pending`: the money being refunded
counts, so a second full refund is refused here, not sent to Stripe."""

from __future__ import annotations

import httpx

from aihub_billing.models import RefundRecord
from aihub_billing.service import BillingService
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import post
from tests.webhooks.test_webhooks import paid_stripe_payment, rows


async def test_a_requires_action_refund_counts_as_being_refunded(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    original = stripe_fake._refund

    def requires_action(p):  # type: ignore[no-untyped-def]
        response = original(p)
        if response.status == 200:
            response.body["status"] = "requires_action"
            stripe_fake.refunds[response.body["id"]]["status"] = "requires_action"
        return response

    stripe_fake._refund = requires_action  # type: ignore[method-assign]
    made = await post(client, payment["key"], f"/payments/{payment['id']}/refund", {})
    assert made.status_code == 201, made.text
    (record,) = await rows(billing, RefundRecord)
    calls_before = len([r for r in stripe_fake.requests if r[1] == "/v1/refunds"])
    again = await post(client, payment["key"], f"/payments/{payment['id']}/refund", {})
    calls_after = len([r for r in stripe_fake.requests if r[1] == "/v1/refunds"])
    # The whole amount is already being refunded: refused here, not sent to Stripe.
    assert calls_after == calls_before, (again.status_code, again.text)
    # Not refunded yet, but being refunded: ours is "pending".
    assert record.status == "pending", record.status
