"""One job per channel: the webhook and the email of an event are delivered, retried and
given up on independently, so neither channel's failure delays, stops or repeats the other."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.jobs import queue
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.models import Job
from aihub_billing.notifications.service import notifications, sign
from aihub_billing.service import BillingService
from tests.api.helpers import API, auth
from tests.notifications.conftest import Receiver
from tests.notifications.test_delivery import enqueue, target
from tests.payments.support import owner_of_new_account
from tests.subscriptions.helpers import ok

# The job names, spelled out: jobs already in a database are found by these strings.
DELIVER = "notifications.deliver"
WEBHOOK = "notifications.webhook"
EMAIL = "notifications.email"
ADDRESS = "billing@example.com"


class Mailbox:
    """The email hook: records what it sends, failing the first `failures` sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.failures = 0

    async def send(self, to: str, subject: str, body: str) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("mail relay unavailable")
        self.sent.append((to, subject, json.loads(body)))


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Mailbox:
    box = Mailbox()
    monkeypatch.setattr(notifications, "email", box)
    return box


@pytest.fixture
def config_overrides() -> dict[str, object]:
    """The receivers listen on 127.0.0.1, which webhook targets may not be by default."""
    return {"notifications_allow_private_targets": True}


async def jobs(billing: BillingService, *names: str) -> dict[str, tuple[str, int]]:
    """Each job of these names: its (status, attempts)."""
    async with billing.db.sessions() as session:
        rows = (await session.execute(select(Job).where(Job.name.in_(names)))).scalars()
        return {job.name: (job.status, job.attempts) for job in rows}


async def set_target(
    client: httpx.AsyncClient, admin_key: str, account_id: str, **body: str
) -> httpx.Response:
    answer = await client.put(
        f"{API}/quota/notifications",
        params={"account_id": account_id},
        json=body,
        headers=auth(admin_key),
    )
    assert answer.status_code == 200, answer.text
    return answer


def refuse_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook's host now resolves to the cloud metadata address (SSRF guard on)."""

    async def resolve(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    monkeypatch.setattr(notifications, "resolve", resolve)
    monkeypatch.setattr(notifications, "allow_private_targets", False)


# --- the behaviour this fixes ----------------------------------------------------------------


@pytest.mark.parametrize("refusal", ["410", "target"])
async def test_a_refused_webhook_does_not_stop_the_email(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    refusal: str,
) -> None:
    url = receiver.url if refusal == "410" else "http://hooks.example.com/aihub"
    account_id, _ = await target(client, admin_key, url, email=ADDRESS)
    receiver.status = 410
    if refusal == "target":
        refuse_the_target(monkeypatch)
    await enqueue(billing, account_id)
    await billing.worker().drain()
    assert [(to, subject, body["id"]) for to, subject, body in mailbox.sent] == [
        (ADDRESS, "Invoice paid", "evt_1")
    ]
    assert (await jobs(billing, WEBHOOK))[WEBHOOK] == ("dead", 1)
    assert (await jobs(billing, EMAIL))[EMAIL] == ("succeeded", 1)
    clock.advance(hours=1)
    assert await billing.worker().drain() == 0
    assert len(mailbox.sent) == 1


async def test_a_failing_webhook_does_not_delay_the_email(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    receiver: Receiver,
    mailbox: Mailbox,
) -> None:
    account_id, _ = await target(client, admin_key, receiver.url, email=ADDRESS)
    receiver.status = 503
    await enqueue(billing, account_id)
    await billing.worker().drain()
    assert len(mailbox.sent) == 1  # sent now, not after the receiver's outage
    assert (await jobs(billing, WEBHOOK))[WEBHOOK] == ("pending", 1)


async def test_an_email_hook_failing_once_does_not_post_the_webhook_again(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
    mailbox: Mailbox,
) -> None:
    account_id, _ = await target(client, admin_key, receiver.url, email=ADDRESS)
    mailbox.failures = 1
    await enqueue(billing, account_id)
    await billing.worker().drain()
    clock.advance(hours=1)  # past the email's backoff
    await billing.worker().drain()
    assert len(receiver.received) == 1
    assert len(mailbox.sent) == 1
    assert await jobs(billing, WEBHOOK, EMAIL) == {
        WEBHOOK: ("succeeded", 1),
        EMAIL: ("succeeded", 2),
    }


# --- jobs queued before the upgrade ------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 410])
async def test_a_job_queued_before_the_upgrade_delivers_to_both_channels(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    receiver: Receiver,
    mailbox: Mailbox,
    status: int,
) -> None:
    """`notifications.deliver` with the payload `notify` wrote before the channels were split
    (one job for both): it still sends the webhook and the email, each on its own."""
    account_id, _ = await target(client, admin_key, receiver.url, email=ADDRESS)
    receiver.status = status
    payload = {
        "account_id": account_id,
        "type": "invoice.paid",
        "id": "evt_old",
        "subject": "Invoice paid",
        "created_at": "2026-01-01T00:00:00+00:00",
        "data": {"invoice_id": "inv_1"},
    }
    async with billing.transaction() as session:
        await queue.enqueue(
            session,
            billing.context(),
            DELIVER,
            payload,
            dedupe_key=f"{DELIVER}:evt_old",
            max_attempts=16,
        )
    await billing.worker().drain()
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0][1])["id"] == "evt_old"
    assert [(to, body["id"]) for to, _, body in mailbox.sent] == [(ADDRESS, "evt_old")]
    assert (await jobs(billing, DELIVER))[DELIVER] == ("succeeded", 1)


# --- where an event goes is decided when it is delivered --------------------------------------


async def test_an_account_without_a_target_gets_no_channel_jobs(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, mailbox: Mailbox
) -> None:
    account_id, _ = await owner_of_new_account(client, admin_key)
    await enqueue(billing, account_id)
    assert await billing.worker().drain() == 1
    assert await jobs(billing, DELIVER, WEBHOOK, EMAIL) == {DELIVER: ("succeeded", 1)}
    assert mailbox.sent == []


async def test_an_email_set_before_the_event_is_delivered_gets_it(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, mailbox: Mailbox
) -> None:
    account_id, _ = await owner_of_new_account(client, admin_key)
    await enqueue(billing, account_id)
    await set_target(client, admin_key, account_id, email=ADDRESS)
    await billing.worker().drain()
    assert [to for to, _, _ in mailbox.sent] == [ADDRESS]
    assert set(await jobs(billing, WEBHOOK, EMAIL)) == {EMAIL}


async def test_a_webhook_url_fixed_during_the_retries_gets_the_next_attempt(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
    mailbox: Mailbox,
) -> None:
    """The target is read when each attempt is made: the owner fixing the URL (a new secret
    comes with it) is what the next retry uses."""
    account_id, _ = await target(client, admin_key, receiver.url, email=ADDRESS)
    receiver.status = 503
    await enqueue(billing, account_id)
    await billing.worker().drain()
    fixed = Receiver()
    fixed.server.start()
    try:
        answer = await set_target(
            client, admin_key, account_id, webhook_url=fixed.url, email=ADDRESS
        )
        clock.advance(hours=1)
        await billing.worker().drain()
    finally:
        fixed.server.stop()
    assert len(receiver.received) == 1
    [(headers, body)] = fixed.received
    stamp = int(headers["aihub-signature"].split(",")[0].removeprefix("t="))
    assert headers["aihub-signature"] == sign(answer.json()["webhook_secret"], stamp, body)
    assert len(mailbox.sent) == 1  # not again with the webhook's retry


async def test_a_webhook_removed_during_the_retries_is_not_posted_again(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    clock: FrozenClock,
    receiver: Receiver,
    mailbox: Mailbox,
) -> None:
    account_id, _ = await target(client, admin_key, receiver.url, email=ADDRESS)
    receiver.status = 503
    await enqueue(billing, account_id)
    await billing.worker().drain()
    await set_target(client, admin_key, account_id, email=ADDRESS)  # no webhook any more
    clock.advance(hours=1)
    await billing.worker().drain()
    assert len(receiver.received) == 1
    assert len(mailbox.sent) == 1
    assert (await jobs(billing, WEBHOOK))[WEBHOOK] == ("succeeded", 2)


# --- test clocks -------------------------------------------------------------------------------


async def test_on_a_test_clock_both_channels_are_delivered_by_the_advance(
    client: httpx.AsyncClient,
    admin_key: str,
    billing: BillingService,
    receiver: Receiver,
    mailbox: Mailbox,
) -> None:
    account_id, _ = await target(client, admin_key, receiver.url, email=ADDRESS)
    clock = await ok(client, admin_key, "/test-clocks", {"frozen_time": "2031-06-01T00:00:00Z"})
    await ok(client, admin_key, f"/test-clocks/{clock['id']}/accounts", {"account_id": account_id})
    await enqueue(billing, account_id, test_clock_id=clock["id"])
    assert await billing.worker().drain() == 0  # the clock's jobs wait for its advance
    moved = await ok(
        client,
        admin_key,
        f"/test-clocks/{clock['id']}/advance",
        {"frozen_time": "2031-06-01T01:00:00Z"},
    )
    assert sorted(job["name"] for job in moved["jobs_run"]) == [DELIVER, EMAIL, WEBHOOK]
    assert len(receiver.received) == 1
    assert len(mailbox.sent) == 1
