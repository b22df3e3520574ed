"""Every closed period gets its invoice, also one a change of billing cycle cuts short."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from aihub_billing.kit.clock import FrozenClock
from tests.invoices.helpers import (
    advance,
    clocked_account,
    invoices_by_period,
    metered_plan,
    track,
)
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok


@pytest.fixture(autouse=True)
def _late_real_clock(clock: FrozenClock) -> None:
    # Usage timestamps are checked against the service clock; the test clock drives the rest.
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))


async def test_a_change_to_yearly_invoices_the_cut_short_month_and_the_yearly_fee(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    plan = metered_plan("metered", 5000)
    yearly = {**plan["prices"][0], "interval_count": 12, "amount_minor": 50000}
    await add_plan(client, admin_key, **{**plan, "prices": [plan["prices"][0], yearly]})
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    sub = await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await track(client, key, "gpt-4o-mini", 2000, "2026-01-10T00:00:00Z")  # 1,000 over
    await advance(client, admin_key, clock_id, "2026-01-16T00:00:00Z")
    path = f"/subscriptions/{sub['subscription']['id']}/change"
    changed = await ok(client, key, path, {"billing_cycle": "yearly"})
    assert (changed["direction"], changed["when"]) == ("upgrade", "immediate")
    assert changed["subscription"]["current_period_end"] == "2027-01-16T00:00:00Z"
    # 16 of January's 31 days unused: 2,581 back; the year is billed in advance.
    assert [(i["kind"], i["amount_minor"]) for i in changed["invoice_items"]] == [
        ("proration_credit", -2581),
        ("subscription_fee", 50000),
    ]
    await advance(client, admin_key, clock_id, "2026-02-20T00:00:00Z")
    # The month [Jan 1, Jan 16) closed at the change: its invoice carries the change's items
    # and that month's overage, at once, not a year later (and the overage not never).
    assert await invoices_by_period(client, key) == [
        (
            "subscription_create",
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            [("subscription_fee", 5000)],
        ),
        (
            "subscription_cycle",
            "2026-01-01T00:00:00Z",
            "2026-01-16T00:00:00Z",
            [
                ("proration_credit", -2581),
                ("subscription_fee", 50000),
                ("overage_tokens", 500),
            ],
        ),
    ]
