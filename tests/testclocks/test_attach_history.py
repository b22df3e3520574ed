"""Only a fresh account moves onto a test clock: one with billing history of its own (a
subscription, even a canceled one, an invoice, usage, a payment or account credit) stays on
real time, so its real documents, jobs and revenue never turn into a simulation's."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import select

from aihub_billing.models import Invoice, Job
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.subscriptions.helpers import SEED_BODY, ok, owner, post


async def attach(client: httpx.AsyncClient, admin_key: str, account: str) -> httpx.Response:
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2030-01-01T00:00:00Z"})
    return await post(
        client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": account}
    )


async def test_an_account_with_a_canceled_subscription_stays_on_real_time(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account, key = await owner(client, admin_key)
    sub = (await ok(client, key, "/subscriptions", SEED_BODY))["subscription"]
    await billing.worker().drain()  # the real first invoice: a draft, finalized later
    await ok(client, key, f"/subscriptions/{sub['id']}/cancel", {"at_period_end": False})

    refused = await attach(client, admin_key, account)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "account_has_history"

    # Its real invoice is finalized on real time, in the real series.
    billing.clock.set(billing.clock.now() + timedelta(days=2))
    await billing.worker().drain()
    async with billing.db.sessions() as session:
        [invoice] = (await session.execute(select(Invoice))).scalars()
    assert invoice.number == f"INV-{billing.clock.now().year}-000001"


async def test_usage_an_invoice_or_credit_is_history_too(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    used, key = await owner(client, admin_key)
    tracked = await client.post(
        f"{API}/usage/track",
        json={"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 1},
        headers=auth(key),
    )
    assert tracked.status_code == 201, tracked.text
    credited, _ = await owner(client, admin_key)
    await ok(
        client,
        admin_key,
        f"/accounts/{credited}/balance-adjustments",
        {"amount_minor": 500, "currency": "USD", "description": "goodwill"},
    )
    for account in (used, credited):
        refused = await attach(client, admin_key, account)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "account_has_history"
    fresh, _ = await owner(client, admin_key)
    assert (await attach(client, admin_key, fresh)).status_code == 201


async def test_attaching_while_subscribing_leaves_no_real_time_job_on_a_clocked_account(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """Subscribing and attaching take the account row in turn: either the attach sees the
    subscription (409), or the subscription is made on the clock, its jobs with it."""
    for _ in range(4):
        account, key = await owner(client, admin_key)
        clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2030-01-01T00:00:00Z"})
        subscribed, attached = await asyncio.gather(
            post(client, key, "/subscriptions", SEED_BODY),
            post(
                client,
                admin_key,
                f"/test-clocks/{clock['id']}/accounts",
                {"account_id": account},
            ),
        )
        assert subscribed.status_code == 201, subscribed.text
        assert attached.status_code in (201, 409), attached.text
        expected = clock["id"] if attached.status_code == 201 else None
        async with billing.db.sessions() as session:
            jobs = (
                await session.execute(
                    select(Job.name, Job.test_clock_id).where(
                        Job.payload["subscription_id"].as_string()
                        == subscribed.json()["subscription"]["id"]
                    )
                )
            ).all()
        assert jobs and {clock_id for _, clock_id in jobs} == {expected}, jobs
