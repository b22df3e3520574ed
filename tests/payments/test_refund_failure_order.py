"""A refund made at Stripe (dashboard) that later failed paid nothing back: the failure wins
whatever the delivery order, and also when the refund was first known only from
`charge.refunded`'s total."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aihub_billing.models import Payment
from aihub_billing.service import BillingService
from tests.collection.test_overpayment_refunds import paid_twice
from tests.creditnotes.helpers import balance_of
from tests.payments.fakes.stripe_server import StripeFake
from tests.webhooks.test_refund_events import charge_refunded, refund_event, refunded
from tests.webhooks.test_webhooks import paid_stripe_payment, rows, send_stripe


async def test_a_failure_delivered_before_the_refund_was_created_is_not_lost(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    created = refund_event(payment, "evt_created", "re_dash_1", 300, "refund.created")
    created["created"] = 1_700_000_000
    failed = refund_event(payment, "evt_failed", "re_dash_1", 300, "refund.updated")
    failed["created"] = 1_700_000_100
    failed["data"]["object"].update(status="failed", failure_reason="expired_or_canceled_card")
    for event in (failed, created):  # Stripe does not guarantee the order
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    assert await refunded(billing) == (0, [("re_dash_1", 300, "failed")])


async def test_the_failure_of_a_refund_counted_from_a_refunded_total_uncounts_it(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    failed = refund_event(payment, "evt_failed", "re_dash_1", 300, "refund.updated")
    failed["data"]["object"].update(status="failed", failure_reason="expired_or_canceled_card")
    for event in (charge_refunded(payment, "evt_total", 300), failed):
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    assert await refunded(billing) == (0, [("re_dash_1", 300, "failed")])


async def test_the_failure_of_a_part_of_a_refunded_total_uncounts_that_part_only(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, stripe_fake: StripeFake
) -> None:
    payment = await paid_stripe_payment(client, admin_key, stripe_fake)
    failed = refund_event(payment, "evt_failed", "re_dash_1", 300, "refund.updated")
    failed["data"]["object"].update(status="failed", failure_reason="expired_or_canceled_card")
    # Two refunds (300 and 200) counted together from one total.
    for event in (charge_refunded(payment, "evt_total", 500), failed):
        assert (await send_stripe(client, event)).status_code == 200
    await billing.worker().drain()
    assert await refunded(billing) == (
        200,
        [(None, 200, "succeeded"), ("re_dash_1", 300, "failed")],
    )


def _failed(payment: dict[str, Any], amount: int) -> dict[str, Any]:
    event = refund_event(payment, "evt_failed", "re_dash_1", amount, "refund.updated")
    event["data"]["object"].update(status="failed", failure_reason="expired_or_canceled_card")
    return event


@pytest.mark.parametrize(
    ("first", "failed_minor", "balance"),
    [("failure", 1000, 1000), ("total", 1000, 1000), ("total", 600, 600)],
)
async def test_the_balance_ends_as_if_the_failed_refund_never_happened(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    stripe_fake: StripeFake,
    first: str,
    failed_minor: int,
    balance: int,
) -> None:
    # The payment's 1,000 is the account's overpayment credit, which a refund pays back.
    account, key, _, payment = await paid_twice(client, admin_key, billing, stripe_fake)
    if first == "failure":
        created = refund_event(payment, "evt_created", "re_dash_1", 1000, "refund.created")
        events = [_failed(payment, failed_minor), created]
    else:
        events = [charge_refunded(payment, "evt_total", 1000), _failed(payment, failed_minor)]
    for event in events:
        assert (await send_stripe(client, event)).status_code == 200
        await billing.worker().drain()
    assert await balance_of(client, key, account) == {"USD": balance}
    (stored,) = [p for p in await rows(billing, Payment) if p.id == payment["id"]]
    assert stored.refunded_minor == 1000 - balance
