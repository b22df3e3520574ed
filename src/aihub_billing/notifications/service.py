"""Outbound notifications: an event enqueued in the caller's transaction, delivered by a job.

The event is POSTed to the account's webhook URL, signed with its secret
(`AIHub-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, t the time of sending by the
wall clock, which receivers compare with theirs to refuse replays). A 5xx, 408, 425 or 429
answer, a timeout or a refused connection retries the job with backoff, for some five hours
(`DELIVERY_ATTEMPTS`); any other 4xx answer is the receiver refusing this request, which
trying again cannot change: the job is dead at once. Email goes through the `EmailNotifier`
interface (logged by default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs import queue
from aihub_billing.jobs.registry import PermanentJobError
from aihub_billing.kit.clock import Clock, SystemClock
from aihub_billing.kit.context import Context
from aihub_billing.models import QuotaNotificationTarget

log = structlog.get_logger("aihub_billing.notifications")

DELIVER_JOB = "notifications.deliver"
SIGNATURE_HEADER = "AIHub-Signature"
# Backoff 2 s, 4 s … capped at an hour: 16 attempts span about five hours of receiver outage
# (the workers' default of 8 gave up after some four minutes).
DELIVERY_ATTEMPTS = 16
# 4xx answers that say "later", not "never".
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


class WebhookRefused(PermanentJobError):
    """The receiver answered a 4xx that retrying cannot change (400, 401, 404, 410 …)."""


class EmailNotifier(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


class LoggingEmailNotifier:
    """Logs the email instead of sending it (no mail transport is configured)."""

    async def send(self, to: str, subject: str, body: str) -> None:
        log.info("notifications.email", to=to, subject=subject, body=body)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The AIHub-Signature value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


async def notify(
    session: AsyncSession,
    ctx: Context,
    *,
    account_id: str,
    event_type: str,
    event_id: str,
    subject: str,
    data: dict[str, Any],
    test_clock_id: str | None = None,
) -> None:
    """Enqueues one notification; the same `event_id` is delivered once."""
    payload = {
        "account_id": account_id,
        "type": event_type,
        "id": event_id,
        "subject": subject,
        "created_at": ctx.clock.now().isoformat(),
        "data": data,
    }
    await queue.enqueue(
        session,
        ctx,
        DELIVER_JOB,
        payload,
        dedupe_key=f"{DELIVER_JOB}:{event_id}",
        max_attempts=DELIVERY_ATTEMPTS,
        test_clock_id=test_clock_id,
    )


class Notifications:
    def __init__(
        self,
        email: EmailNotifier | None = None,
        timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.email: EmailNotifier = email or LoggingEmailNotifier()
        self.timeout = timeout
        # Signs with the time of sending: not the context's, which is a test clock's simulated
        # time for its accounts (months ahead, which receivers would refuse as a replay).
        self.clock: Clock = clock or SystemClock()

    async def deliver(self, session: AsyncSession, ctx: Context, payload: dict[str, Any]) -> None:
        """Sends an event enqueued by `notify` (the `notifications.deliver` job)."""
        event = {k: payload[k] for k in ("id", "type", "created_at", "data")}
        await self.send(session, ctx, str(payload["account_id"]), event, str(payload["subject"]))

    async def send(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str,
        event: dict[str, Any],
        subject: str,
    ) -> None:
        """POSTs the signed event to the account's webhook (a non-2xx raises, so the job
        retries) and emails it when the account set an address."""
        target = await session.get(QuotaNotificationTarget, account_id)
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        if target is not None and target.webhook_url and target.webhook_secret:
            timestamp = int(self.clock.now().timestamp())
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(target.webhook_secret, timestamp, body),
            }
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(target.webhook_url, content=body, headers=headers)
            status = response.status_code
            if 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS:
                raise WebhookRefused(f"webhook answered {status}")
            if status >= 300:
                raise RuntimeError(f"webhook answered {status}")
        if target is not None and target.email:
            await self.email.send(target.email, subject, body.decode())
        log.info("notifications.sent", account_id=account_id, event_id=event["id"])


notifications = Notifications()
