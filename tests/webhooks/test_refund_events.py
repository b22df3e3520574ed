"""Refund events: Stripe's `charge.refunded` carries the charge's refunded total (its
`refunds` list is absent in current API versions), and the same refund also arrives as
`refund.created`/`refund.updated` with its own id: a refund counts once, whatever the order."""

from __future__ import annotations

from typing import Any

import httpx

from aihub_billing.models import Payment, RefundRecord
from aihub_billing.service import BillingService
from tests.payments.fakes.stripe_server import StripeFake
from tests.payments.support import post, stripe_event
from tests.webhooks.test_webhooks import paid_stripe_payment, rows, send_stripe


def charge_refunded(payment: dict[str, Any], event_id: str, total: int) -> dict[str, Any]:
    """`charge.refunded` as API versions since 2022-11-15 send it: no `refunds` list."""
    event = stripe_event(
        "FAKE_EVENT_CHARGE_SUCCEEDED",
        id=event_id,
        type="charge.refunded",
        object={
            "payment_intent": payment["provider_payment_id"],
            "amount_refunded": total,
            "refunded": total >= 2000,
        },
    )
    del event["data"]["object"]["refunds"]
    return event


def refund_event(
    payment: dict[str, Any], event_id: str, refund_id: str, amount: int, kind: str
) -> dict[str, Any]:
    event = stripe_event("FAKE_EVENT_CHARGE_SUCCEEDED", id=event_id, type=kind)
    event["data"]["object"] = {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "currency": "usd",
        "payment_intent": payment["provider_payment_id"],
        "charge": "ch_fakefakefakefakefake0001",
        "metadata": {},
        "status": "succeeded",
    }
    return event


async def refunded(billing: BillingService) -> tuple[int, list[tuple[str | None, int, str]]]:
    (stored,) = await rows(billing, Payment)
    records = sorted(
        (
            (r.provider_refund_id, r.amount_minor, r.status)
            for r in await rows(billing, RefundRecord)
        ),
        key=lambda r: (r[0] or "", r[1]),
    )
    return stored.refunded_minor, records


async def test_charge_refunded_after_our_own_refund_counts_it_once(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    made = await post(
        client, payment["key"], f"/payments/{payment['id']}/refund", {"amount_minor": 500}
    )
    assert made.status_code == 201, made.text
    refund_id = made.json()["provider_refund_id"]
    assert (await send_stripe(client, charge_refunded(payment, "evt_1", 500))).status_code == 200
    await billing.worker().drain()
    assert await refunded(billing) == (500, [(refund_id, 500, "succeeded")])
    # The rest stays refundable.
    rest = await post(client, payment["key"], f"/payments/{payment['id']}/refund", {})
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount_minor"] == 1500


async def test_a_dashboard_refund_announced_twice_counts_once_in_either_order(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    # Stripe sends both for one refund made in its dashboard; the order is not guaranteed.
    for event in (
        charge_refunded(payment, "evt_charge_1", 300),
        refund_event(payment, "evt_refund_1", "re_dash_1", 300, "refund.created"),
        refund_event(payment, "evt_refund_2", "re_dash_2", 200, "refund.created"),
        charge_refunded(payment, "evt_charge_2", 500),
    ):
        assert (await send_stripe(client, event)).status_code == 200
    assert await billing.worker().drain() == 4
    assert await refunded(billing) == (
        500,
        [("re_dash_1", 300, "succeeded"), ("re_dash_2", 200, "succeeded")],
    )


async def test_charge_refunded_alone_records_what_the_total_adds(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    for event in (
        charge_refunded(payment, "evt_1", 300),
        charge_refunded(payment, "evt_2", 800),
        charge_refunded(payment, "evt_3", 800),  # another event, the same total
    ):
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    total, records = await refunded(billing)
    assert total == 800 and sum(amount for _, amount, _ in records) == 800


async def test_a_refund_that_fails_at_stripe_is_no_longer_counted(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    made = await post(client, payment["key"], f"/payments/{payment['id']}/refund", {})
    assert made.status_code == 201, made.text
    refund_id = made.json()["provider_refund_id"]
    assert await refunded(billing) == (2000, [(refund_id, 2000, "succeeded")])
    # The card was closed: Stripe reports the refund failed (the money stays with us).
    failed = refund_event(payment, "evt_failed", refund_id, 2000, "refund.updated")
    failed["data"]["object"].update(status="failed", failure_reason="expired_or_canceled_card")
    stripe_fake.refunds[refund_id]["status"] = "failed"
    late = refund_event(payment, "evt_late", refund_id, 2000, "refund.updated")
    for event in (failed, late):  # the older `succeeded` update arrives last
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    assert await refunded(billing) == (0, [(refund_id, 2000, "failed")])
    again = await post(
        client, payment["key"], f"/payments/{payment['id']}/refund", {"amount_minor": 2000}
    )
    assert again.status_code == 201, again.text
