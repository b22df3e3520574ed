"""A cycle draft refreshed at finalization: its period's overage keeps the rates of the price
it was on once the subscription moved to another price, and a tax rate changed meanwhile
applies to every line."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.invoices.helpers import invoice, kinds, list_invoices, metered_plan, track
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok, owner


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def test_finalizing_after_a_cycle_change_keeps_the_closed_months_overage_rates(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    body = metered_plan("metered", 5000, per_1k_calls="500")
    body["prices"].append(
        {
            "currency": "USD",
            "interval_count": 12,
            "amount_minor": 50000,
            "overage_per_1k_calls": "5000",  # the yearly price bills overage 10x
            "overage_per_1m_tokens": "5000",
        }
    )
    await add_plan(client, admin_key, **body)
    _, key = await owner(client, admin_key)
    created = await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    sub = created["subscription"]  # monthly, Jan 31 12:00 -> Feb 28 12:00
    await billing.worker().drain()
    clock.set(utc(2026, 2, 5))
    # 12 calls, 2 over the 10 included: 0.002 x 500 = 1.00 USD on the monthly price.
    await track(client, key, "gpt-4o-mini", 10, "2026-02-04T00:00:00Z", n=12)
    change = {"billing_cycle": "yearly", "when": "period_end"}
    assert (await ok(client, key, f"/subscriptions/{sub['id']}/change", change))["when"] == (
        "period_end"
    )
    clock.set(utc(2026, 2, 28, 12, 30))
    await billing.worker().drain()  # the renewal onto the yearly price, the cycle draft
    [cycle] = [
        i for i in await list_invoices(client, key) if i["billing_reason"] == "subscription_cycle"
    ]
    assert ("overage_calls", 100) in kinds(await invoice(client, key, cycle["id"]))
    clock.set(utc(2026, 2, 28, 14))
    await billing.worker().drain()  # finalization refreshes the usage lines
    final = await invoice(client, key, cycle["id"])
    assert final["status"] != "draft"
    assert ("overage_calls", 100) in kinds(final), kinds(final)  # not 1000 at the yearly rate


async def _tax_rate(client: httpx.AsyncClient, admin_key: str, account: str, rate: str) -> None:
    response = await client.patch(
        f"{API}/accounts/{account}", json={"tax_rate": rate}, headers=auth(admin_key)
    )
    assert response.status_code == 200, response.text


async def test_a_tax_rate_changed_before_finalization_applies_to_every_line(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000, per_1k_calls="500"))
    account, key = await owner(client, admin_key)
    await _tax_rate(client, admin_key, account, "0.10")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await billing.worker().drain()
    clock.set(utc(2026, 2, 5))
    await track(client, key, "gpt-4o-mini", 10, "2026-02-04T00:00:00Z", n=12)
    clock.set(utc(2026, 2, 28, 12, 30))
    await billing.worker().drain()  # the renewal and the cycle draft, taxed at 10%
    [cycle] = [
        i for i in await list_invoices(client, key) if i["billing_reason"] == "subscription_cycle"
    ]
    draft = await invoice(client, key, cycle["id"])
    assert {line["tax_rate"] for line in draft["lines"]} == {"0.1"}, draft["lines"]
    await _tax_rate(client, admin_key, account, "0.20")
    clock.set(utc(2026, 2, 28, 14))
    await billing.worker().drain()  # finalization
    final = await invoice(client, key, cycle["id"])
    assert final["status"] != "draft"
    assert {line["tax_rate"] for line in final["lines"]} == {"0.2"}, final["lines"]
    assert final["tax_minor"] == sum(line["tax_minor"] for line in final["lines"])
    assert final["tax_minor"] == round(final["subtotal_minor"] * 0.2)
