"""Plans billed by the provider: the subscription is created and canceled at Stripe/PayPal."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from aihub_billing.models import InvoiceItem, Job
from aihub_billing.service import BillingService
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import owner_of_new_account, paypal_event, post, stripe_event
from tests.subscriptions.helpers import SEED_BODY, add_plan, current, ok
from tests.webhooks.test_webhooks import send_paypal, send_stripe


def provider_plan(code: str, **refs: str) -> dict[str, Any]:
    price = {"currency": "USD", "amount_minor": 2999, **refs}
    return {"code": code, "name": code.title(), "limits": {}, "prices": [price]}


async def jobs_named(billing: BillingService, name: str) -> list[Job]:
    async with billing.db.sessions() as session:
        rows = await session.execute(select(Job).where(Job.name == name))
        return list(rows.scalars())


async def items(billing: BillingService) -> list[InvoiceItem]:
    async with billing.db.sessions() as session:
        return list((await session.execute(select(InvoiceItem))).scalars())


async def test_a_stripe_billed_plan_creates_the_subscription_at_stripe(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    await add_plan(client, admin_key, **provider_plan("pro-stripe", stripe_price_id="price_Pro1"))
    _, key = await owner_of_new_account(client, admin_key)
    token = stripe_fake.add_payment_method()
    await ok(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    body = {**SEED_BODY, "plan_type": "pro-stripe", "payment_method_id": token}
    created = (await ok(client, key, "/subscriptions", body))["subscription"]
    assert (created["status"], created["provider_billed"]) == ("incomplete", True)
    assert (await current(client, key))["plan"]["code"] == "free"  # not entitled yet

    await billing.worker().drain()
    [call] = [r for r in stripe_fake.requests if r[:2] == ("POST", "/v1/subscriptions")]
    assert call[3]["items"] == [{"price": "price_Pro1"}]
    assert call[3]["default_payment_method"] == token
    assert call[2]["idempotency-key"] == f"subscription:{created['id']}:provider-create:v1"
    now = await current(client, key)
    assert (now["plan"]["code"], now["subscription"]["status"]) == ("pro-stripe", "active")
    remote = now["subscription"]["provider_subscription_id"]
    assert remote in stripe_fake.subscriptions
    # Stripe charges the fee: nothing is billed or invoiced here.
    assert await items(billing) == []
    assert await jobs_named(billing, "invoices.generate") == []

    refused = await post(
        client, key, f"/subscriptions/{created['id']}/change", {"plan_type": "pro"}
    )
    assert refused.status_code == 409 and refused.json()["code"] == "provider_billed"

    # Canceled at period end: ended at Stripe at once, the paid period runs here.
    await ok(client, key, f"/subscriptions/{created['id']}/cancel", {"at_period_end": True})
    await billing.worker().drain()
    assert stripe_fake.subscriptions[remote]["status"] == "canceled"
    deleted = stripe_event(
        "FAKE_EVENT_CUSTOMER_SUBSCRIPTION_DELETED", id="evt_sub_deleted", object={"id": remote}
    )
    assert (await send_stripe(client, deleted)).status_code == 200
    await billing.worker().drain()
    sub = (await current(client, key))["subscription"]
    assert (sub["status"], sub["cancel_at_period_end"]) == ("active", True)
    again = await post(client, key, f"/subscriptions/{created['id']}/resume")
    assert again.status_code == 409 and again.json()["code"] == "provider_billed"


async def test_a_paypal_billed_plan_waits_for_the_buyers_approval(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    plan = provider_plan("pro-paypal", paypal_plan_id="P-5ML4271244454362WXNWU5NQ")
    await add_plan(client, admin_key, **plan)
    _, key = await owner_of_new_account(client, admin_key)
    body = {"plan_type": "pro-paypal", "payment_provider": "paypal"}
    created = (await ok(client, key, "/subscriptions", body))["subscription"]
    assert created["status"] == "incomplete"
    await billing.worker().drain()
    [remote] = paypal_fake.subscriptions.values()
    assert (remote["plan_id"], remote["custom_id"]) == (
        "P-5ML4271244454362WXNWU5NQ",
        created["id"],
    )
    assert paypal_fake.schema_violations == []
    [notice] = await jobs_named(billing, "notifications.deliver")
    assert notice.payload["type"] == "subscription.approval_required"
    assert notice.payload["data"]["approval_url"].startswith("https://www.sandbox.paypal.com")
    assert (await current(client, key))["subscription"]["status"] == "incomplete"

    # The buyer approves; PayPal reports the subscription active.
    activated = paypal_event("billing.subscription.re-activated", resource={"id": remote["id"]})
    assert (await send_paypal(client, paypal_fake, paypal_key, activated)).status_code == 200
    await billing.worker().drain()
    now = await current(client, key)
    assert (now["plan"]["code"], now["subscription"]["status"]) == ("pro-paypal", "active")
    assert await items(billing) == []

    await ok(client, key, f"/subscriptions/{created['id']}/cancel", {"at_period_end": False})
    await billing.worker().drain()
    assert paypal_fake.subscriptions[remote["id"]]["status"] == "CANCELLED"
