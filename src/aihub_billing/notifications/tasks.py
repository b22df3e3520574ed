"""The delivery job of outbound notifications."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.notifications.service import DELIVER_JOB, notifications


@registry.job(DELIVER_JOB)
async def deliver(session: AsyncSession, run: JobRun) -> None:
    await notifications.deliver(session, run.ctx, run.payload)
