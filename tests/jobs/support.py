"""Helpers shared by the jobs tests: enqueue in a committed transaction, read jobs back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from aihub_billing.jobs.queue import enqueue
from aihub_billing.jobs.registry import JobRegistry
from aihub_billing.kit.ids import new_id
from aihub_billing.models import Job
from aihub_billing.service import BillingService


async def add_job(billing: BillingService, jobs: JobRegistry, name: str, **options: Any) -> str:
    """Enqueues one job in its own committed transaction; returns its id."""
    async with billing.transaction() as session:
        job = await enqueue(session, billing.context(), name, jobs=jobs, **options)
        assert job is not None
        return job.id


async def load_job(billing: BillingService, job_id: str) -> Job | None:
    async with billing.db.sessions() as session:
        return await session.get(Job, job_id)


async def get_job(billing: BillingService, job_id: str) -> Job:
    job = await load_job(billing, job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


async def all_jobs(billing: BillingService) -> list[Job]:
    async with billing.db.sessions() as session:
        return list((await session.execute(select(Job).order_by(Job.id))).scalars())


def make_job(
    name: str,
    *,
    status: str,
    created_at: datetime,
    run_at: datetime | None = None,
    finished_at: datetime | None = None,
    attempts: int = 1,
    last_error: str | None = None,
) -> Job:
    """A row as the worker would have left it, for tests that need history."""
    return Job(
        id=new_id("job", created_at),
        name=name,
        payload={},
        status=status,
        run_at=run_at or created_at,
        attempts=attempts,
        max_attempts=8,
        dedupe_key=None,
        locked_by=None,
        locked_until=None,
        last_error=last_error,
        created_at=created_at,
        finished_at=finished_at,
    )
