"""Every example event (older API versions) maps leniently: an internal event or None."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aihub_billing.payments.payment_types import EventType
from aihub_billing.webhooks.mapping import map_event
from tests.payments.support import PAYPAL_EVENTS, STRIPE_EVENTS, paypal_event, stripe_event

EXAMPLES = [("stripe", p) for p in sorted(STRIPE_EVENTS.glob("*.json"))] + [
    ("paypal", p) for p in sorted(PAYPAL_EVENTS.glob("*.json"))
]


@pytest.mark.parametrize(("provider", "path"), EXAMPLES, ids=lambda v: getattr(v, "stem", v))
def test_every_example_event_maps_without_error(provider: str, path: Path) -> None:
    body = json.loads(path.read_text())
    mapped = map_event(provider, "evt_x", body)
    assert mapped is None or mapped.provider == provider


def test_the_payment_events_map_to_the_internal_set() -> None:
    cases = {
        ("stripe", "FAKE_EVENT_PAYMENT_INTENT_SUCCEEDED_DESTINATION_CHARGE"): (
            EventType.PAYMENT_SUCCEEDED,
            "pi_1FG742B7kbjcJ8QqGKF6qIM0",
            190200,
        ),
        ("stripe", "FAKE_EVENT_DISPUTE_CREATED"): (
            EventType.DISPUTE_OPENED,
            "pi_1JAyTwJSZQVUcJYgBbsz0NuH",
            1000,
        ),
        ("paypal", "payment.capture.completed"): (
            EventType.PAYMENT_SUCCEEDED,
            "42311647XV020574X",
            747,
        ),
        ("paypal", "payment.sale.refunded"): (EventType.REFUND_SUCCEEDED, None, None),
        ("paypal", "customer.dispute.resolved"): (
            EventType.DISPUTE_CLOSED,
            "6C589962JJ4368547",
            998,
        ),
        ("paypal", "billing.subscription.cancelled"): (
            EventType.SUBSCRIPTION_CANCELED,
            None,
            None,
        ),
    }
    for (provider, name), (kind, ref, amount) in cases.items():
        body = stripe_event(name) if provider == "stripe" else paypal_event(name)
        mapped = map_event(provider, "e", body)
        assert mapped is not None and mapped.type == kind, name
        if ref is not None:
            assert ref in mapped.payment_refs, (name, mapped.payment_refs)
        if amount is not None:
            assert mapped.amount_minor == amount, name


def test_a_pending_refund_is_not_a_refund_succeeded() -> None:
    body = {
        "id": "evt",
        "type": "refund.updated",
        "created": 1,
        "data": {"object": {"object": "refund", "id": "re_1", "status": "pending"}},
    }
    assert map_event("stripe", "evt", body) is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"type": "charge.succeeded"},
        {"type": "charge.succeeded", "data": {"object": "x"}},
        {"event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": None},
    ],
)
def test_malformed_bodies_map_to_nothing(body: dict[str, object]) -> None:
    assert map_event("stripe", "e", body) is None
    assert map_event("paypal", "e", body) is None
