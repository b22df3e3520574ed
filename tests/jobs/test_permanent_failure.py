"""A handler that raises PermanentJobError ends its job dead at once, attempts left or not."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRegistry, JobRun, PermanentJobError
from aihub_billing.jobs.worker import Worker
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.service import BillingService
from tests.jobs.support import add_job, get_job


class Refused(PermanentJobError):
    pass


async def test_a_permanent_failure_is_dead_at_once_and_never_retried(
    billing: BillingService, clock: FrozenClock
) -> None:
    calls: list[int] = []

    async def refuses(session: AsyncSession, run: JobRun) -> None:
        calls.append(run.attempt)
        raise Refused("the other side said no")

    jobs = JobRegistry()
    jobs.job("test.refuses")(refuses)
    job_id = await add_job(billing, jobs, "test.refuses", max_attempts=5)
    worker = Worker(billing.db, clock, jobs=jobs)
    assert await worker.drain() == 1
    job = await get_job(billing, job_id)
    assert (job.status, job.attempts) == ("dead", 1)
    assert job.last_error == "Refused: the other side said no"
    assert job.finished_at == clock.now()
    clock.advance(timedelta(days=1))
    assert await worker.drain() == 0
    assert calls == [1]
