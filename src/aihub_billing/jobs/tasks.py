"""Housekeeping of the jobs table itself."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.jobs.repository import JobRepository

KEEP_SUCCEEDED = timedelta(days=7)


@registry.every(timedelta(hours=1), "jobs.prune")
async def prune(session: AsyncSession, run: JobRun) -> None:
    """Deletes succeeded jobs older than a week (failed and dead ones stay for inspection)
    and the dedupe keys held past their jobs (`enqueue(dedupe_until=…)`) that have expired."""
    now = run.ctx.clock.now()
    repo = JobRepository(session)
    await repo.delete_finished_before(now - KEEP_SUCCEEDED)
    await repo.delete_expired_keys(now)
