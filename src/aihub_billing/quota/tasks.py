"""Background jobs of the quota domain."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.quota.service import NOTIFY_JOB, notifications


@registry.job(NOTIFY_JOB)
async def notify(session: AsyncSession, run: JobRun) -> None:
    """One threshold notification, handed to a job per channel (webhook, email)."""
    await notifications.deliver(session, run.ctx, run.payload, test_clock_id=run.test_clock_id)
