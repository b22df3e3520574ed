"""The delivery jobs of outbound notifications: an event's, then one per channel."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.notifications.service import (
    DELIVER_JOB,
    EMAIL,
    EMAIL_JOB,
    WEBHOOK,
    WEBHOOK_JOB,
    notifications,
)


@registry.job(DELIVER_JOB)
async def deliver(session: AsyncSession, run: JobRun) -> None:
    """Hands the event to a job per channel (also a job queued before they were split)."""
    await notifications.deliver(session, run.ctx, run.payload, test_clock_id=run.test_clock_id)


@registry.job(WEBHOOK_JOB)
async def deliver_webhook(session: AsyncSession, run: JobRun) -> None:
    await notifications.deliver_channel(session, run.ctx, WEBHOOK, run.payload)


@registry.job(EMAIL_JOB)
async def deliver_email(session: AsyncSession, run: JobRun) -> None:
    await notifications.deliver_channel(session, run.ctx, EMAIL, run.payload)
