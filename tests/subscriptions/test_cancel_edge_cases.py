"""Cancellations the renewal job has not caught up with: a cancel now while a renewal is
overdue, and a cancel of a provider-billed subscription that is still `incomplete`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Job, Subscription
from aihub_billing.service import BillingService
from tests.invoices.helpers import invoices_by_period, metered_plan, track
from tests.subscriptions.helpers import (
    SEED_BODY,
    add_plan,
    current,
    drain,
    history,
    ok,
    owner,
    subscribe,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    # These stories start on New Year's Day (the shared fixture is at the end of January).
    return FrozenClock(utc(2026, 1, 1))


async def test_cancel_now_with_an_overdue_renewal_invoices_the_closed_period_on_its_own(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    # 1,000 tokens included a month, 5,000 per million beyond (500 per 1,000 over).
    await add_plan(client, admin_key, **metered_plan("metered", 5000))
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key, plan_type="metered"))["subscription"]
    assert await drain(billing) == 0  # the first period's invoice
    clock.set(utc(2026, 1, 20))
    await track(client, key, "gpt-4o-mini", 2000, "2026-01-10T00:00:00Z")  # 1,000 over
    # The worker is late: February 1 has passed, its renewal has not run.
    clock.set(utc(2026, 2, 10))
    await track(client, key, "gpt-4o-mini", 1500, "2026-02-05T00:00:00Z")  # 500 over

    canceled = await ok(client, key, f"/subscriptions/{sub['id']}/cancel", {"at_period_end": False})
    body = canceled["subscription"]
    assert body["status"] == "canceled"
    assert (body["current_period_start"], body["ended_at"]) == (
        "2026-02-01T00:00:00Z",
        "2026-02-10T00:00:00Z",
    )
    await drain(billing)
    # January closes as its renewal closes it (February's fee in advance, January's overage
    # with January's allowance); the final invoice covers February's ten days only.
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
            "2026-02-01T00:00:00Z",
            [("subscription_fee", 5000), ("overage_tokens", 500)],
        ),
        (
            "subscription_final",
            "2026-02-01T00:00:00Z",
            "2026-02-10T00:00:00Z",
            [("overage_tokens", 250)],
        ),
    ]
    types = [e["type"] for e in await history(client, key)]
    assert types == ["created", "renewed", "canceled"]


async def test_cancel_now_when_a_scheduled_cancellation_is_overdue_ends_at_the_period_end(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    _, key = await owner(client, admin_key)
    sub = (await subscribe(client, key))["subscription"]
    path = f"/subscriptions/{sub['id']}/cancel"
    await ok(client, key, path, {"at_period_end": True})
    clock.set(utc(2026, 2, 10))  # the period ended; its renewal (the cancellation) is late

    canceled = (await ok(client, key, path, {"at_period_end": False}))["subscription"]
    # It ended when it was scheduled to, not ten days later, and no period was added.
    assert (canceled["status"], canceled["ended_at"]) == ("canceled", "2026-02-01T00:00:00Z")
    assert canceled["current_period_start"] == "2026-01-01T00:00:00Z"
    types = [e["type"] for e in await history(client, key)]
    assert types == ["created", "cancel_scheduled", "canceled"]


def _provider_plan(code: str) -> dict[str, Any]:
    price = {"currency": "USD", "amount_minor": 2999, "stripe_price_id": "price_Inc1"}
    return {"code": code, "name": code.title(), "limits": {}, "prices": [price]}


async def _incomplete(client: httpx.AsyncClient, admin_key: str) -> tuple[str, dict[str, Any]]:
    await add_plan(client, admin_key, **_provider_plan("pro-stripe"))
    _, key = await owner(client, admin_key)
    body = {**SEED_BODY, "plan_type": "pro-stripe", "provider_subscription_id": "sub_Inc1"}
    sub = (await ok(client, key, "/subscriptions", body))["subscription"]
    assert (sub["status"], sub["provider_billed"]) == ("incomplete", True)
    return key, sub


async def _unsubscribe_jobs(billing: BillingService) -> list[Job]:
    async with billing.db.sessions() as session:
        query = select(Job).where(Job.name == "collection.provider_unsubscribe")
        return list((await session.execute(query)).scalars())


async def test_cancel_at_period_end_of_an_incomplete_provider_subscription_ends_it_now(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    key, sub = await _incomplete(client, admin_key)
    path = f"/subscriptions/{sub['id']}/cancel"
    clock.set(utc(2026, 1, 5))

    # Nothing was paid, so there is no paid period to run to its end (and Stripe cancels an
    # `incomplete` subscription only at once): it ends now.
    canceled = (await ok(client, key, path, {"at_period_end": True}))["subscription"]
    assert (canceled["status"], canceled["cancel_at_period_end"]) == ("canceled", False)
    assert (canceled["canceled_at"], canceled["ended_at"]) == (
        "2026-01-05T00:00:00Z",
        "2026-01-05T00:00:00Z",
    )
    [job] = await _unsubscribe_jobs(billing)
    assert job.payload["provider_subscription_id"] == "sub_Inc1"
    types = [e["type"] for e in await history(client, key)]
    assert types == ["created", "canceled"]
    # The account is free to subscribe again, long before the period would have ended.
    assert (await current(client, key))["subscription"] is None
    again = (await subscribe(client, key))["subscription"]
    assert again["status"] == "active"


async def test_an_incomplete_subscription_already_set_to_cancel_ends_at_its_period_end(
    client: httpx.AsyncClient, admin_key: str, clock: FrozenClock, billing: BillingService
) -> None:
    # Scheduled before such cancellations ended at once: its renewal job ends it.
    key, sub = await _incomplete(client, admin_key)
    async with billing.db.sessions() as session:
        row = await session.get(Subscription, sub["id"])
        assert row is not None
        row.cancel_at_period_end, row.canceled_at = True, utc(2026, 1, 5)
        await session.commit()
    clock.set(utc(2026, 2, 1, 12))
    await drain(billing)
    assert (await current(client, key))["subscription"] is None
    types = [e["type"] for e in await history(client, key)]
    assert types == ["created", "canceled"]
    async with billing.db.sessions() as session:
        row = await session.get(Subscription, sub["id"])
        assert row is not None
        assert (row.status, row.ended_at) == ("canceled", utc(2026, 2, 1))
