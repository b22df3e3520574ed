"""Payment attempts by provider and outcome (what the payment failure rate alert divides):
counted once per attempt that ends, when its transaction commits, from confirmations and
from the provider's events alike."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from aihub_billing.service import BillingService
from tests.api.helpers import API
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import (
    new_intent,
    owner_of_new_account,
    post,
    stripe_event,
    stripe_signature,
)


def attempts() -> tuple[float, float]:
    name = "aihub_billing_payment_attempts_total"
    return tuple(  # type: ignore[return-value]
        REGISTRY.get_sample_value(name, {"provider": "stripe", "outcome": outcome}) or 0.0
        for outcome in ("succeeded", "failed")
    )


async def stripe_says(
    client: httpx.AsyncClient, payment: dict[str, Any], kind: str, at: datetime
) -> None:
    event = stripe_event(
        "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE",
        id=f"evt_{kind}_{payment['id']}",
        type=f"payment_intent.{kind}",
        created=int(at.timestamp()),  # after the confirmation that started the attempt
        object={"id": payment["provider_payment_id"], "metadata": {}},
    )
    body = json.dumps(event).encode()
    response = await client.post(
        f"{API}/webhooks/stripe", content=body, headers={"Stripe-Signature": stripe_signature(body)}
    )
    assert response.status_code == 200, response.text


# What is counted does not depend on the database: SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_each_attempt_counts_once_by_its_outcome(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    before = attempts()
    _, key = await owner_of_new_account(client, admin_key)
    payment = await new_intent(client, key, "stripe", stripe_fake)
    path = f"/payments/{payment['id']}/confirm"
    stripe_fake.behave("decline")
    assert (await post(client, key, path, **{"Idempotency-Key": "c-1"})).status_code == 402
    replayed = await post(client, key, path, **{"Idempotency-Key": "c-1"})
    assert replayed.headers["idempotent-replayed"] == "true"
    stripe_fake.behave("5xx", "5xx", "5xx")  # not an outcome: rolled back, answered 503
    assert (await post(client, key, path)).status_code == 503
    card = await post(client, key, "/payment-methods", {"token": stripe_fake.add_payment_method()})
    paid = await post(client, key, path, {"payment_method_id": card.json()["id"]})
    assert paid.json()["status"] == "succeeded"
    assert tuple(a - b for a, b in zip(attempts(), before, strict=True)) == (1, 1)

    # 3-D Secure is not an outcome yet: the provider's event says how it ended, once.
    for kind in ("succeeded", "payment_failed"):
        pending = await new_intent(client, key, "stripe", stripe_fake)
        stripe_fake.behave("3ds")
        action = await post(client, key, f"/payments/{pending['id']}/confirm")
        assert action.json()["status"] == "requires_action"
        await stripe_says(client, action.json(), kind, billing.clock.now())
        await stripe_says(client, action.json(), kind, billing.clock.now())  # stored once
        await billing.worker().drain()
    assert tuple(a - b for a, b in zip(attempts(), before, strict=True)) == (2, 2)
