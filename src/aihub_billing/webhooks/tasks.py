"""Background processing of stored webhook events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.webhooks.service import PROCESS_JOB, webhooks


@registry.job(PROCESS_JOB)
async def process(session: AsyncSession, run: JobRun) -> None:
    await webhooks.process(session, run.ctx, str(run.payload["webhook_event_id"]))
