"""Outbound notifications: an event enqueued in the caller's transaction, delivered by jobs.

`notify` enqueues the event's `notifications.deliver` job; it hands the event to one job per
channel the account has set when it runs (`notifications.webhook`, `notifications.email`),
each with its own dedupe key and `DELIVERY_ATTEMPTS`, so one channel failing neither delays,
stops nor repeats the other. Each channel job reads the account's target when it runs: a URL
fixed during the retries gets the next attempt, a channel removed is not sent to again.
(A `notifications.deliver` job queued before the split has the same payload and is handed on
the same way.)

The event is POSTed to the account's webhook URL, signed with its secret
(`AIHub-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, t the time of sending by the
wall clock, which receivers compare with theirs to refuse replays). A 5xx, 408, 425 or 429
answer, a timeout (the attempt has `timeout` seconds in all, however slowly the receiver
answers; of a failed answer's body only the start is read) or a refused connection retries
the job with backoff, for some five hours (`DELIVERY_ATTEMPTS`); any other 4xx answer is the
receiver refusing this request, which trying again cannot change: the webhook job is dead at
once. Email goes through the `EmailNotifier` interface (logged by default); a failing hook
retries the email job alone.

Targets are URLs account owners give, so the server must not become their way into its own
network (SSRF): a URL whose host is a loopback, private, link-local … literal or `localhost`
is refused when it is set, and at each delivery the host is resolved, refused (the webhook job
is dead at once) when any of its addresses is not public, and the request is sent to the checked
address (no second lookup) without following redirects. `allow_private_targets` lifts this
for local development and tests. Signing secrets are stored sealed (`kit.secretbox`) when
encryption is on; rows written before stay readable and are sealed when next set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs import queue
from aihub_billing.jobs.registry import PermanentJobError
from aihub_billing.kit.clock import Clock, SystemClock
from aihub_billing.kit.context import Context
from aihub_billing.kit.netguard import NonPublicTarget, Resolver, refused_host, resolve_public
from aihub_billing.kit.netguard import system_resolve as _system_resolve
from aihub_billing.kit.secretbox import SecretBox, SecretBoxError, is_sealed
from aihub_billing.models import QuotaNotificationTarget
from aihub_billing.notifications.errors import WebhookUrlNotAllowed

log = structlog.get_logger("aihub_billing.notifications")

DELIVER_JOB = "notifications.deliver"
WEBHOOK_JOB = "notifications.webhook"
EMAIL_JOB = "notifications.email"
WEBHOOK = "webhook"
EMAIL = "email"
CHANNELS = (WEBHOOK, EMAIL)
CHANNEL_JOBS = {WEBHOOK: WEBHOOK_JOB, EMAIL: EMAIL_JOB}
SIGNATURE_HEADER = "AIHub-Signature"
# Of each job. Backoff 2 s, 4 s … capped at an hour: 16 attempts span about five hours of
# receiver outage (the workers' default of 8 gave up after some four minutes).
DELIVERY_ATTEMPTS = 16
# 4xx answers that say "later", not "never".
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})
# Of a failed answer's body, only this much is read (for the job's error); a 2xx body is not
# read at all. The status says everything: the body is the receiver's to make endless.
_ANSWER_BYTES = 512


class WebhookRefused(PermanentJobError):
    """The receiver answered a 4xx that retrying cannot change (400, 401, 404, 410 …)."""


class WebhookTargetRefused(PermanentJobError):
    """The webhook's host is, or now resolves to, an address we do not send to (SSRF)."""


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
    """Enqueues one notification; the same `event_id` is delivered once (to each channel)."""
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
        *,
        allow_private_targets: bool = False,
        secrets: SecretBox | None = None,
        encrypt: bool = False,
        resolve: Resolver | None = None,
    ) -> None:
        self.email: EmailNotifier = email or LoggingEmailNotifier()
        self.timeout = timeout
        # Signs with the time of sending: not the context's, which is a test clock's simulated
        # time for its accounts (months ahead, which receivers would refuse as a replay).
        self.clock: Clock = clock or SystemClock()
        self.resolve: Resolver = resolve or _system_resolve
        self.configure(
            allow_private_targets=allow_private_targets, secrets=secrets, encrypt=encrypt
        )

    def configure(
        self, *, allow_private_targets: bool, secrets: SecretBox | None, encrypt: bool
    ) -> None:
        """Settings from the config (BillingService): private targets, the at-rest key (opens
        sealed secrets even when `encrypt`, sealing new ones, is off)."""
        if encrypt and secrets is None:
            raise ValueError("encrypting webhook secrets needs a key")
        self.allow_private_targets = allow_private_targets
        self.secrets = secrets
        self.encrypt = encrypt

    def check_url(self, url: str) -> None:
        """Refuses (422) a webhook URL whose host is a non-public literal or `localhost`."""
        if self.allow_private_targets:
            return
        reason = refused_host(httpx.URL(url).host)
        if reason is not None:
            raise WebhookUrlNotAllowed(f"webhook_url: {reason}; use a public host")

    def seal(self, secret: str) -> str:
        """The webhook secret as stored: sealed when encryption is on."""
        return self.secrets.seal(secret) if self.encrypt and self.secrets is not None else secret

    def _open(self, stored: str) -> str:
        if not is_sealed(stored):
            return stored  # written before encryption was on
        if self.secrets is None:
            # Our configuration, not the receiver: retried, so setting the key saves the event.
            raise RuntimeError("webhook secret is encrypted but no encryption_key is configured")
        try:
            return self.secrets.open(stored)
        except SecretBoxError as exc:
            raise RuntimeError(f"webhook secret: {exc}") from None

    async def deliver(
        self,
        session: AsyncSession,
        ctx: Context,
        payload: dict[str, Any],
        *,
        test_clock_id: str | None,
    ) -> list[str]:
        """The `notifications.deliver` job of an event enqueued by `notify`, also one queued
        before the channels were split: enqueues its channels' jobs on its test clock."""
        return await self.dispatch(
            session,
            ctx,
            str(payload["account_id"]),
            _event(payload),
            str(payload["subject"]),
            test_clock_id=test_clock_id,
        )

    async def dispatch(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str,
        event: dict[str, Any],
        subject: str,
        *,
        test_clock_id: str | None = None,
    ) -> list[str]:
        """Enqueues a job for each channel the account has now (none without a target), each
        delivered once per event id and retried on its own; returns their names."""
        target = await session.get(QuotaNotificationTarget, account_id)
        payload = {"account_id": account_id, "subject": subject, **event}
        names = [CHANNEL_JOBS[channel] for channel in CHANNELS if _has(target, channel)]
        for name in names:
            await queue.enqueue(
                session,
                ctx,
                name,
                payload,
                dedupe_key=f"{name}:{event['id']}",
                max_attempts=DELIVERY_ATTEMPTS,
                test_clock_id=test_clock_id,
            )
        return names

    async def deliver_channel(
        self, session: AsyncSession, ctx: Context, channel: str, payload: dict[str, Any]
    ) -> None:
        """A channel's job (`notifications.webhook`, `notifications.email`): sends only it."""
        await self.send(
            session,
            ctx,
            str(payload["account_id"]),
            _event(payload),
            str(payload["subject"]),
            channels=(channel,),
        )

    async def send(
        self,
        session: AsyncSession,
        ctx: Context,
        account_id: str,
        event: dict[str, Any],
        subject: str,
        *,
        channels: tuple[str, ...] = CHANNELS,
    ) -> None:
        """Sends the event to `channels` as the account's target is now: POSTs it signed to the
        webhook (a non-2xx raises, so the job retries), emails it when an address is set. A
        channel the account does not have (any more) is skipped."""
        target = await session.get(QuotaNotificationTarget, account_id)
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        skipped = [channel for channel in channels if not _has(target, channel)]
        if skipped:
            log.info(
                "notifications.skipped", account_id=account_id, event_id=event["id"], to=skipped
            )
        if (
            WEBHOOK in channels
            and target is not None
            and target.webhook_url
            and target.webhook_secret
        ):
            secret = self._open(target.webhook_secret)
            timestamp = int(self.clock.now().timestamp())
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            }
            status, answer = await self._post(httpx.URL(target.webhook_url), body, headers)
            said = f": {answer!r}" if answer else ""
            if 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS:
                raise WebhookRefused(f"webhook answered {status}{said}")
            if status >= 300:
                raise RuntimeError(f"webhook answered {status}{said}")
        if EMAIL in channels and target is not None and target.email:
            await self.email.send(target.email, subject, body.decode())
        sent = [channel for channel in channels if channel not in skipped]
        if sent:
            log.info("notifications.sent", account_id=account_id, event_id=event["id"], to=sent)

    async def _post(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POSTs to an address of `url`'s host that was checked, trying the next on a refused
        connection; the Host header and TLS (SNI, certificate) keep the URL's own name.
        Returns the answer's status and the start of its body when it failed.

        The whole attempt (resolving, connecting, the answer) has `timeout` seconds: httpx's
        timeout bounds each read, so a receiver trickling its answer would otherwise hold the
        job, and the leases of its worker's batch, as long as it liked. No status by then
        raises a TimeoutError, which retries the job with backoff; a status that came in time
        is the answer, however little of its body could be read."""
        answer = _Answer()
        try:
            async with asyncio.timeout(self.timeout):
                await self._attempt(url, body, headers, answer)
        except TimeoutError:
            if answer.status is None:
                raise TimeoutError(f"webhook did not answer within {self.timeout:g} s") from None
        assert answer.status is not None  # _attempt raises when no address answered
        return answer.status, answer.body[:_ANSWER_BYTES].decode(errors="replace")

    async def _attempt(
        self, url: httpx.URL, body: bytes, headers: dict[str, str], answer: _Answer
    ) -> None:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await resolve_public(
                host, port, resolve=self.resolve, allow_private=self.allow_private_targets
            )
        except NonPublicTarget as exc:
            raise WebhookTargetRefused(f"webhook target refused: {exc}") from None
        except OSError as exc:
            raise RuntimeError(f"webhook host {host} does not resolve: {exc}") from None
        # Identity: the start of a failed answer is read raw (a compressed one would expand).
        pinned = {**headers, "Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        failure: httpx.ConnectError | None = None
        # Redirects are never followed (httpx's default, kept explicit): a 3xx is a failure.
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            for address in addresses:
                try:
                    async with client.stream(
                        "POST",
                        url.copy_with(host=str(address)),
                        content=body,
                        headers=pinned,
                        extensions=extensions,
                    ) as response:
                        answer.status = response.status_code
                        if response.is_success:
                            return  # a 2xx body says nothing more: not read
                        # Only the start, for the job's error; the response closes unread.
                        async for chunk in response.aiter_raw():
                            answer.body += chunk
                            if len(answer.body) >= _ANSWER_BYTES:
                                return
                        return
                except httpx.ConnectError as exc:
                    failure = exc
        assert failure is not None
        raise failure


@dataclass
class _Answer:
    """What a webhook attempt got before it ended (or its deadline did)."""

    status: int | None = None
    body: bytes = b""


def _event(payload: dict[str, Any]) -> dict[str, Any]:
    """The event as sent, from a delivery job's payload."""
    return {k: payload[k] for k in ("id", "type", "created_at", "data")}


def _has(target: QuotaNotificationTarget | None, channel: str) -> bool:
    """Whether the account's target has `channel` set (a webhook needs its secret too)."""
    if target is None:
        return False
    if channel == WEBHOOK:
        return bool(target.webhook_url and target.webhook_secret)
    return bool(target.email)


notifications = Notifications()
