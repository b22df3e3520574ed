"""Subscriptions billed by the provider: created and canceled there by jobs.

A plan price that names a Stripe price or a PayPal billing plan is charged at the provider;
the local subscription waits `incomplete` until the provider reports it active (at once for
a Stripe card; after the buyer approves at PayPal, announced by a notification with the
link), and the provider's webhooks keep its status in step.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.collection.repository import CollectionRepository
from aihub_billing.kit.context import Context
from aihub_billing.models import Account
from aihub_billing.notifications.service import notify
from aihub_billing.payments.service import DefaultingLookup, payments
from aihub_billing.plans.service import plans
from aihub_billing.subscriptions.service import provider_price_ref, subscriptions
from aihub_billing.testclocks.service import test_clocks

log = structlog.get_logger("aihub_billing.collection")


async def subscribe(
    session: AsyncSession, ctx: Context, processors: DefaultingLookup, subscription_id: str
) -> str:
    """Creates the provider-side subscription of a provider-billed one (once: the key is
    named by our subscription) and applies the status the provider answered."""
    repo = CollectionRepository(session)
    sub = await repo.subscription(subscription_id, lock=True)
    if sub is None or not sub.provider_billed or sub.status == "canceled":
        return "skipped"
    if sub.provider_subscription_id is not None:
        return "skipped: already created"
    price_ref = provider_price_ref(await plans.price(session, sub.price_id), sub.payment_provider)
    if price_ref is None:
        return "skipped: the price has no provider price"
    processor = processors(sub.payment_provider)
    account = await session.get(Account, sub.account_id)
    assert account is not None  # subscriptions reference accounts
    customer = await payments.customer(session, ctx, processor, account)
    token = None
    for method in await repo.active_methods(sub.account_id, processor.name):
        if sub.payment_method_id in (method.id, method.provider_method_id) or token is None:
            token = method.provider_method_id
    remote = await processor.create_subscription(
        customer_id=customer.provider_customer_id,
        price_id=price_ref,
        reference=sub.id,
        idempotency_key=f"subscription:{sub.id}:provider-create:v1",
        payment_method=token,
    )
    sub.provider_subscription_id = remote.id
    await session.flush()
    outcome = await subscriptions.apply_provider_status(
        session,
        ctx,
        provider=processor.name,
        provider_subscription_id=remote.id,
        status=remote.status,
        canceled=False,
        event_id=f"create:{sub.id}",
    )
    if remote.approval_url:
        _, clock_id = await test_clocks.context_for(session, ctx, sub.account_id)
        await notify(
            session,
            ctx,
            account_id=sub.account_id,
            event_type="subscription.approval_required",
            event_id=f"subscription.approval_required:{sub.id}",
            subject="Approve your subscription",
            data={"subscription_id": sub.id, "approval_url": remote.approval_url},
            test_clock_id=clock_id,
        )
    log.info("collection.provider_subscribed", subscription_id=sub.id, remote=remote.id)
    return outcome


async def unsubscribe(
    ctx: Context, processors: DefaultingLookup, provider: str, provider_subscription_id: str
) -> None:
    """Cancels at the provider; its cancel is idempotent, so a retried job is harmless."""
    await processors(provider).cancel_subscription(provider_subscription_id)
    log.info("collection.provider_unsubscribed", remote=provider_subscription_id)
