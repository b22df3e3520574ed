"""Provider-side subscription events update the linked local subscription (history and
audit), and stay ignored when no subscription of ours records the provider's id."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from aihub_billing.models import AuditEntry, Subscription, SubscriptionEvent, WebhookEvent
from aihub_billing.service import BillingService
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.support import owner_of_new_account, paypal_event, post, stripe_event
from tests.webhooks.test_webhooks import send_paypal, send_stripe

STRIPE_SUB = "sub_fakefakefakefakefake0001"  # the id in the example events
PAYPAL_SUB = "I-PE7JWXKGVN0R"


async def linked_subscription(
    client: httpx.AsyncClient, admin_key: str, provider: str, provider_id: str
) -> dict[str, Any]:
    _, key = await owner_of_new_account(client, admin_key)
    body = {
        "plan_type": "pro",
        "payment_provider": provider,
        "payment_method_id": "pm_123",
        "provider_subscription_id": provider_id,
    }
    created = await post(client, key, "/subscriptions", body)
    assert created.status_code == 201, created.text
    sub: dict[str, Any] = created.json()["subscription"]
    assert sub["provider_subscription_id"] == provider_id and sub["status"] == "active"
    return sub


async def state(billing: BillingService, sub_id: str) -> tuple[str, list[str], list[str]]:
    """The subscription's status, its history kinds and its audit actions."""
    async with billing.db.sessions() as session:
        sub = await session.get(Subscription, sub_id)
        assert sub is not None
        kinds = await session.execute(
            select(SubscriptionEvent.type)
            .where(SubscriptionEvent.subscription_id == sub_id)
            .order_by(SubscriptionEvent.id)
        )
        actions = await session.execute(
            select(AuditEntry.action).where(AuditEntry.object_id == sub_id).order_by(AuditEntry.id)
        )
        return sub.status, list(kinds.scalars()), list(actions.scalars())


async def outcomes(billing: BillingService) -> dict[str, tuple[str, str | None]]:
    async with billing.db.sessions() as session:
        events = (await session.execute(select(WebhookEvent))).scalars()
        return {e.event_id: (e.status, e.outcome) for e in events}


def stripe_update(event_id: str, status: str) -> dict[str, Any]:
    return stripe_event(
        "FAKE_EVENT_CUSTOMER_SUBSCRIPTION_CREATED",
        id=event_id,
        type="customer.subscription.updated",
        object={"status": status},
    )


async def test_stripe_subscription_events_update_the_linked_subscription(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    sub = await linked_subscription(client, admin_key, "stripe", STRIPE_SUB)
    assert (await send_stripe(client, stripe_update("evt_past_due", "past_due"))).status_code == 200
    await billing.worker().drain()
    status, kinds, actions = await state(billing, sub["id"])
    assert status == "past_due"
    assert kinds[-1] == "provider_updated" and actions[-1] == "subscription.provider_updated"
    assert (await outcomes(billing))["evt_past_due"] == (
        "processed",
        f"applied: subscription {sub['id']} past_due",
    )

    deleted = stripe_event("FAKE_EVENT_CUSTOMER_SUBSCRIPTION_DELETED", id="evt_deleted")
    await send_stripe(client, deleted)
    # A late "active" after the deletion never reopens the subscription.
    await send_stripe(client, stripe_update("evt_late_active", "active"))
    await billing.worker().drain()
    status, kinds, actions = await state(billing, sub["id"])
    assert status == "canceled" and kinds[-1] == "canceled"
    assert actions[-1] == "subscription.canceled"
    seen = await outcomes(billing)
    assert seen["evt_deleted"][0] == "processed"
    assert seen["evt_late_active"] == (
        "processed",
        f"unchanged: subscription {sub['id']} is canceled",
    )
    async with billing.db.sessions() as session:
        row = await session.get(Subscription, sub["id"])
        assert row is not None and row.ended_at is not None


async def test_paypal_subscription_events_suspend_reactivate_and_cancel(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    sub = await linked_subscription(client, admin_key, "paypal", PAYPAL_SUB)
    expected = [
        ("billing.subscription.suspended", "paused"),
        ("billing.subscription.re-activated", "active"),
        ("billing.subscription.cancelled", "canceled"),
    ]
    for name, status in expected:
        sent = await send_paypal(client, paypal_fake, paypal_key, paypal_event(name))
        assert sent.status_code == 200
        await billing.worker().drain()
        assert (await state(billing, sub["id"]))[0] == status, name
    _, kinds, _ = await state(billing, sub["id"])
    assert kinds[-3:] == ["provider_updated", "provider_updated", "canceled"]


async def test_events_of_unlinked_subscriptions_stay_ignored(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    # The same provider id at the other provider is not a link.
    sub = await linked_subscription(client, admin_key, "paypal", STRIPE_SUB)
    await send_stripe(client, stripe_update("evt_unlinked", "past_due"))
    await send_paypal(
        client, paypal_fake, paypal_key, paypal_event("billing.subscription.cancelled")
    )
    await billing.worker().drain()
    assert {status for status, _ in (await outcomes(billing)).values()} == {"ignored"}
    assert (await state(billing, sub["id"]))[0] == "active"


async def test_a_provider_subscription_id_needs_its_provider(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    body = {"plan_type": "pro", "payment_method_id": "pm_1", "provider_subscription_id": "sub_1"}
    refused = await post(client, key, "/subscriptions", body)
    assert refused.status_code == 422
