"""PaymentWebhookHandler: store each verified provider event once, enqueue it only when new,
and process it in a job, recording the outcome (processed, ignored, failed, dead)."""

from __future__ import annotations

import json
from datetime import timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs import queue
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.models import WebhookEvent
from aihub_billing.payments.payment_types import VerifiedWebhook
from aihub_billing.payments.service import payments
from aihub_billing.webhooks.mapping import map_event
from aihub_billing.webhooks.repository import WebhookRepository

log = structlog.get_logger("aihub_billing.webhooks")
PROCESS_JOB = "webhooks.process"
MAX_ATTEMPTS = 8


def retry_delay(attempt: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at an hour."""
    return timedelta(seconds=min(10 * 2 ** (attempt - 1), 3600))


class PaymentWebhookHandler:
    async def intake(
        self, session: AsyncSession, ctx: Context, webhook: VerifiedWebhook
    ) -> tuple[WebhookEvent, bool]:
        """Stores the event once per (provider, event id); True when it is new (and enqueued)."""
        repo = WebhookRepository(session)
        existing = await repo.by_provider_id(webhook.provider, webhook.event_id)
        if existing is not None:
            return existing, False
        now = ctx.clock.now()
        event = WebhookEvent(
            id=new_id("whe", now),
            provider=webhook.provider,
            event_id=webhook.event_id,
            type=webhook.type[:100],
            body=webhook.body.decode("utf-8"),
            event_created_at=webhook.created_at,
            received_at=now,
            status="pending",
            attempts=0,
            outcome=None,
            error=None,
            processed_at=None,
        )
        try:
            async with session.begin_nested():
                repo.add(event)
        except IntegrityError:
            # A concurrent delivery of the same event committed first.
            existing = await repo.by_provider_id(webhook.provider, webhook.event_id)
            if existing is None:  # pragma: no cover - the conflicting row must be there
                raise
            return existing, False
        await queue.enqueue(session, ctx, PROCESS_JOB, {"webhook_event_id": event.id})
        log.info(
            "webhook.received", provider=event.provider, event_id=event.event_id, type=event.type
        )
        return event, True

    async def process(self, session: AsyncSession, ctx: Context, webhook_event_id: str) -> None:
        """Maps and applies one stored event; a failure is recorded and retried later."""
        repo = WebhookRepository(session)
        event = await repo.get(webhook_event_id, for_update=True)
        if event is None or event.status in ("processed", "ignored", "dead"):
            return
        event.attempts += 1
        now = ctx.clock.now()
        try:
            async with session.begin_nested():
                body = json.loads(event.body)
                mapped = (
                    map_event(event.provider, event.event_id, body)
                    if isinstance(body, dict)
                    else None
                )
                if mapped is None:
                    outcome = f"ignored: {event.type} is not handled"
                else:
                    outcome = await payments.apply_event(session, ctx, mapped)
        except Exception as exc:  # recorded on the event, retried by a new job
            event.error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning(
                "webhook.failed",
                webhook_event_id=event.id,
                attempt=event.attempts,
                error=event.error,
            )
            if event.attempts >= MAX_ATTEMPTS:
                event.status = "dead"
            else:
                event.status = "failed"
                await queue.enqueue(
                    session,
                    ctx,
                    PROCESS_JOB,
                    {"webhook_event_id": event.id},
                    run_at=now + retry_delay(event.attempts),
                )
            await session.flush()
            return
        event.status = "ignored" if outcome.startswith("ignored") else "processed"
        event.outcome = outcome[:500]
        log.info("webhook.processed", webhook_event_id=event.id, outcome=event.outcome)
        event.processed_at = now
        await session.flush()


webhooks = PaymentWebhookHandler()
