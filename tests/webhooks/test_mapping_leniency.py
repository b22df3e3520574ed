"""A signed body the intake accepted maps without an exception whatever its fields hold (a
`created` no datetime can hold, `links` or `disputed_transactions` that are not lists): the
event is processed or ignored, never retried until dead."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aihub_billing.models import WebhookEvent
from aihub_billing.service import BillingService
from aihub_billing.webhooks.mapping import map_event
from tests.payments.support import paypal_event, stripe_event
from tests.webhooks.test_webhooks import rows, send_stripe


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("stripe", stripe_event("FAKE_EVENT_CHARGE_SUCCEEDED", created=10**12)),
        ("paypal", paypal_event("payment.capture.refunded", resource={"links": 5})),
        ("paypal", paypal_event("customer.dispute.created", resource={"disputed_transactions": 7})),
    ],  # fmt: skip
    ids=["stripe-created-out-of-range", "paypal-links-not-a-list", "paypal-disputed-not-a-list"],
)
def test_odd_fields_never_raise(provider: str, body: dict[str, Any]) -> None:
    map_event(provider, "e", body)  # an InternalEvent or None, never an exception


async def test_a_signed_event_with_an_odd_created_is_not_retried_to_death(
    client: httpx.AsyncClient, billing: BillingService
) -> None:
    event = stripe_event("FAKE_EVENT_CHARGE_SUCCEEDED", id="evt_odd", created=10**12)
    assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    (stored,) = await rows(billing, WebhookEvent)
    assert stored.status in ("processed", "ignored"), (stored.status, stored.error)
