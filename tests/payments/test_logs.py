"""A payment flow with card-number-looking text and secrets around it logs neither."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from aihub_billing.service import BillingService
from tests.api.helpers import API
from tests.payments.fakes.paypal_server import PayPalFake
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (
    STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET,
    owner_of_new_account,
    post,
    stripe_event,
    stripe_signature,
)

PAN = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


async def test_no_card_number_nor_secret_reaches_the_logs(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    paypal_fake: PayPalFake,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, key = await owner_of_new_account(client, admin_key)
    token = stripe_fake.add_payment_method()
    method = (await post(client, key, "/payment-methods", {"token": token})).json()
    memo = f"card 4242 4242 4242 4242 / 4000-0025-0000-3155, key {STRIPE_SECRET_KEY}"
    body = {
        "amount_minor": 1234,
        "currency": "USD",
        "payment_method_id": method["id"],
        "description": memo,
    }
    refused = await post(client, key, "/payments/intents", body)
    assert refused.status_code == 422 and "4242" not in refused.text  # never stored either
    refused = await post(client, key, "/payment-methods", {"token": "4000002500003155"})
    assert refused.status_code == 422
    body["description"] = f"order 42, key {STRIPE_SECRET_KEY}, token {token}"
    payment = (await post(client, key, "/payments/intents", body)).json()
    stripe_fake.behave("5xx", "3ds")
    action = await post(client, key, f"/payments/{payment['id']}/confirm")
    client_secret = action.json()["next_action"]["client_secret"]
    second = (await post(client, key, "/payments/intents", body)).json()
    stripe_fake.behave("decline")
    assert (await post(client, key, f"/payments/{second['id']}/confirm")).status_code == 402
    paypal_body = {**body, "provider": "paypal", "payment_method_id": None}
    paypal = (await post(client, key, "/payments/intents", paypal_body)).json()
    await post(client, key, f"/payments/{paypal['id']}/confirm")
    event = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        object={"id": payment["provider_payment_id"], "description": memo},
    )
    raw = json.dumps(event).encode()
    await client.post(
        f"{API}/webhooks/stripe", content=raw, headers={"Stripe-Signature": stripe_signature(raw)}
    )
    await billing.worker().drain()

    logged = capsys.readouterr().err
    for expected in (
        "payment.created",
        "payment_provider.retry",
        "payment.declined",
        "payment.confirmed",
        "webhook.received",
        "webhook.processed",
    ):
        assert expected in logged, expected
    assert PAN.search(logged) is None, PAN.search(logged)
    for secret in (
        STRIPE_SECRET_KEY,
        STRIPE_WEBHOOK_SECRET,
        client_secret,
        paypal_fake.client_secret,
        *paypal_fake.tokens,
    ):
        assert secret not in logged, secret
