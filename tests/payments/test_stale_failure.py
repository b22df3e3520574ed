"""A provider's failure event older than the status our own confirmation set is about an
earlier attempt: delivered late (after the next confirmation put the payment in 3-D Secure),
it leaves the newer status alone."""

from __future__ import annotations

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import post, stripe_event
from tests.webhooks.test_webhooks import paid_stripe_payment, send_stripe


async def test_a_late_failure_of_an_earlier_attempt_does_not_undo_a_newer_status(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    clock: FrozenClock,
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    pi = payment["provider_payment_id"]
    declined_at = int(clock.now().timestamp())
    stripe_fake.behave("decline")
    first = await post(client, payment["key"], f"/payments/{payment['id']}/confirm")
    assert first.status_code == 402
    clock.advance(seconds=60)
    stripe_fake.behave("3ds")
    second = await post(client, payment["key"], f"/payments/{payment['id']}/confirm")
    assert second.json()["status"] == "requires_action", second.text

    # Stripe's event for the first (declined) attempt, delivered only now.
    late = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id="evt_late_decline",
        type="payment_intent.payment_failed",
        created=declined_at,
        object={"id": pi, "metadata": {}, "status": "requires_payment_method"},
    )
    assert (await send_stripe(client, late)).status_code == 200
    await billing.worker().drain()
    shown = await client.get(f"{API}/payments/{payment['id']}", headers=auth(payment["key"]))
    assert shown.json()["status"] == "requires_action", shown.json()["status"]
