"""The job worker on both databases: outbox, exactly-once claims, retries, leases, run loop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.audit.service import audit
from aihub_billing.jobs.queue import deferred_enqueues, enqueue
from aihub_billing.jobs.registry import JobRegistry, JobRun
from aihub_billing.jobs.repository import JobRepository
from aihub_billing.jobs.worker import Worker, backoff
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.db import open_database
from aihub_billing.models import AuditEntry, Job
from aihub_billing.service import BillingService
from tests.jobs.support import add_job, all_jobs, get_job, load_job


class Boom(Exception):
    pass


async def noop(session: AsyncSession, run: JobRun) -> None:
    return None


async def write_audit(session: AsyncSession, run: JobRun) -> None:
    """A handler's own write, tagged with the attempt that made it."""
    await audit.record(
        session,
        run.ctx,
        action="test.job_ran",
        object_type="job",
        object_id=f"{run.job_id}#{run.attempt}",
        account_id=None,
    )
    await session.flush()


async def audit_object_ids(billing: BillingService) -> list[str]:
    async with billing.db.sessions() as session:
        result = await session.execute(select(AuditEntry.object_id).order_by(AuditEntry.id))
        return list(result.scalars())


def registry_with(name: str, handler: object) -> JobRegistry:
    jobs = JobRegistry()
    jobs.job(name)(handler)  # type: ignore[arg-type]
    return jobs


# 1. Transactional outbox


async def test_job_enqueued_in_a_rolled_back_transaction_does_not_exist(
    billing: BillingService,
) -> None:
    jobs = registry_with("test.noop", noop)
    with pytest.raises(Boom):
        async with billing.transaction() as session:
            job = await enqueue(session, billing.context(), "test.noop", jobs=jobs)
            assert job is not None
            job_id = job.id
            raise Boom
    assert await load_job(billing, job_id) is None
    assert await all_jobs(billing) == []


async def test_job_enqueued_in_a_committed_transaction_is_pending(
    billing: BillingService, clock: FrozenClock
) -> None:
    jobs = registry_with("test.noop", noop)
    job_id = await add_job(billing, jobs, "test.noop", payload={"k": 1})
    job = await get_job(billing, job_id)
    assert job.status == "pending"
    assert (job.name, job.payload, job.attempts) == ("test.noop", {"k": 1}, 0)
    assert job.run_at == clock.now()
    assert job.locked_by is None and job.finished_at is None


async def test_deferred_enqueues_insert_once_at_the_end_and_skip_duplicates(
    billing: BillingService,
) -> None:
    jobs = registry_with("test.noop", noop)
    existing = await add_job(billing, jobs, "test.noop", dedupe_key="k:0", payload={"n": 0})
    async with billing.transaction() as session, deferred_enqueues(session):
        for n, key in enumerate(["k:0", "k:1", "k:1"]):  # k:0 exists; k:1 is asked for twice
            await enqueue(
                session, billing.context(), "test.noop", {"n": n}, dedupe_key=key, jobs=jobs
            )
        plain = await enqueue(session, billing.context(), "test.noop", jobs=jobs)
        assert plain is not None
        # Inside the block only the job without a dedupe key is written yet.
        written = (await session.execute(select(Job.dedupe_key))).scalars().all()
        assert set(written) == {"k:0", None}
    rows = {job.dedupe_key: job for job in await all_jobs(billing)}
    assert set(rows) == {"k:0", "k:1", None}
    assert rows["k:0"].id == existing and rows["k:0"].payload == {"n": 0}
    assert rows["k:1"].payload == {"n": 1}  # the first asked for wins


async def test_deferred_enqueues_write_nothing_when_the_block_fails(
    billing: BillingService,
) -> None:
    jobs = registry_with("test.noop", noop)
    async with billing.transaction() as session:
        with pytest.raises(Boom):
            async with deferred_enqueues(session):
                await enqueue(session, billing.context(), "test.noop", dedupe_key="x", jobs=jobs)
                raise Boom
        assert (await session.execute(select(Job.id))).scalars().all() == []


async def test_enqueue_refuses_a_name_without_handler(billing: BillingService) -> None:
    async with billing.transaction() as session:
        with pytest.raises(ValueError, match="no handler"):
            await enqueue(session, billing.context(), "test.unknown", jobs=JobRegistry())


# 2. Claimed once under concurrency


async def test_two_workers_with_their_own_pools_run_each_job_exactly_once(
    billing: BillingService, clock: FrozenClock
) -> None:
    ran: list[str] = []

    async def record(session: AsyncSession, run: JobRun) -> None:
        ran.append(run.job_id)
        await asyncio.sleep(0.001)

    jobs = registry_with("test.record", record)
    async with billing.transaction() as session:
        ids = []
        for i in range(200):
            job = await enqueue(session, billing.context(), "test.record", {"i": i}, jobs=jobs)
            assert job is not None
            ids.append(job.id)

    databases = [open_database(billing.config.database_url) for _ in range(2)]
    try:
        workers = [
            Worker(db, clock, jobs=jobs, batch_size=5, worker_id=f"worker-{n}")
            for n, db in enumerate(databases)
        ]
        per_worker = await asyncio.gather(*(w.drain() for w in workers))
    finally:
        for db in databases:
            await db.dispose()

    assert len(ran) == len(set(ran)), "a job ran twice"
    assert sorted(ran) == sorted(ids), "a job never ran"
    assert sum(per_worker) == 200
    rows = await all_jobs(billing)
    assert {(job.status, job.attempts) for job in rows} == {("succeeded", 1)}
    if billing.db.dialect == "postgresql":
        assert all(n > 0 for n in per_worker), f"one worker claimed nothing: {per_worker}"


# 3. Retry with backoff


def test_backoff_doubles_from_two_seconds_and_caps_at_an_hour() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [timedelta(seconds=s) for s in (2, 4, 8)]
    assert backoff(11) == timedelta(seconds=2048)
    assert backoff(12) == timedelta(hours=1)
    assert backoff(1000) == timedelta(hours=1)


async def test_failing_job_is_retried_after_backoff_until_it_succeeds(
    billing: BillingService, clock: FrozenClock
) -> None:
    seen: list[int] = []

    async def flaky(session: AsyncSession, run: JobRun) -> None:
        seen.append(run.attempt)
        if run.attempt < 3:
            raise RuntimeError(f"flaky {run.attempt}")

    jobs = registry_with("test.flaky", flaky)
    worker = Worker(billing.db, clock, jobs=jobs)
    job_id = await add_job(billing, jobs, "test.flaky")

    assert await worker.drain() == 1
    job = await get_job(billing, job_id)
    assert (job.status, job.attempts) == ("pending", 1)
    assert job.run_at == clock.now() + timedelta(seconds=2)
    assert job.last_error == "RuntimeError: flaky 1"
    assert job.locked_by is None and job.locked_until is None and job.finished_at is None

    clock.advance(milliseconds=1999)
    assert await worker.drain() == 0, "claimed before its run_at"
    clock.advance(milliseconds=1)
    assert await worker.drain() == 1
    job = await get_job(billing, job_id)
    assert (job.status, job.attempts, job.last_error) == ("pending", 2, "RuntimeError: flaky 2")
    assert job.run_at == clock.now() + timedelta(seconds=4)

    clock.advance(seconds=3)
    assert await worker.drain() == 0
    clock.advance(seconds=1)
    assert await worker.drain() == 1
    job = await get_job(billing, job_id)
    assert (job.status, job.attempts, job.last_error) == ("succeeded", 3, None)
    assert job.finished_at == clock.now()
    assert seen == [1, 2, 3]


# 4. Dead after max_attempts


async def test_job_failing_max_attempts_times_is_dead_and_never_claimed_again(
    billing: BillingService, clock: FrozenClock
) -> None:
    calls: list[int] = []

    async def always_fails(session: AsyncSession, run: JobRun) -> None:
        calls.append(run.attempt)
        raise RuntimeError("nope")

    jobs = registry_with("test.broken", always_fails)
    worker = Worker(billing.db, clock, jobs=jobs)
    job_id = await add_job(billing, jobs, "test.broken", max_attempts=2)

    assert await worker.drain() == 1
    assert (await get_job(billing, job_id)).status == "pending"
    clock.advance(seconds=2)
    assert await worker.drain() == 1
    job = await get_job(billing, job_id)
    assert (job.status, job.attempts, job.last_error) == ("dead", 2, "RuntimeError: nope")
    assert job.finished_at == clock.now()
    assert job.locked_by is None

    clock.advance(days=30)
    assert await worker.drain() == 0
    assert (await get_job(billing, job_id)).status == "dead"
    assert calls == [1, 2]


# 5. The handler's writes commit with the job's success, or not at all


async def test_handler_writes_are_rolled_back_when_it_raises(
    billing: BillingService, clock: FrozenClock
) -> None:
    async def write_then_fail(session: AsyncSession, run: JobRun) -> None:
        await write_audit(session, run)
        raise Boom("after the write")

    jobs = registry_with("test.write_then_fail", write_then_fail)
    job_id = await add_job(billing, jobs, "test.write_then_fail")
    assert await Worker(billing.db, clock, jobs=jobs).drain() == 1
    assert await audit_object_ids(billing) == []
    job = await get_job(billing, job_id)
    assert (job.status, job.last_error) == ("pending", "Boom: after the write")


async def test_handler_writes_commit_with_the_job_success(
    billing: BillingService, clock: FrozenClock
) -> None:
    jobs = registry_with("test.write", write_audit)
    job_id = await add_job(billing, jobs, "test.write")
    assert await Worker(billing.db, clock, jobs=jobs).drain() == 1
    assert await audit_object_ids(billing) == [f"{job_id}#1"]
    assert (await get_job(billing, job_id)).status == "succeeded"


# 6. Lease expiry


async def test_expired_lease_lets_another_worker_take_the_job_and_voids_the_first(
    billing: BillingService, clock: FrozenClock
) -> None:
    jobs = registry_with("test.write", write_audit)
    lease = timedelta(seconds=30)
    a = Worker(billing.db, clock, jobs=jobs, lease=lease, worker_id="worker-a")
    b = Worker(billing.db, clock, jobs=jobs, lease=lease, worker_id="worker-b")
    job_id = await add_job(billing, jobs, "test.write")

    [job_a] = await a.claim()
    assert (job_a.attempts, job_a.locked_by) == (1, "worker-a")
    assert job_a.locked_until == clock.now() + lease
    clock.advance(lease)
    assert await b.claim() == [], "claimed while the lease still held"
    clock.advance(seconds=1)
    [job_b] = await b.claim()
    assert (job_b.id, job_b.attempts, job_b.locked_by) == (job_id, 2, "worker-b")

    async with billing.transaction() as session:
        held = await JobRepository(session).finish(
            job_id, "worker-a", status="succeeded", now=clock.now()
        )
    assert held is False

    await a.execute(job_a)  # A finishes late: its write must not land
    assert await audit_object_ids(billing) == []
    job = await get_job(billing, job_id)
    assert (job.status, job.locked_by, job.attempts) == ("running", "worker-b", 2)

    await b.execute(job_b)
    assert await audit_object_ids(billing) == [f"{job_id}#2"]
    assert (await get_job(billing, job_id)).status == "succeeded"


async def test_worker_that_lost_its_lease_cannot_reschedule_the_job(
    billing: BillingService, clock: FrozenClock
) -> None:
    async def fails(session: AsyncSession, run: JobRun) -> None:
        raise Boom("late failure")

    jobs = registry_with("test.fails", fails)
    a = Worker(billing.db, clock, jobs=jobs, lease=timedelta(seconds=30), worker_id="worker-a")
    b = Worker(billing.db, clock, jobs=jobs, lease=timedelta(seconds=30), worker_id="worker-b")
    job_id = await add_job(billing, jobs, "test.fails")
    [job_a] = await a.claim()
    clock.advance(seconds=31)
    assert len(await b.claim()) == 1

    await a.execute(job_a)
    job = await get_job(billing, job_id)
    assert (job.status, job.locked_by, job.attempts, job.last_error) == (
        "running",
        "worker-b",
        2,
        None,
    )


# 7. Unknown job names


async def test_unknown_job_name_fails_the_job_without_stopping_the_worker(
    billing: BillingService, clock: FrozenClock
) -> None:
    producer = JobRegistry()
    producer.job("test.gone")(noop)
    producer.job("test.noop")(noop)
    consumer = registry_with("test.noop", noop)  # this worker no longer knows test.gone
    gone_id = await add_job(billing, producer, "test.gone")
    ok_id = await add_job(billing, producer, "test.noop")

    assert await Worker(billing.db, clock, jobs=consumer).drain() == 2
    gone = await get_job(billing, gone_id)
    assert (gone.status, gone.attempts) == ("pending", 1)
    assert gone.last_error is not None and gone.last_error.startswith("LookupError")
    assert gone.run_at == clock.now() + timedelta(seconds=2)
    assert (await get_job(billing, ok_id)).status == "succeeded"


# 9. The run loop


async def wait_for_status(billing: BillingService, job_id: str, status: str) -> None:
    """Polls for up to about 5 s."""
    for _ in range(500):
        job = await get_job(billing, job_id)
        if job.status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} is still {job.status}, never {status}")


async def test_run_loop_runs_a_job_enqueued_while_polling_and_stops_on_request(
    billing: BillingService, clock: FrozenClock
) -> None:
    jobs = registry_with("test.noop", noop)
    worker = Worker(billing.db, clock, jobs=jobs, poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.05)  # the loop is idle, polling
        job_id = await add_job(billing, jobs, "test.noop")
        await wait_for_status(billing, job_id, "succeeded")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert task.done() and task.exception() is None


async def test_run_loop_schedules_the_periodic_jobs_of_its_own_registry(
    billing: BillingService, clock: FrozenClock
) -> None:
    beats: list[str] = []
    beaten = asyncio.Event()
    jobs = JobRegistry()

    @jobs.every(timedelta(minutes=1), "test.beat")
    async def beat(session: AsyncSession, run: JobRun) -> None:
        beats.append(run.job_id)
        beaten.set()

    worker = Worker(billing.db, clock, jobs=jobs, poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(beaten.wait(), timeout=5)
        await wait_for_status(billing, beats[0], "succeeded")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert {job.name for job in await all_jobs(billing)} == {"test.beat"}


# 6b. Leases that outlive slow jobs and workers that keep dying


async def test_a_job_whose_worker_dies_on_every_attempt_ends_dead(
    billing: BillingService, clock: FrozenClock
) -> None:
    jobs = registry_with("test.noop", noop)
    lease = timedelta(seconds=30)
    job_id = await add_job(billing, jobs, "test.noop", max_attempts=2)
    for name in ("worker-a", "worker-b"):  # each claims, then "dies" without finishing
        worker = Worker(billing.db, clock, jobs=jobs, lease=lease, worker_id=name)
        assert [j.id for j in await worker.claim()] == [job_id]
        clock.advance(lease + timedelta(seconds=1))
    survivor = Worker(billing.db, clock, jobs=jobs, lease=lease, worker_id="worker-c")
    assert await survivor.claim() == []
    job = await get_job(billing, job_id)
    assert (job.status, job.attempts, job.locked_by) == ("dead", 2, None)
    assert job.finished_at == clock.now() and "lease expired" in (job.last_error or "")


async def test_the_default_attempt_limit_comes_from_the_worker(
    billing: BillingService, clock: FrozenClock
) -> None:
    async def fails(session: AsyncSession, run: JobRun) -> None:
        raise Boom("always")

    jobs = registry_with("test.fails", fails)
    job_id = await add_job(billing, jobs, "test.fails")  # no max_attempts of its own
    worker = Worker(billing.db, clock, jobs=jobs, max_attempts=1)
    assert await worker.run_once() == 1
    assert (await get_job(billing, job_id)).status == "dead"


async def test_later_jobs_of_a_batch_keep_their_lease_while_a_slow_job_runs(
    billing: BillingService, clock: FrozenClock
) -> None:
    lease = timedelta(seconds=0.3)
    stolen: list[list[str]] = []

    async def slow(session: AsyncSession, run: JobRun) -> None:
        if run.payload.get("slow"):
            for _ in range(5):  # 0.5 s of clock time: longer than the lease
                await asyncio.sleep(0.15)
                clock.advance(seconds=0.1)
            thief = Worker(billing.db, clock, jobs=jobs, lease=lease, worker_id="thief")
            stolen.append([job.id for job in await thief.claim()])

    jobs = registry_with("test.slow", slow)
    await add_job(billing, jobs, "test.slow", payload={"slow": True})
    second = await add_job(billing, jobs, "test.slow")
    worker = Worker(billing.db, clock, jobs=jobs, lease=lease, worker_id="owner", batch_size=2)
    assert await worker.run_once() == 2
    assert stolen == [[]], "the second job's lease ran out while the first job ran"
    job = await get_job(billing, second)
    assert (job.status, job.attempts) == ("succeeded", 1)
