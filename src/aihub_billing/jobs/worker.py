"""The worker loop: claim due jobs, run each in its own transaction, retry with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import timedelta
from typing import Any

import structlog

from aihub_billing.jobs import scheduler
from aihub_billing.jobs.queue import DEFAULT_MAX_ATTEMPTS
from aihub_billing.jobs.registry import JobRegistry, JobRun, gives_up, registry
from aihub_billing.jobs.repository import JobRepository
from aihub_billing.kit.clock import Clock, monotonic
from aihub_billing.kit.context import SYSTEM, Context
from aihub_billing.kit.db import Database
from aihub_billing.kit.ids import new_token
from aihub_billing.models import Job

log = structlog.get_logger("aihub_billing.jobs")


def backoff(attempt: int, *, base_seconds: float = 2.0, cap_seconds: float = 3600.0) -> timedelta:
    """Delay before retry number `attempt` (1-based): 2 s, 4 s, 8 s … capped at an hour."""
    return timedelta(seconds=min(base_seconds * 2 ** (attempt - 1), cap_seconds))


class Worker:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        jobs: JobRegistry = registry,
        batch_size: int = 10,
        lease: timedelta = timedelta(minutes=5),
        poll_interval: float = 1.0,
        tick_interval: float = 30.0,
        worker_id: str | None = None,
        settings: dict[str, Any] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.settings = settings or {}
        self.max_attempts = max_attempts
        self.db = db
        self.clock = clock
        self.jobs = jobs
        self.batch_size = batch_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.tick_interval = tick_interval
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_token(4)}"

    async def tick(self) -> list[str]:
        async with self.db.sessions() as session:
            ctx = Context(actor=SYSTEM, clock=self.clock)
            enqueued = await scheduler.tick(session, ctx, jobs=self.jobs)
            await session.commit()
        return enqueued

    async def claim(self) -> list[Job]:
        now = self.clock.now()
        async with self.db.sessions() as session:
            repo = JobRepository(session)
            # A job whose worker died on every attempt would otherwise be retried forever.
            await repo.bury_abandoned(now=now, default_max_attempts=self.max_attempts)
            jobs = await repo.claim(
                worker_id=self.worker_id,
                now=now,
                lease_until=now + self.lease,
                limit=self.batch_size,
            )
            await session.commit()
        return jobs

    async def run_once(self) -> int:
        """Claims one batch and runs it; returns how many jobs were run."""
        jobs = await self.claim()
        if not jobs:
            return 0
        waiting = {job.id for job in jobs}
        heartbeat = asyncio.create_task(self._heartbeat(waiting))
        try:
            for job in jobs:
                await self.execute(job)
                waiting.discard(job.id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return len(jobs)

    async def _heartbeat(self, held: set[str]) -> None:
        """Keeps renewing the leases of a batch's jobs while earlier ones run."""
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            if not held:
                continue
            try:
                async with self.db.sessions() as session:
                    until = self.clock.now() + self.lease
                    await JobRepository(session).renew(list(held), self.worker_id, until)
                    await session.commit()
            except Exception:  # a missed beat only shortens the lease
                log.warning("worker.heartbeat_failed", worker_id=self.worker_id, exc_info=True)

    async def drain(self, max_rounds: int = 1000) -> int:
        """Runs batches until nothing is due (tests, CLI `worker --once`)."""
        total = 0
        for _ in range(max_rounds):
            ran = await self.run_once()
            total += ran
            if ran == 0:
                break
        return total

    async def execute(self, job: Job) -> None:
        handler = self.jobs.handlers.get(job.name)
        run = JobRun(
            job_id=job.id,
            name=job.name,
            payload=dict(job.payload),
            attempt=job.attempts,
            ctx=Context(actor=SYSTEM, clock=self.clock, request_id=job.id),
            settings=self.settings,
            test_clock_id=job.test_clock_id,
        )
        started = monotonic()
        try:
            if handler is None:
                raise LookupError(f"no handler registered for job {job.name!r}")
            async with self.db.sessions() as session:
                await handler(session, run)
                held = await JobRepository(session).finish(
                    job.id, self.worker_id, status="succeeded", now=self.clock.now()
                )
                if not held:
                    # The lease ran out and another worker took the job: our work must not land.
                    await session.rollback()
                    log.warning("job.lease_lost", job_id=job.id, job=job.name)
                    return
                await session.commit()
            log.info("job.succeeded", job_id=job.id, job=job.name, ms=_ms(started))
        except Exception as exc:
            await self._fail(job, exc)

    async def _fail(self, job: Job, exc: Exception) -> None:
        now = self.clock.now()
        dead = gives_up(exc, job.attempts, job.max_attempts or self.max_attempts)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        async with self.db.sessions() as session:
            await JobRepository(session).finish(
                job.id,
                self.worker_id,
                status="dead" if dead else "pending",
                now=now,
                run_at=None if dead else now + backoff(job.attempts),
                error=error,
            )
            await session.commit()
        log.warning(
            "job.dead" if dead else "job.retry",
            job_id=job.id,
            job=job.name,
            attempt=job.attempts,
            error=error,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Polls until `stop` is set; ticks the scheduler every `tick_interval` seconds."""
        log.info("worker.started", worker_id=self.worker_id)
        next_tick = 0.0
        while not stop.is_set():
            try:
                if monotonic() >= next_tick:
                    await self.tick()
                    next_tick = monotonic() + self.tick_interval
                if await self.run_once():
                    continue
            except Exception:  # the loop must outlive a database blip
                log.exception("worker.error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        log.info("worker.stopped", worker_id=self.worker_id)


def _ms(started: float) -> float:
    return round((monotonic() - started) * 1000, 2)
