"""Webhook intake and processing: signed the providers' way, stored once, applied in order."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.ids import new_id
from aihub_billing.models import DisputeRecord, Job, Payment, RefundRecord, WebhookEvent
from aihub_billing.payments.service import payments
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.payments.fakes.paypal_server import PayPalFake, make_certificate
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (
    PAYPAL_WEBHOOK_ID,
    owner_of_new_account,
    paypal_event,
    post,
    stripe_event,
    stripe_signature,
)


async def rows(billing: BillingService, model: type) -> list[Any]:
    async with billing.db.sessions() as session:
        return list((await session.execute(select(model))).scalars())


async def jobs(billing: BillingService) -> int:
    async with billing.db.sessions() as session:
        query = select(func.count()).select_from(Job).where(Job.name == "webhooks.process")
        return int((await session.execute(query)).scalar_one())


async def send_stripe(
    client: httpx.AsyncClient, event: dict[str, Any], *, age: int = 0, tamper: bool = False
) -> httpx.Response:
    body = json.dumps(event).encode()
    signature = stripe_signature(body, age_seconds=age)
    if tamper:
        body = body.replace(b'"livemode"', b'"livemode" ', 1)
    return await client.post(
        f"{API}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


async def paid_stripe_payment(
    client: httpx.AsyncClient, admin_key: str, stripe_fake: StripeFake, *, confirm: bool = True
) -> dict[str, Any]:
    _, key = await owner_of_new_account(client, admin_key)
    token = stripe_fake.add_payment_method()
    method = (await post(client, key, "/payment-methods", {"token": token})).json()
    body = {"amount_minor": 2000, "currency": "USD", "payment_method_id": method["id"]}
    payment: dict[str, Any] = (await post(client, key, "/payments/intents", body)).json()
    if confirm:
        confirmed = await post(client, key, f"/payments/{payment['id']}/confirm")
        payment = confirmed.json()
    payment["key"] = key
    return payment


async def test_a_signed_stripe_event_is_stored_once_and_processed_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    event = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        object={"id": payment["provider_payment_id"], "amount": 2000, "metadata": {}},
    )
    first = await send_stripe(client, event)
    again = await send_stripe(client, event)
    assert first.status_code == again.status_code == 200
    assert first.json() == {"received": True, "duplicate": False}
    assert again.json() == {"received": True, "duplicate": True}
    assert len(await rows(billing, WebhookEvent)) == 1 and await jobs(billing) == 1

    assert await billing.worker().drain() == 1
    (stored,) = await rows(billing, WebhookEvent)
    assert stored.status == "processed" and stored.attempts == 1
    assert stored.body == json.dumps(event)
    shown = await client.get(f"{API}/payments/{payment['id']}", headers=auth(payment["key"]))
    assert shown.json()["status"] == "succeeded"
    await send_stripe(client, event)  # a redelivery after processing changes nothing
    assert await billing.worker().drain() == 0


async def test_an_event_that_overtakes_the_commit_of_its_payment_is_retried(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    clock: FrozenClock,
) -> None:
    """The provider may announce a payment before the transaction that stores it commits
    (a slow collection job): the event names our id in its metadata, so it is retried, not
    ignored for good."""
    await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    # (the payment created above is the template of the late one, below)
    late_id, late_intent = new_id("pay"), "pi_overtaken0001"  # ours, not stored yet
    event = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        object={"id": late_intent, "amount": 2000, "metadata": {"payment_id": late_id}},
    )
    assert (await send_stripe(client, event)).status_code == 200
    assert await billing.worker().drain() == 1
    (stored,) = await rows(billing, WebhookEvent)
    assert stored.status == "failed" and "not stored" in (stored.error or "")

    # Now the payment's transaction commits, and the retry finds it.
    async with billing.db.sessions() as session, session.begin():
        (original,) = (await session.execute(select(Payment))).scalars()
        columns = {c.key: getattr(original, c.key) for c in Payment.__mapper__.column_attrs}
        session.add(Payment(**{**columns, "id": late_id, "provider_payment_id": late_intent}))
    clock.advance(seconds=11)
    assert await billing.worker().drain() == 1
    (stored,) = await rows(billing, WebhookEvent)
    assert (stored.status, stored.attempts) == ("processed", 2)
    late = [p for p in await rows(billing, Payment) if p.id == late_id]
    assert late[0].status == "succeeded"

    # An event naming no payment of ours (no id of ours in its metadata) is ignored at once.
    foreign = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id="evt_foreign",
        object={"id": "pi_notours00001", "amount": 2000, "metadata": {}},
    )
    await send_stripe(client, foreign)
    await billing.worker().drain()
    assert [e.status for e in await rows(billing, WebhookEvent) if e.event_id == "evt_foreign"] == [
        "ignored"
    ]


async def test_tampered_expired_and_unsigned_stripe_events_are_refused(
    client: httpx.AsyncClient, billing: BillingService
) -> None:
    event = stripe_event("FAKE_EVENT_CHARGE_SUCCEEDED")
    tampered = await send_stripe(client, event, tamper=True)
    expired = await send_stripe(client, event, age=301)
    unsigned = await client.post(f"{API}/webhooks/stripe", content=json.dumps(event))
    for response in (tampered, expired, unsigned):
        assert response.status_code == 400
        assert response.json()["code"] == "webhook_signature_invalid"
    assert (await send_stripe(client, event, age=290)).status_code == 200
    assert len(await rows(billing, WebhookEvent)) == 1


async def test_signed_bodies_that_are_no_stripe_event_are_refused_not_500(
    client: httpx.AsyncClient, billing: BillingService
) -> None:
    async def send(body: bytes) -> httpx.Response:
        return await client.post(
            f"{API}/webhooks/stripe",
            content=body,
            headers={
                "Stripe-Signature": stripe_signature(body),
                "Content-Type": "application/json",
            },
        )

    not_events = [
        b"[1,2]",  # JSON, but no object
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser's recursion limit
        b'{"id": "evt_s", "type": "t\\ud800", "created": 1}',  # a lone surrogate: no UTF-8
    ]
    for body in not_events:
        response = await send(body)
        assert response.status_code == 400, (body[:40], response.text)
        assert response.json()["code"] == "webhook_signature_invalid"
    # A creation time no datetime holds is no creation time: the event is stored without it.
    far = json.dumps({"id": "evt_far", "type": "x.y", "created": 10**20}).encode()
    assert (await send(far)).status_code == 200
    [stored] = await rows(billing, WebhookEvent)
    assert stored.event_created_at is None


async def test_a_late_failure_never_undoes_a_success(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    pi = payment["provider_payment_id"]
    succeeded = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id="evt_succeeded",
        created=1_700_000_100,
        object={"id": pi, "metadata": {}},
    )
    failed = {
        **succeeded,
        "id": "evt_failed",
        "type": "payment_intent.payment_failed",
        "created": 1_700_000_000,  # older, delivered later
    }
    failed_later = {**failed, "id": "evt_failed_2", "created": 1_700_000_200}
    for event in (succeeded, failed, failed_later):
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    shown = await client.get(f"{API}/payments/{pi and payment['id']}", headers=auth(payment["key"]))
    assert shown.json()["status"] == "succeeded"
    outcomes = {e.event_id: e.outcome for e in await rows(billing, WebhookEvent)}
    assert outcomes["evt_failed"].startswith("unchanged")
    assert outcomes["evt_failed_2"].startswith("unchanged")


async def test_an_older_failure_after_a_newer_one_is_ignored_and_success_still_wins(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    base = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        object={"id": payment["provider_payment_id"], "metadata": {}},
    )
    newer_fail = {**base, "id": "e1", "type": "payment_intent.payment_failed", "created": 200}
    older_fail = {**newer_fail, "id": "e2", "created": 100}
    success = {**base, "id": "e3", "created": 50}  # success wins even with an older clock
    for event in (newer_fail, older_fail, success):
        await send_stripe(client, event)
    await billing.worker().drain()
    outcomes = {e.event_id: e.outcome for e in await rows(billing, WebhookEvent)}
    assert outcomes["e1"].startswith("applied") and outcomes["e2"].startswith("unchanged")
    assert outcomes["e3"].startswith("applied")
    (stored,) = await rows(billing, Payment)
    assert stored.status == "succeeded"


async def test_refunds_and_disputes_flow_in_through_stripe_events(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    pi = payment["provider_payment_id"]
    refunded = stripe_event(
        "FAKE_EVENT_CHARGE_SUCCEEDED",
        id="evt_refund",
        type="charge.refunded",
        object={
            "payment_intent": pi,
            "amount_refunded": 500,
            "refunds": {"object": "list", "data": [{"id": "re_dash_1", "amount": 500}]},
        },
    )
    opened = stripe_event("FAKE_EVENT_DISPUTE_CREATED", object={"payment_intent": pi})
    closed = stripe_event(
        "FAKE_EVENT_DISPUTE_CLOSED",
        object={"payment_intent": pi, "id": opened["data"]["object"]["id"]},
    )
    for event in (refunded, closed, opened):  # "opened" arrives after "closed"
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    (refund,) = await rows(billing, RefundRecord)
    assert (refund.provider_refund_id, refund.amount_minor, refund.status) == (
        "re_dash_1",
        500,
        "succeeded",
    )
    (stored,) = await rows(billing, Payment)
    assert stored.refunded_minor == 500
    (dispute,) = await rows(billing, DisputeRecord)
    assert dispute.status == "closed" and dispute.payment_id == payment["id"]
    assert dispute.closed_at is not None and dispute.opened_at is not None
    await send_stripe(client, {**refunded, "id": "evt_refund_again"})
    await billing.worker().drain()
    assert len(await rows(billing, RefundRecord)) == 1  # the same provider refund, once


async def test_events_we_do_not_handle_are_recorded_as_ignored(
    client: httpx.AsyncClient, billing: BillingService
) -> None:
    await send_stripe(client, stripe_event("FAKE_EVENT_CUSTOMER_CREATED"))
    await send_stripe(client, stripe_event("FAKE_EVENT_CHARGE_SUCCEEDED"))  # not our payment
    await billing.worker().drain()
    assert {e.status for e in await rows(billing, WebhookEvent)} == {"ignored"}


# -- PayPal -------------------------------------------------------------------------------


async def send_paypal(
    client: httpx.AsyncClient,
    fake: PayPalFake,
    key: rsa.RSAPrivateKey,
    event: dict[str, Any],
    *,
    tamper: bool = False,
    cert_url: str | None = None,
    webhook_id: str = PAYPAL_WEBHOOK_ID,
) -> httpx.Response:
    body = json.dumps(event).encode()
    headers = fake.sign(key, body, webhook_id, cert_url=cert_url)
    if tamper:
        body = body.replace(b'"id"', b'"id" ', 1)
    return await client.post(f"{API}/webhooks/paypal", content=body, headers=headers)


async def test_paypal_capture_and_refund_events_apply_to_our_payment(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    body = {"amount_minor": 747, "currency": "USD", "provider": "paypal"}
    payment = (await post(client, key, "/payments/intents", body)).json()
    completed = paypal_event(
        "payment.capture.completed",
        resource={"id": "CAPTURE1", "custom_id": payment["id"]},
    )
    refunded = paypal_event(
        "payment.capture.refunded",
        resource={
            "id": "REFUND1",
            "amount": {"total": "-2.00", "currency": "USD"},
            "links": [
                {
                    "href": "https://api.paypal.com/v2/payments/captures/CAPTURE1",
                    "rel": "up",
                    "method": "GET",
                }
            ],
        },
    )
    for event in (completed, refunded, completed):
        assert (await send_paypal(client, paypal_fake, paypal_key, event)).status_code == 200
    assert len(await rows(billing, WebhookEvent)) == 2  # the redelivery is stored once
    assert await billing.worker().drain() == 2
    (stored,) = await rows(billing, Payment)
    assert (stored.status, stored.provider_charge_id, stored.refunded_minor) == (
        "succeeded",
        "CAPTURE1",
        200,
    )
    certs = [r for r in paypal_fake.requests if r[1].startswith("/certs/")]
    assert len(certs) == 1  # fetched once, then cached


async def test_paypal_disputes_open_and_close(
    client: httpx.AsyncClient,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
) -> None:
    opened = paypal_event("customer.dispute.created")
    resolved = paypal_event(
        "customer.dispute.resolved", resource={"dispute_id": opened["resource"]["dispute_id"]}
    )
    for event in (opened, resolved):
        assert (await send_paypal(client, paypal_fake, paypal_key, event)).status_code == 200
    await billing.worker().drain()
    (dispute,) = await rows(billing, DisputeRecord)
    assert dispute.status == "closed" and dispute.amount_minor == 998


async def test_bad_paypal_signatures_and_foreign_certificates_are_refused(
    client: httpx.AsyncClient,
    billing: BillingService,
    paypal_fake: PayPalFake,
    paypal_key: rsa.RSAPrivateKey,
    clock: Any,
) -> None:
    event = paypal_event("payment.sale.completed")
    tampered = await send_paypal(client, paypal_fake, paypal_key, event, tamper=True)
    other_webhook = await send_paypal(
        client, paypal_fake, paypal_key, event, webhook_id="OTHER-WEBHOOK"
    )
    foreign = await send_paypal(
        client, paypal_fake, paypal_key, event, cert_url="https://evil.example/cert.pem"
    )
    lookalike = await send_paypal(
        client, paypal_fake, paypal_key, event, cert_url="https://api.paypal.com.evil.example/c"
    )
    malformed = await send_paypal(  # urlsplit raises on it: a refusal, not a 500
        client, paypal_fake, paypal_key, event, cert_url="https://[api.paypal.com/certs/c"
    )
    other_key, _ = make_certificate(clock.now())
    wrong_key = await send_paypal(client, paypal_fake, other_key, event)
    for response in (tampered, other_webhook, foreign, lookalike, malformed, wrong_key):
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "webhook_signature_invalid"
    assert not [r for r in paypal_fake.requests if "evil" in r[1]]
    assert await rows(billing, WebhookEvent) == []
    ok = await send_paypal(client, paypal_fake, paypal_key, event)
    assert ok.status_code == 200 and len(await rows(billing, WebhookEvent)) == 1


async def test_a_processing_failure_is_recorded_and_retried(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake, confirm=False)
    event = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        object={"id": payment["provider_payment_id"], "metadata": {}},
    )
    await send_stripe(client, event)
    real = payments.apply_event
    calls = 0

    async def fails_once(*args: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database hiccup")
        return await real(*args)

    # A stand-in for a transient failure inside processing; everything else is real.
    monkeypatch.setattr(payments, "apply_event", fails_once)
    await billing.worker().drain()
    (stored,) = await rows(billing, WebhookEvent)
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert stored.error == "RuntimeError: database hiccup"
    assert await billing.worker().drain() == 0  # the retry waits for its time
    clock.advance(seconds=11)
    assert await billing.worker().drain() == 1
    (stored,) = await rows(billing, WebhookEvent)
    assert (stored.status, stored.attempts) == ("processed", 2)
    (paid,) = await rows(billing, Payment)
    assert paid.status == "succeeded"
