"""Outbound notifications: signed POSTs to the account's webhook, retried through receiver
outages but not when the receiver refuses the request, signed with the time of sending."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aihub_billing.jobs.worker import backoff
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


class SlowReceiver:
    """Answers each request with `answer`: its first `at_once` bytes at once, the rest in
    `chunk`-byte pieces `gap` seconds apart (each read well within any per-read timeout, the
    whole answer as slow as the receiver likes)."""

    def __init__(self, answer: bytes, *, at_once: int = 0, chunk: int, gap: float) -> None:
        self.answer, self.at_once, self.chunk, self.gap = answer, at_once, chunk, gap
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                conn.sendall(self.answer[: self.at_once])
                for start in range(self.at_once, len(self.answer), self.chunk):
                    if self.stop.wait(self.gap):
                        return
                    conn.sendall(self.answer[start : start + self.chunk])
            except OSError:
                return  # the client hung up

    def __enter__(self) -> SlowReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def head(status: str, body_len: int) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {body_len}\r\n\r\n".encode()


async def deliver_timed(billing: BillingService, account_id: str) -> float:
    """Seconds the worker takes to run the event's job and its webhook job's first attempt."""
    await enqueue(billing, account_id)
    started = time.monotonic()
    assert await billing.worker().drain() == 2
    return time.monotonic() - started


TIMEOUT = 1.0


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifications, "timeout", TIMEOUT)


@pytest.mark.usefixtures("short_timeout")
async def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout_and_retried(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService, clock: FrozenClock
) -> None:
    """The timeout is the attempt's in all, not each read's: a receiver sending its answer a
    byte at a time would otherwise hold the job (and its batch's leases) for as long."""
    with SlowReceiver(head("200 OK", 0), chunk=1, gap=0.1) as slow:  # 4 s to answer
        account_id, _ = await target(client, admin_key, slow.url)
        elapsed = await deliver_timed(billing, account_id)
    assert elapsed < 3 * TIMEOUT
    job = await webhook_job(billing)
    assert (job.status, job.attempts) == ("pending", 1)
    assert job.last_error == "TimeoutError: webhook did not answer within 1 s"
    assert job.run_at == clock.now() + backoff(1)


@pytest.mark.usefixtures("short_timeout")
async def test_a_refusal_trickling_its_body_is_dead_at_once_within_the_timeout(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """The status came in time: the body, read only for the error, is not waited for."""
    body = b"gone" * 10
    refusal = head("410 Gone", len(body))
    with SlowReceiver(refusal + body, at_once=len(refusal), chunk=1, gap=0.1) as slow:
        account_id, _ = await target(client, admin_key, slow.url)
        elapsed = await deliver_timed(billing, account_id)
    assert elapsed < 3 * TIMEOUT  # the body takes 4 s
    job = await webhook_job(billing)
    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error is not None
    assert job.last_error.startswith("WebhookRefused: webhook answered 410: 'gon")


@pytest.mark.usefixtures("short_timeout")
async def test_only_the_start_of_a_failed_answer_is_read(
    client: httpx.AsyncClient, admin_key: str, billing: BillingService
) -> None:
    """An error body streamed at full speed is read up to 512 bytes, then hung up on."""
    failure = head("503 Busy", 1 << 30)  # announced, never all sent
    body = b"x" * (4 << 20)  # 10 s at this pace
    with SlowReceiver(failure + body, at_once=len(failure), chunk=4096, gap=0.01) as slow:
        account_id, _ = await target(client, admin_key, slow.url)
        elapsed = await deliver_timed(billing, account_id)
    assert elapsed < 3 * TIMEOUT
    job = await webhook_job(billing)
    assert job.status == "pending"
    assert job.last_error == f"RuntimeError: webhook answered 503: {'x' * 512!r}"
