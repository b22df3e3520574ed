"""Provider events the vendor material shows that must not be lost or misapplied: PayPal
subscription expiry, Stripe pause/resume, the payment of a legacy PayPal dispute, and
subscription updates delivered out of order."""

from __future__ import annotations

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from aihub_billing.payments.payment_types import EventType
from aihub_billing.service import BillingService
from aihub_billing.webhooks.mapping import map_event
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.support import paypal_event, stripe_event
from tests.webhooks.test_subscription_events import (
    PAYPAL_SUB,
    STRIPE_SUB,
    linked_subscription,
    outcomes,
    state,
    stripe_update,
)
from tests.webhooks.test_webhooks import send_paypal, send_stripe


def test_a_paypal_subscription_expiry_maps_to_a_cancellation() -> None:
    body = paypal_event(
        "billing.subscription.cancelled",
        event_type="BILLING.SUBSCRIPTION.EXPIRED",
        resource={"status": "EXPIRED"},
    )
    mapped = map_event("paypal", "WH-expired", body)
    assert mapped is not None
    assert (mapped.type, mapped.object_id) == (EventType.SUBSCRIPTION_CANCELED, PAYPAL_SUB)


def test_stripe_pause_and_resume_events_map_to_subscription_updates() -> None:
    for kind, status in (
        ("customer.subscription.paused", "paused"),
        ("customer.subscription.resumed", "active"),
    ):
        body = stripe_event(
            "FAKE_EVENT_CUSTOMER_SUBSCRIPTION_CREATED", type=kind, object={"status": status}
        )
        mapped = map_event("stripe", "evt", body)
        assert mapped is not None, kind
        assert (mapped.type, mapped.status, mapped.object_id) == (
            EventType.SUBSCRIPTION_UPDATED,
            status,
            STRIPE_SUB,
        )


def test_a_legacy_paypal_dispute_names_the_disputed_payment() -> None:
    mapped = map_event("paypal", "WH-risk", paypal_event("risk.dispute.created"))
    assert mapped is not None and mapped.type == EventType.DISPUTE_OPENED
    # `seller_payment_id` is the seller's transaction (the capture/sale) in this shape.
    assert "93U280418G152174E" in mapped.payment_refs


async def test_an_expired_paypal_subscription_is_canceled_here(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    sub = await linked_subscription(client, admin_key, "paypal", PAYPAL_SUB)
    expired = paypal_event(
        "billing.subscription.cancelled",
        id="WH-EXPIRED-1",
        event_type="BILLING.SUBSCRIPTION.EXPIRED",
        resource={"status": "EXPIRED"},
    )
    assert (await send_paypal(client, paypal_fake, paypal_key, expired)).status_code == 200
    await billing.worker().drain()
    status, kinds, _ = await state(billing, sub["id"])
    assert (status, kinds[-1]) == ("canceled", "canceled")


async def test_an_older_subscription_update_delivered_late_is_ignored(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    sub = await linked_subscription(client, admin_key, "stripe", STRIPE_SUB)
    older = stripe_update("evt_older_past_due", "past_due")
    newer = stripe_update("evt_newer_active", "active")
    older["created"] = 1_700_000_000
    newer["created"] = 1_700_000_100
    # Stripe does not guarantee delivery order: the newer state arrives first.
    assert (await send_stripe(client, newer)).status_code == 200
    await billing.worker().drain()
    assert (await send_stripe(client, older)).status_code == 200
    await billing.worker().drain()
    assert (await state(billing, sub["id"]))[0] == "active"
    status, outcome = (await outcomes(billing))["evt_older_past_due"]
    assert status == "ignored" and outcome is not None and "newer" in outcome

    # A genuinely newer update still applies.
    newest = stripe_update("evt_newest_past_due", "past_due")
    newest["created"] = 1_700_000_200
    await send_stripe(client, newest)
    await billing.worker().drain()
    assert (await state(billing, sub["id"]))[0] == "past_due"
