"""Outbound notifications: signed POSTs to the account's webhook, retried through receiver
outages but not when the receiver refuses the request, signed with the time of sending."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.kit.clock import FrozenClock, SystemClock
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.models import Job
from aihub_billing.notifications.service import WEBHOOK_JOB, notifications, notify
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.notifications.conftest import Receiver
from tests.payments.support import owner_of_new_account


@pytest.fixture
def config_overrides() -> dict[str, object]:
    """The receivers listen on 127.0.0.1, which webhook targets may not be by default."""
    return {"notifications_allow_private_targets": True}


async def target(
    client: httpx.AsyncClient, admin_key: str, url: str, email: str | None = None
) -> tuple[str, str]:
    """A new account whose notifications go to `url`; returns its id and signing secret."""
    account_id, key = await owner_of_new_account(client, admin_key)
    body: dict[str, Any] = {"webhook_url": url}
    if email is not None:
        body["email"] = email
    answer = await client.put(f"{API}/quota/notifications", json=body, headers=auth(key))
    assert answer.status_code == 200, answer.text
    return account_id, str(answer.json()["webhook_secret"])


async def enqueue(
    billing: BillingService,
    account_id: str,
    event_id: str = "evt_1",
    test_clock_id: str | None = None,
) -> None:
    async with billing.transaction() as session:
        await notify(
            session,
            billing.context(),
            account_id=account_id,
            event_type="invoice.paid",
            event_id=event_id,
            subject="Invoice paid",
            data={"invoice_id": "inv_1"},
            test_clock_id=test_clock_id,
        )


async def webhook_job(billing: BillingService) -> Job:
    """The event's webhook job (its `notifications.deliver` job enqueues it)."""
    async with billing.db.sessions() as session:
        (job,) = (await session.execute(select(Job).where(Job.name == WEBHOOK_JOB))).scalars()
        return job


async def test_a_refused_delivery_is_not_retried(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
) -> None:
    account_id, _ = await target(client, admin_key, receiver.url)
    await enqueue(billing, account_id)
    receiver.status = 410  # the receiver says the endpoint is gone: retrying cannot help
    assert await billing.worker().drain() == 2  # the event's job, then its webhook's
    job = await webhook_job(billing)
    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error is not None and "410" in job.last_error
    clock.advance(hours=1)
    assert await billing.worker().drain() == 0
    assert len(receiver.received) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_delivery_outlives_a_receiver_outage_of_an_hour(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
    status: int,
) -> None:
    account_id, secret = await target(client, admin_key, receiver.url)
    await enqueue(billing, account_id)
    receiver.status = status
    outage_ends = clock.now() + timedelta(hours=1)
    worker = billing.worker()
    assert await worker.drain() == 2  # the event's job, then its webhook's first attempt
    while True:
        job = await webhook_job(billing)
        assert job.status == "pending", f"given up after {job.attempts} attempts"
        clock.advance(job.run_at - clock.now())
        if clock.now() >= outage_ends:
            break
        assert await worker.drain() == 1
    receiver.status = 200
    assert await worker.drain() == 1
    assert (await webhook_job(billing)).status == "succeeded"
    headers, body = receiver.received[-1]
    stamp, signature = (part.split("=", 1)[1] for part in headers["aihub-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(signature, expected.hexdigest())


async def test_the_signature_time_is_the_time_of_sending_on_a_test_clock(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, receiver: Receiver
) -> None:
    """Receivers refuse signatures older than a few minutes (replay protection) by their own
    clock: an account on a test clock months ahead still gets a fresh timestamp."""
    account_id, secret = await target(client, admin_key, receiver.url)
    simulated = Context(actor=SYSTEM, clock=FrozenClock(datetime(2031, 6, 1, tzinfo=UTC)))
    event = {"id": "evt_tc", "type": "invoice.paid", "created_at": "x", "data": {}}
    before = SystemClock().now()
    async with billing.transaction() as session:
        await notifications.send(session, simulated, account_id, event, "Invoice paid")
    after = SystemClock().now()
    headers, body = receiver.received[-1]
    stamp = int(headers["aihub-signature"].split(",")[0].removeprefix("t="))
    assert int(before.timestamp()) <= stamp <= int(after.timestamp()) + 1
    assert json.loads(body)["id"] == "evt_tc"
