"""What /metrics says about subscriptions: open ones by status and MRR per currency, read from
the database at scrape time (both databases), and cancellations counted when decided."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from aihub_billing.subscriptions.service import monthly_minor
from tests.subscriptions.helpers import (
    SEED_BODY,
    add_plan,
    current,
    drain,
    ok,
    owner,
    post,
    subscribe,
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str, name: str, label: str) -> dict[str, float]:
    return {
        s.labels[label]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@pytest.mark.parametrize(
    ("amount", "unit", "count", "monthly"),
    [
        (2999, "month", 1, Decimal(2999)),
        (12000, "month", 12, Decimal(1000)),
        (1000, "month", 3, Decimal(1000) / 3),
        (1000, "day", 10, Decimal(100) * 365 / 12),
        (70, "day", 7, Decimal(10) * 365 / 12),
    ],
)
def test_a_price_per_cycle_is_normalized_to_a_month(
    amount: int, unit: str, count: int, monthly: Decimal
) -> None:
    assert monthly_minor(amount, unit, count) == monthly


async def test_subscriptions_and_mrr_are_read_from_the_database_per_scrape(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    prices = [
        {"currency": "USD", "interval_unit": "month", "interval_count": 12, "amount_minor": 12000},
        {"currency": "EUR", "interval_unit": "day", "interval_count": 10, "amount_minor": 1000},
    ]
    await add_plan(client, admin_key, code="metered", name="Metered", prices=prices)
    _, monthly = await owner(client, admin_key)
    await subscribe(client, monthly)  # pro, 29.99 USD a month
    _, yearly = await owner(client, admin_key)
    await subscribe(client, yearly, plan_type="metered", billing_cycle="yearly")  # 10 USD a month
    _, daily = await owner(client, admin_key, currency="EUR")
    # 10.00 EUR per 10 days: 1000 / 10 x 365 / 12 = 3041.67 cents a month.
    await subscribe(client, daily, plan_type="metered", billing_cycle="custom")
    _, free = await owner(client, admin_key)
    await ok(client, free, "/subscriptions", {"plan_type": "free"})
    trial_account, _ = await owner(client, admin_key)  # trials are not revenue yet
    body: dict[str, Any] = {**SEED_BODY, "plan_type": "enterprise", "trial_days": 7}
    await ok(client, admin_key, "/subscriptions", {**body, "account_id": trial_account})
    _, gone = await owner(client, admin_key)
    canceled = (await subscribe(client, gone))["subscription"]
    await ok(client, gone, f"/subscriptions/{canceled['id']}/cancel", {"at_period_end": False})
    # A simulation on a test clock is no revenue and no subscriber.
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2026-03-01T00:00:00Z"})
    simulated, simulated_key = await owner(client, admin_key)
    await ok(client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": simulated})
    await subscribe(client, simulated_key, plan_type="enterprise")

    text = (await client.get("/metrics")).text
    assert scraped(text, "aihub_billing_subscriptions", "status") == {
        "active": 4,
        "trialing": 1,
        "past_due": 0,
        "paused": 0,
        "incomplete": 0,
    }
    assert scraped(text, "aihub_billing_mrr_minor_units", "currency") == {
        "USD": 2999 + 1000,
        "EUR": 3042,
    }


# The counting does not depend on the database: SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cancellations_are_counted_when_decided(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    def counts() -> tuple[float, float]:
        name = "aihub_billing_subscription_cancellations_total"
        return sample(name, mode="at_period_end"), sample(name, mode="immediate")

    before = counts()
    _, key = await owner(client, admin_key)
    first = (await subscribe(client, key))["subscription"]
    await ok(client, key, f"/subscriptions/{first['id']}/cancel", {"at_period_end": True})
    await ok(client, key, f"/subscriptions/{first['id']}/cancel", {"at_period_end": True})
    # Ending a scheduled cancellation now is the same decision: not counted again.
    await ok(client, key, f"/subscriptions/{first['id']}/cancel", {"at_period_end": False})
    # Nor is a scheduled one when it takes effect at the period end.
    second = (await subscribe(client, key))["subscription"]
    await ok(client, key, f"/subscriptions/{second['id']}/cancel", {"at_period_end": True})
    clock.set(datetime.fromisoformat(second["current_period_end"]))
    await drain(billing)
    assert (await current(client, key))["subscription"] is None
    third = (await subscribe(client, key))["subscription"]
    await ok(client, key, f"/subscriptions/{third['id']}/cancel", {"at_period_end": False})
    refused = await post(client, key, f"/subscriptions/{third['id']}/cancel")
    assert refused.status_code == 409
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)
