"""A quota threshold notification of an account on a test clock is the clock's: dated on its
time and run by its advance, never claimed by a worker on real time."""

from __future__ import annotations

from datetime import datetime

import httpx
from sqlalchemy import select

from aihub_billing.models import Job
from aihub_billing.service import BillingService
from tests.api.helpers import auth
from tests.quota.test_api import QUOTA, check, override, owner
from tests.subscriptions.helpers import ok, post

FROZEN = "2031-06-10T00:00:00Z"


async def test_threshold_notifications_of_a_clocked_account_run_on_its_clock(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    account_id, key = await owner(client, admin_key)
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": FROZEN})
    attached = await post(
        client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": account_id}
    )
    assert attached.status_code == 201, attached.text
    target = await client.put(
        f"{QUOTA}/notifications", json={"email": "ops@acme.test"}, headers=auth(key)
    )
    assert target.status_code == 200, target.text
    await override(client, admin_key, account_id=account_id, included_api_calls=2)
    for _ in range(2):  # 2 of 2 crosses 80% and 100%
        assert (await check(client, key)).status_code == 200
    await billing.flush_quota_events()

    async with billing.db.sessions() as session:
        jobs = list(
            (await session.execute(select(Job).where(Job.name == "quota.notify"))).scalars()
        )
    assert sorted((j.payload["threshold"], j.test_clock_id, j.run_at) for j in jobs) == [
        (threshold, clock["id"], datetime.fromisoformat(FROZEN)) for threshold in (80, 100)
    ]
    assert await billing.worker().drain() == 0  # not a worker's
