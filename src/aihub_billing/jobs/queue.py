"""Enqueue a job in the caller's transaction: it exists exactly when the change commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRegistry, registry
from aihub_billing.jobs.repository import JobRepository
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.models import Job

# Used when neither the job nor the worker's configuration sets a limit.
DEFAULT_MAX_ATTEMPTS = 8


async def enqueue(
    session: AsyncSession,
    ctx: Context,
    name: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    dedupe_until: datetime | None = None,
    max_attempts: int | None = None,
    jobs: JobRegistry = registry,
    test_clock_id: str | None = None,
) -> Job | None:
    """Adds the job to the session; with a dedupe key, None when that job already exists.

    `jobs` is the registry the name must be known to (the global one unless a test says so).
    A `test_clock_id` job is never claimed by workers: advancing that test clock runs it.

    A dedupe key lasts as long as its job row, and `jobs.prune` deletes succeeded jobs after
    a week. Most keys cannot come back by then (the domain's own state refuses a second
    invoice, payment or event); a key that can (a threshold notification, until its period
    ends) passes `dedupe_until`, and is refused until then even after its job is pruned.
    """
    if name not in jobs.handlers:
        raise ValueError(f"no handler registered for job {name!r}")
    if dedupe_until is not None and dedupe_key is None:
        raise ValueError("dedupe_until needs a dedupe_key")
    now = ctx.clock.now()
    job = Job(
        id=new_id("job", now),
        name=name,
        payload=payload or {},
        status="pending",
        run_at=run_at or now,
        attempts=0,
        max_attempts=max_attempts,
        dedupe_key=dedupe_key,
        locked_by=None,
        locked_until=None,
        last_error=None,
        created_at=now,
        finished_at=None,
        test_clock_id=test_clock_id,
    )
    repo = JobRepository(session)
    if dedupe_key is None:
        repo.add(job)
        await session.flush()
        return job
    if dedupe_until is not None:
        # Not deferred: the key is held now, as a job without a key is added now.
        if not await repo.hold_key(dedupe_key, dedupe_until):
            return None
        return job if await repo.add_once(job) else None
    deferred = session.info.get(_DEFERRED_KEY)
    if deferred is not None:
        deferred.append(job)
        return job
    return job if await repo.add_once(job) else None


_DEFERRED_KEY = "jobs.deferred"


@asynccontextmanager
async def deferred_enqueues(session: AsyncSession) -> AsyncIterator[None]:
    """Within it, jobs with a dedupe key are inserted together when it ends (one statement,
    duplicates skipped) instead of one statement each: for batch work such as period close.
    They are still part of the caller's transaction; `enqueue` returns the job either way."""
    if session.info.get(_DEFERRED_KEY) is not None:
        yield  # already deferring: the outermost block inserts them
        return
    jobs: list[Job] = []
    session.info[_DEFERRED_KEY] = jobs
    try:
        yield
    finally:
        session.info.pop(_DEFERRED_KEY, None)
    await JobRepository(session).add_many_once(jobs)
