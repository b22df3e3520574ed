"""Every confirmation after an attempt failed is a new attempt with a new Idempotency-Key, also
when the failure came later as a provider event (a `processing` debit that bounced): the old
key would replay the old `processing` answer, charge nothing and leave the payment stuck."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.payments.fakes.server import Response
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import post, stripe_event
from tests.webhooks.test_webhooks import paid_stripe_payment, send_stripe


async def test_reconfirm_after_an_asynchronous_failure_is_a_new_attempt(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    clock: FrozenClock,
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    pi = payment["provider_payment_id"]
    real_confirm = stripe_fake._confirm

    def processing(intent_id: str, p: dict[str, Any]) -> Response:
        intent = stripe_fake.intents[intent_id]
        intent["status"] = "processing"
        return Response(200, copy.deepcopy(intent))

    stripe_fake._confirm = processing  # type: ignore[method-assign]
    first = await post(client, payment["key"], f"/payments/{payment['id']}/confirm")
    assert first.status_code == 200 and first.json()["status"] == "processing", first.text
    stripe_fake._confirm = real_confirm  # type: ignore[method-assign]

    # The debit bounced at Stripe later.
    clock.advance(seconds=3600)
    stripe_fake.intents[pi]["status"] = "requires_payment_method"
    failed = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id="evt_async_failed",
        type="payment_intent.payment_failed",
        created=int(clock.now().timestamp()),
        object={"id": pi, "metadata": {}, "status": "requires_payment_method"},
    )
    assert (await send_stripe(client, failed)).status_code == 200
    await billing.worker().drain()
    shown = await client.get(f"{API}/payments/{payment['id']}", headers=auth(payment["key"]))
    assert shown.json()["status"] == "failed"

    # The customer tries again with the same card.
    again = await post(client, payment["key"], f"/payments/{payment['id']}/confirm")
    assert again.status_code == 200 and again.json()["status"] == "succeeded", again.text
    keys = [r[2]["idempotency-key"] for r in stripe_fake.requests if r[1].endswith("/confirm")]
    assert len(keys) == 2 and keys[0] != keys[1], keys
    assert len(stripe_fake.charges) == 1
