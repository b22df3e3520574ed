"""Queries on the jobs table: insert, claim with SKIP LOCKED, finish."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import Job, JobDedupeKey


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def backlog(self, now: datetime) -> tuple[dict[str, int], datetime | None]:
        """Jobs the workers hold or owe, by status (pending, running, dead; test-clock jobs
        are not theirs), and the run time of the oldest pending job that is due."""
        mine = Job.test_clock_id.is_(None)
        counts = await self.session.execute(
            select(Job.status, func.count())
            .where(mine, Job.status.in_(("pending", "running", "dead")))
            .group_by(Job.status)
        )
        oldest = await self.session.execute(
            select(func.min(Job.run_at)).where(mine, Job.status == "pending", Job.run_at <= now)
        )
        by_status = {"pending": 0, "running": 0, "dead": 0}
        by_status.update({str(status): int(n) for status, n in counts.all()})
        return by_status, oldest.scalar_one()

    def add(self, job: Job) -> None:
        self.session.add(job)

    async def add_once(self, job: Job) -> bool:
        """Inserts unless a job with the same dedupe key exists; True when inserted."""
        values = {c.key: getattr(job, c.key) for c in Job.__table__.columns}
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert(Job).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"])
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def hold_key(self, key: str, expires_at: datetime) -> bool:
        """Records `key` as used until `expires_at`; False when it is held already (its job
        exists or existed, even if pruned since)."""
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = (
            insert(JobDedupeKey)
            .values(key=key, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def add_many_once(self, jobs: list[Job]) -> int:
        """`add_once` for many jobs in one statement; returns how many were inserted."""
        first: dict[str | None, Job] = {}
        for job in jobs:  # the first of a key wins, as it would one statement at a time
            first.setdefault(job.dedupe_key, job)
        jobs = list(first.values())
        if not jobs:
            return 0
        columns = [c.key for c in Job.__table__.columns]
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        total = 0
        # Within the drivers' bind-parameter limits (SQLite allows 32,766 per statement).
        for start in range(0, len(jobs), 1000):
            values = [{c: getattr(job, c) for c in columns} for job in jobs[start : start + 1000]]
            stmt = insert(Job).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"])
            result = await self.session.execute(stmt)
            total += int(getattr(result, "rowcount", 0) or 0)
        return total

    async def claim(
        self, *, worker_id: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Job]:
        """Marks up to `limit` due jobs as running for this worker and returns them.

        Due = pending and run_at has come, or running with an expired lease (its worker died).
        SKIP LOCKED lets any number of workers claim side by side on PostgreSQL; SQLite has
        one writer at a time, which the single UPDATE makes atomic.
        """
        due = (
            select(Job.id)
            .where(
                or_(
                    (Job.status == "pending") & (Job.run_at <= now),
                    (Job.status == "running") & (Job.locked_until < now),
                ),
                # Jobs on a test clock run only when that clock is advanced.
                Job.test_clock_id.is_(None),
            )
            .order_by(Job.run_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(Job)
            .where(Job.id.in_(due.scalar_subquery()))
            .values(
                status="running",
                locked_by=worker_id,
                locked_until=lease_until,
                attempts=Job.attempts + 1,
            )
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return sorted(result.scalars(), key=lambda job: (job.run_at, job.id))

    async def bury_abandoned(self, *, now: datetime, default_max_attempts: int) -> int:
        """Marks dead the running jobs whose lease expired with no attempts left."""
        limit = func.coalesce(Job.max_attempts, default_max_attempts)
        result = await self.session.execute(
            update(Job)
            .where(Job.status == "running", Job.locked_until < now, Job.attempts >= limit)
            .values(
                status="dead",
                locked_by=None,
                locked_until=None,
                finished_at=now,
                last_error="lease expired on the last attempt: the worker died or hung",
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def renew(self, job_ids: list[str], worker_id: str, lease_until: datetime) -> int:
        """Extends this worker's leases; returns how many it still held."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.locked_by == worker_id, Job.status == "running")
            .values(locked_until=lease_until)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def finish(
        self,
        job_id: str,
        worker_id: str,
        *,
        status: str,
        now: datetime,
        run_at: datetime | None = None,
        error: str | None = None,
    ) -> bool:
        """Records the outcome, only if this worker still holds the job."""
        values: dict[str, object] = {
            "status": status,
            "locked_by": None,
            "locked_until": None,
            "last_error": error,
        }
        if status in ("succeeded", "dead"):
            values["finished_at"] = now
        if run_at is not None:
            values["run_at"] = run_at
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def delete_finished_before(self, cutoff: datetime) -> int:
        result = await self.session.execute(
            delete(Job).where(Job.status == "succeeded", Job.finished_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_expired_keys(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(JobDedupeKey).where(JobDedupeKey.expires_at < now)
        )
        return int(getattr(result, "rowcount", 0) or 0)
