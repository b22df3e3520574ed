"""Storage GB-month overage, and the collect job enqueued only when its handler exists."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Job
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.invoices.helpers import (
    advance,
    check_sums,
    clocked_account,
    invoice,
    list_invoices,
    metered_plan,
)
from tests.subscriptions.helpers import SEED_BODY, add_plan, ok


@pytest.fixture(autouse=True)
def _late_real_clock(clock: FrozenClock) -> None:
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))


async def test_storage_beyond_the_included_gb_months_is_billed(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    plan = metered_plan(
        "stored", 1000, included_storage_gb="10", storage_policy="bill", per_gb_month="1.5"
    )
    await add_plan(client, admin_key, **plan)
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "stored"})
    snapshots = [
        {"usage_type": "storage", "storage_gb": "25", "timestamp": "2026-01-01T00:00:00Z"},
        {"usage_type": "storage", "storage_gb": "10", "timestamp": "2026-01-16T00:00:00Z"},
    ]
    response = await client.post(
        f"{API}/usage/batch", json={"events": snapshots}, headers=auth(key)
    )
    assert response.json()["accepted"] == 2, response.text
    await advance(client, admin_key, clock_id, "2026-02-01T00:30:00Z")
    cycle = await invoice(client, key, (await list_invoices(client, key))[0]["id"])
    [storage] = [x for x in cycle["lines"] if x["kind"] == "storage"]
    # 25 GB for 15 of 31 days, then 10 GB: 535/31 GB-months, 7.2580645... beyond the 10.
    over = Decimal(535) / 31 - 10
    assert abs(Decimal(storage["quantity"]) - over) < Decimal("1e-17")
    assert storage["unit_price"] == "1.5"
    assert storage["amount_minor"] == 1089  # 10.887... USD
    check_sums(cycle)


async def test_finalization_enqueues_collection_on_the_accounts_clock(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    clock_id, _, key = await clocked_account(client, admin_key, "2026-01-01T00:00:00Z")
    await ok(client, key, "/subscriptions", {**SEED_BODY, "plan_type": "metered"})
    await advance(client, admin_key, clock_id, "2026-01-01T00:10:00Z")
    [draft] = await list_invoices(client, key)
    assert draft["status"] == "draft"
    await ok(client, admin_key, f"/invoices/{draft['id']}/finalize")
    async with billing.db.sessions() as session:
        jobs = list(await session.scalars(select(Job).where(Job.name == "invoices.collect")))
    assert [(j.payload, j.test_clock_id) for j in jobs] == [({"invoice_id": draft["id"]}, clock_id)]
