"""A refund whose answer was lost (a timeout after the provider made it), recorded meanwhile
from the provider's event, is not made a second time when the client tries again: the retry
sends the same provider key, and the provider's answer names the refund already recorded."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aihub_billing.models import RefundRecord
from aihub_billing.payments.errors import ProviderUnavailable
from aihub_billing.payments.providers.stripe import StripeProcessor
from aihub_billing.service import BillingService
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import post, stripe_event
from tests.webhooks.test_webhooks import paid_stripe_payment, rows, send_stripe


async def test_a_retried_refund_whose_answer_was_lost_refunds_once(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)  # 2000
    path = f"/payments/{payment['id']}/refund"
    made = StripeProcessor.refund

    async def answer_lost(self: StripeProcessor, **kwargs: Any) -> Any:
        await made(self, **kwargs)  # Stripe makes it ...
        raise ProviderUnavailable("read timed out")  # ... and its answer never arrives

    monkeypatch.setattr(StripeProcessor, "refund", answer_lost)
    lost = await post(client, payment["key"], path, {"amount_minor": 500})
    assert lost.status_code == 503, lost.text
    [refund_id] = list(stripe_fake.refunds)
    # Stripe's event records it meanwhile, as a refund made at the provider.
    event = stripe_event(
        "FAKE_EVENT_CHARGE_SUCCEEDED",
        id="evt_refund_lost_answer",
        type="refund.created",
        object={
            "id": refund_id,
            "object": "refund",
            "amount": 500,
            "currency": "usd",
            "payment_intent": payment["provider_payment_id"],
            "status": "succeeded",
            "metadata": {},
        },
    )
    assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    assert [r.provider_refund_id for r in await rows(billing, RefundRecord)] == [refund_id]
    monkeypatch.setattr(StripeProcessor, "refund", made)
    retried = await post(client, payment["key"], path, {"amount_minor": 500})
    assert retried.status_code in (200, 201), retried.text
    assert retried.json()["provider_refund_id"] == refund_id
    assert list(stripe_fake.refunds) == [refund_id]  # refunded once at Stripe
    stored = await rows(billing, RefundRecord)
    assert [(r.provider_refund_id, r.amount_minor) for r in stored] == [(refund_id, 500)]
    # A new refund of the same amount afterwards is a refund of its own.
    another = await post(client, payment["key"], path, {"amount_minor": 500})
    assert another.status_code in (200, 201), another.text
    assert len(stripe_fake.refunds) == 2


async def test_the_reason_naming_provider_made_refunds_is_reserved(
    client: httpx.AsyncClient, admin_key: str, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    refused = await post(
        client,
        payment["key"],
        f"/payments/{payment['id']}/refund",
        {"amount_minor": 100, "reason": "refunded at the provider"},
    )
    assert refused.status_code == 422, refused.text
    assert stripe_fake.refunds == {}
