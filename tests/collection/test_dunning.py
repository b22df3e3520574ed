"""Invoice collection and dunning on test clocks, against the Stripe and PayPal fakes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.collection.service import DunningPolicy, collection
from aihub_billing.config import DunningConfig
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import Job, Payment
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.invoices.helpers import advance, clocked_account, invoice, list_invoices
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.stripe_server import StripeFake
from tests.subscriptions.helpers import SEED_BODY, current, ok


@pytest.fixture
def config_overrides() -> dict[str, object]:
    """The notification receiver listens on 127.0.0.1: not a webhook target by default."""
    return {"notifications_allow_private_targets": True}


START = "2026-01-01T00:00:00Z"


async def payment_failed_notice(session: AsyncSession) -> Job | None:
    """The `invoice.payment_failed` notification's job (an invoice's dunning has others)."""
    jobs = (await session.execute(select(Job).where(Job.name == "notifications.deliver"))).scalars()
    return next((j for j in jobs if j.payload["type"] == "invoice.payment_failed"), None)


async def stripe_customer(
    client: httpx.AsyncClient, admin_key: str, stripe_fake: StripeFake
) -> tuple[str, str, str, str]:
    """A clocked account with a saved card, subscribed to pro at Stripe with it."""
    clock_id, account_id, key = await clocked_account(client, admin_key, START)
    token = stripe_fake.add_payment_method()
    method = await ok(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    body = {**SEED_BODY, "payment_provider": "stripe", "payment_method_id": token}
    sub = (await ok(client, key, "/subscriptions", body))["subscription"]
    assert sub["status"] == "active"
    return clock_id, key, sub["id"], method["id"]


async def first_invoice(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    [only] = await list_invoices(client, key)
    return await invoice(client, key, only["id"])


async def notifications(billing: BillingService, account_key: str | None = None) -> list[str]:
    """The notification events enqueued so far, in order, as `type[:attempt]`."""
    async with billing.db.sessions() as session:
        rows = await session.execute(
            select(Job).where(Job.name == "notifications.deliver").order_by(Job.run_at, Job.id)
        )
        out = []
        for job in rows.scalars():
            attempt = job.payload["data"].get("attempt")
            out.append(job.payload["type"] + (f":{attempt}" if attempt else ""))
        return out


async def subscription_status(client: httpx.AsyncClient, key: str) -> tuple[str, str]:
    """The open subscription's status ('none' without one) and the plan the account is on."""
    now = await current(client, key)
    sub = now["subscription"]
    return (sub["status"] if sub else "none"), now["plan"]["code"]


async def test_a_finalized_invoice_is_charged_to_the_saved_card_and_paid(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, method_id = await stripe_customer(client, admin_key, stripe_fake)
    ran = await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    assert [name for name, _ in ran if name != "invoices.render_pdf"] == [
        "invoices.generate",
        "invoices.finalize",
        "invoices.collect",
        "notifications.deliver",
    ]
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["amount_paid_minor"]) == ("paid", 2999)
    assert len(stripe_fake.charges) == 1
    confirms = [r for r in stripe_fake.requests if r[1].endswith("/confirm")]
    assert [r[2]["idempotency-key"] for r in confirms] == [
        f"invoice:{paid['id']}:attempt:1:confirm:{method_id}:v1"
    ]
    async with billing.db.sessions() as session:
        (payment,) = (await session.execute(select(Payment))).scalars()
    assert (payment.invoice_id, payment.status, payment.amount_minor) == (
        paid["id"],
        "succeeded",
        2999,
    )
    assert await notifications(billing) == ["invoice.paid"]
    assert await subscription_status(client, key) == ("active", "pro")


async def test_dunning_walks_days_1_3_5_7_then_cancels(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave(*["decline"] * 5)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    unpaid = await first_invoice(client, key)
    assert (unpaid["status"], unpaid["attempt_count"]) == ("open", 1)
    assert unpaid["next_payment_attempt_at"] == "2026-01-02T01:00:00Z"
    assert await subscription_status(client, key) == ("past_due", "pro")
    assert await notifications(billing) == ["invoice.payment_failed:1", "subscription.past_due"]

    ran = await advance(client, admin_key, clock_id, "2026-01-09T00:00:00Z")
    retries = [at for name, at in ran if name == "invoices.collect"]
    assert retries == [
        "2026-01-02T01:00:00Z",
        "2026-01-04T01:00:00Z",
        "2026-01-06T01:00:00Z",
        "2026-01-08T01:00:00Z",
    ]
    final = await first_invoice(client, key)
    assert (final["status"], final["attempt_count"], final["next_payment_attempt_at"]) == (
        "uncollectible",
        5,
        None,
    )
    assert stripe_fake.charges == []
    assert await notifications(billing) == [
        "invoice.payment_failed:1",
        "subscription.past_due",
        "invoice.payment_failed:2",
        "invoice.payment_failed:3",
        "invoice.payment_failed:4",
        "invoice.payment_failed:5",
        "subscription.canceled",
        "invoice.marked_uncollectible",
    ]
    assert await subscription_status(client, key) == ("none", "free")


async def test_a_retry_that_succeeds_pays_the_invoice_and_recovers_the_subscription(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline", "decline")
    await advance(client, admin_key, clock_id, "2026-01-03T00:00:00Z")
    assert (await first_invoice(client, key))["attempt_count"] == 2
    assert await subscription_status(client, key) == ("past_due", "pro")
    await advance(client, admin_key, clock_id, "2026-01-05T00:00:00Z")
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["attempt_count"]) == ("paid", 3)
    assert len(stripe_fake.charges) == 1
    assert await subscription_status(client, key) == ("active", "pro")
    assert (await notifications(billing))[-2:] == ["invoice.paid", "subscription.recovered"]
    # No further attempts are scheduled once paid.
    ran = await advance(client, admin_key, clock_id, "2026-01-10T00:00:00Z")
    assert [name for name, _ in ran if name == "invoices.collect"] == []


async def test_a_partial_payment_leaves_the_invoice_in_dunning_until_the_rest_is_paid(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, method_id = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline")
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    unpaid = await first_invoice(client, key)
    assert await subscription_status(client, key) == ("past_due", "pro")
    body = {
        "amount_minor": 1,  # one cent of the 29.99 due
        "currency": "USD",
        "invoice_id": unpaid["id"],
        "payment_method_id": method_id,
        "provider": "stripe",
    }
    intent = await ok(client, key, "/payments/intents", body)
    confirmed = await ok(client, key, f"/payments/{intent['id']}/confirm")
    assert confirmed["status"] == "succeeded"
    part = await first_invoice(client, key)
    assert (part["status"], part["amount_paid_minor"]) == ("open", 1)
    assert await subscription_status(client, key) == ("past_due", "pro")
    assert "invoice.paid" not in await notifications(billing)
    # The next retry of the schedule collects the rest, and only then is it over.
    await advance(client, admin_key, clock_id, "2026-01-03T00:00:00Z")
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["amount_paid_minor"]) == ("paid", 2999)
    assert await subscription_status(client, key) == ("active", "pro")
    assert (await notifications(billing))[-2:] == ["invoice.paid", "subscription.recovered"]


async def test_an_amount_the_provider_cannot_take_is_a_failed_attempt_that_says_why(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    # 5.125 KWD: Stripe takes three-decimal currencies in whole tens of fils only.
    prices = [{"currency": "KWD", "amount_minor": 5125}]
    await ok(client, admin_key, "/plans", {"code": "gulf", "name": "Gulf", "prices": prices})
    clock_id, _, key = await clocked_account(client, admin_key, START, currency="KWD")
    token = stripe_fake.add_payment_method()
    await ok(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    body = {"plan_type": "gulf", "payment_provider": "stripe", "payment_method_id": token}
    await ok(client, key, "/subscriptions", body)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    unpaid = await first_invoice(client, key)
    assert (unpaid["status"], unpaid["total_minor"], unpaid["attempt_count"]) == ("open", 5125, 1)
    assert not [r for r in stripe_fake.requests if r[1].startswith("/v1/payment_intents")]
    assert await notifications(billing) == ["invoice.payment_failed:1", "subscription.past_due"]
    async with billing.db.sessions() as session:
        notice = await payment_failed_notice(session)
        assert notice is not None
        assert notice.payload["data"]["code"] == "provider_amount_not_supported", notice.payload
        assert (await session.execute(select(Payment))).scalars().all() == []
        dead = (await session.execute(select(Job).where(Job.status == "dead"))).scalars().all()
        assert dead == []


async def test_the_final_action_can_downgrade_to_the_free_plan(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    billing.config.dunning = DunningConfig(retry_days=[2], final_action="downgrade")
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("decline", "decline")
    ran = await advance(client, admin_key, clock_id, "2026-01-04T00:00:00Z")
    assert [at for name, at in ran if name == "invoices.collect"] == [
        "2026-01-01T01:00:00Z",
        "2026-01-03T01:00:00Z",
    ]
    assert (await first_invoice(client, key))["status"] == "uncollectible"
    assert await subscription_status(client, key) == ("active", "free")
    assert (await notifications(billing))[-2:] == [
        "subscription.downgraded",
        "invoice.marked_uncollectible",
    ]


async def test_no_saved_card_is_a_failed_attempt_and_a_card_added_later_is_charged(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, _, key = await clocked_account(client, admin_key, START)
    body = {**SEED_BODY, "payment_provider": "stripe", "payment_method_id": "pm_gone"}
    await ok(client, key, "/subscriptions", body)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    assert (await first_invoice(client, key))["status"] == "open"
    async with billing.db.sessions() as session:
        failed = await payment_failed_notice(session)
    assert failed is not None and failed.payload["data"]["code"] == "no_payment_method"
    token = stripe_fake.add_payment_method()
    await ok(client, key, "/payment-methods", {"provider": "stripe", "token": token})
    await advance(client, admin_key, clock_id, "2026-01-02T02:00:00Z")
    assert (await first_invoice(client, key))["status"] == "paid"
    assert len(stripe_fake.charges) == 1


async def test_a_rerun_after_a_crash_mid_collection_charges_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    await advance(client, admin_key, clock_id, "2026-01-01T00:30:00Z")  # the draft exists
    draft = await first_invoice(client, key)
    # Finalized by hand: its collection job waits on the clock.
    await ok(client, admin_key, f"/invoices/{draft['id']}/finalize")
    ctx = Context(SYSTEM, FrozenClock(billing.clock.now()))
    policy = DunningPolicy()
    # The worker charges, then dies before its transaction commits.
    async with billing.db.sessions() as session:
        assert (
            await collection.collect(session, ctx, billing.processor, policy, draft["id"])
            == "charged"
        )
        await session.rollback()
    assert len(stripe_fake.charges) == 1
    assert (await first_invoice(client, key))["status"] == "open"
    # The job runs again: same attempt, same keys, the provider answers from its records.
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["attempt_count"]) == ("paid", 1)
    assert len(stripe_fake.charges) == 1
    confirms = [r for r in stripe_fake.requests if r[1].endswith("/confirm")]
    assert len(confirms) == 2
    assert confirms[0][2]["idempotency-key"] == confirms[1][2]["idempotency-key"]


async def test_3ds_asks_the_customer_and_the_providers_event_pays_the_invoice(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
    stripe_fake.behave("3ds")
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    assert (await first_invoice(client, key))["status"] == "open"
    async with billing.db.sessions() as session:
        job = await payment_failed_notice(session)
        (payment,) = (await session.execute(select(Payment))).scalars()
    assert job is not None and job.payload["data"]["code"] == "requires_action"
    assert job.payload["data"]["action_url"]  # the client secret for Stripe.js
    # The customer completes 3-D Secure; Stripe reports the success.
    intent = stripe_fake.intents[payment.provider_payment_id]
    intent.update(status="succeeded", amount_received=intent["amount"])
    from tests.payments.support import stripe_event
    from tests.webhooks.test_webhooks import send_stripe

    event = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id="evt_3ds_done",
        object={"id": payment.provider_payment_id, "metadata": {}},
    )
    assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    assert (await first_invoice(client, key))["status"] == "paid"
    assert await subscription_status(client, key) == ("active", "pro")


async def test_paypal_asks_the_buyer_to_approve_and_the_next_attempt_captures(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, paypal_fake: PayPalFake
) -> None:
    paypal_fake.require_approval = True
    clock_id, _, key = await clocked_account(client, admin_key, START)
    # PayPal keeps no cards here: the buyer approves each order at PayPal.
    body = {**SEED_BODY, "payment_provider": "paypal", "payment_method_id": "paypal-buyer"}
    await ok(client, key, "/subscriptions", body)
    await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    unpaid = await first_invoice(client, key)
    assert unpaid["status"] == "open"
    async with billing.db.sessions() as session:
        job = await payment_failed_notice(session)
        (payment,) = (await session.execute(select(Payment))).scalars()
    assert job is not None
    assert job.payload["data"]["action_url"].startswith("https://www.sandbox.paypal.com")
    paypal_fake.approve(payment.provider_payment_id)
    await advance(client, admin_key, clock_id, "2026-01-02T02:00:00Z")
    paid = await first_invoice(client, key)
    assert (paid["status"], paid["amount_paid_minor"]) == ("paid", 2999)
    assert len(paypal_fake.charges) == 1
    assert paypal_fake.schema_violations == []
    async with billing.db.sessions() as session:
        payments = list((await session.execute(select(Payment))).scalars())
    assert len(payments) == 1  # the approved order was captured, not replaced


async def test_a_notification_is_signed_and_posted_to_the_accounts_webhook(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    from tests.payments.fakes.server import FakeServer, Request, Response

    def hook(request: Request) -> Response:
        received.append((dict(request.headers), request.body))
        return Response(200, {})

    server = FakeServer(hook).start()
    try:
        clock_id, key, _, _ = await stripe_customer(client, admin_key, stripe_fake)
        target = await client.put(
            f"{API}/quota/notifications",
            json={"webhook_url": f"{server.url}/hooks"},
            headers=auth(key),
        )
        assert target.status_code == 200, target.text
        secret = target.json()["webhook_secret"]
        stripe_fake.behave("decline")
        await advance(client, admin_key, clock_id, "2026-01-01T02:00:00Z")
    finally:
        server.stop()
    from aihub_billing.notifications.service import sign

    types = [json.loads(body)["type"] for _, body in received]
    assert types == ["invoice.payment_failed", "subscription.past_due"]
    headers, body = received[0]
    timestamp = int(headers["aihub-signature"].split(",")[0][2:])
    assert headers["aihub-signature"] == sign(secret, timestamp, body)
    event = json.loads(body)
    assert event["data"]["code"] == "insufficient_funds"
    assert event["data"]["next_payment_attempt_at"] == "2026-01-02T01:00:00+00:00"
