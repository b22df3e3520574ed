"""Lifecycle jobs: renewal at each period end and the end of a trial."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.subscriptions.service import RENEW_JOB, TRIAL_END_JOB, subscriptions


@registry.job(RENEW_JOB)
async def renew(session: AsyncSession, run: JobRun) -> None:
    await subscriptions.renew(
        session,
        run.ctx,
        run.payload["subscription_id"],
        datetime.fromisoformat(run.payload["period_end"]),
    )


@registry.job(TRIAL_END_JOB)
async def trial_end(session: AsyncSession, run: JobRun) -> None:
    await subscriptions.end_trial(
        session,
        run.ctx,
        run.payload["subscription_id"],
        datetime.fromisoformat(run.payload["trial_end"]),
    )
