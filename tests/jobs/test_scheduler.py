"""The periodic scheduler and the built-in housekeeping jobs, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

import aihub_billing.service  # noqa: F401  (registers the built-in jobs)
from aihub_billing.jobs import scheduler
from aihub_billing.jobs.queue import enqueue
from aihub_billing.jobs.registry import JobRegistry, JobRun, registry
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.db import Database, open_database
from aihub_billing.kit.ids import new_id
from aihub_billing.models import IdempotencyRecord, Job, JobDedupeKey
from aihub_billing.service import BillingService
from tests.jobs.support import all_jobs, get_job, load_job, make_job

BUILTIN = ["idempotency.purge", "jobs.prune", "usage.partitions"]
S = timedelta(seconds=1)


async def tick(billing: BillingService) -> list[str]:
    async with billing.transaction() as session:
        return sorted(await scheduler.tick(session, billing.context()))


async def test_builtin_periodic_jobs_are_registered_hourly(billing: BillingService) -> None:
    for name in BUILTIN:
        assert name in registry.handlers
        assert registry.periodic[name].every == timedelta(hours=1)


async def test_tick_enqueues_each_periodic_job_once_per_slot(
    billing: BillingService, clock: FrozenClock
) -> None:
    assert await tick(billing) == sorted(registry.periodic)
    assert await tick(billing) == []
    assert await billing.worker().tick() == []
    slot = clock.now()  # the fixture's 12:00 is an hour boundary
    rows = await all_jobs(billing)
    assert sorted(job.name for job in rows) == sorted(registry.periodic)
    assert {(job.status, job.run_at) for job in rows} == {("pending", slot)}
    assert {job.dedupe_key for job in rows} == {
        f"{name}@{slot.isoformat()}" for name in registry.periodic
    }

    clock.advance(minutes=59, seconds=59)
    assert await tick(billing) == []
    clock.advance(seconds=1)
    assert await tick(billing) == sorted(registry.periodic)
    assert await tick(billing) == []
    rows = await all_jobs(billing)
    assert len(rows) == 2 * len(registry.periodic)
    assert {job.run_at for job in rows} == {slot, slot + timedelta(hours=1)}


async def test_concurrent_ticks_on_two_engines_enqueue_each_slot_once(
    billing: BillingService, clock: FrozenClock
) -> None:
    async def tick_and_linger(db: Database) -> list[str]:
        async with db.sessions() as session:
            enqueued = await scheduler.tick(session, billing.context())
            await asyncio.sleep(0.05)  # hold the transaction open while the other ticks
            await session.commit()
            return enqueued

    databases = [open_database(billing.config.database_url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(tick_and_linger(db) for db in databases))
    finally:
        for db in databases:
            await db.dispose()
    assert sorted(results[0] + results[1]) == sorted(registry.periodic)
    assert sorted(job.name for job in await all_jobs(billing)) == sorted(registry.periodic)


async def test_prune_deletes_only_succeeded_jobs_finished_over_a_week_ago(
    billing: BillingService, clock: FrozenClock
) -> None:
    now = clock.now()
    week = timedelta(days=7)
    old_success = make_job(
        "test.old", status="succeeded", created_at=now - 2 * week, finished_at=now - week - 1 * S
    )
    recent_success = make_job(
        "test.recent", status="succeeded", created_at=now - week, finished_at=now - week + 1 * S
    )
    old_dead = make_job(
        "test.dead", status="dead", created_at=now - 5 * week, finished_at=now - 4 * week
    )
    old_failed = make_job(
        "test.failed",
        status="pending",
        created_at=now - 5 * week,
        run_at=now + timedelta(hours=1),  # waiting for its retry
        last_error="RuntimeError: x",
    )
    async with billing.transaction() as session:
        session.add_all([old_success, recent_success, old_dead, old_failed])
        prune = await enqueue(session, billing.context(), "jobs.prune")
        assert prune is not None

    assert await billing.worker().drain() == 1
    assert (await get_job(billing, prune.id)).status == "succeeded"
    kept = {job.id for job in await all_jobs(billing)}
    assert kept == {recent_success.id, old_dead.id, old_failed.id, prune.id}


async def noop(session: AsyncSession, run: JobRun) -> None:
    return None


async def prune(billing: BillingService) -> None:
    async with billing.transaction() as session:
        assert await enqueue(session, billing.context(), "jobs.prune") is not None
    assert await billing.worker().drain() == 1


async def test_a_dedupe_key_held_until_a_time_outlives_its_pruned_job(
    billing: BillingService, clock: FrozenClock
) -> None:
    """`dedupe_until` keeps refusing the key after prune deleted its job, until that time;
    prune then deletes the key too, so that the held keys do not pile up."""
    jobs = JobRegistry()
    jobs.job("test.once")(noop)
    until = clock.now() + timedelta(days=30)

    async def once() -> Job | None:
        async with billing.transaction() as session:
            return await enqueue(
                session,
                billing.context(),
                "test.once",
                dedupe_key="test.once:1",
                dedupe_until=until,
                jobs=jobs,
            )

    first = await once()
    assert first is not None
    async with billing.transaction() as session:  # it ran and succeeded eight days ago
        await session.execute(
            update(Job)
            .where(Job.id == first.id)
            .values(status="succeeded", finished_at=clock.now() - timedelta(days=8))
        )
    await prune(billing)
    assert await load_job(billing, first.id) is None
    assert await once() is None  # the key is still held

    clock.advance(until - clock.now() + S)
    await prune(billing)
    async with billing.db.sessions() as session:
        assert await session.get(JobDedupeKey, "test.once:1") is None
    again = await once()
    assert again is not None and again.id != first.id


async def test_purge_deletes_idempotency_records_older_than_the_ttl(
    billing: BillingService, clock: FrozenClock
) -> None:
    now = clock.now()
    ttl = timedelta(hours=billing.config.idempotency_ttl_hours)

    def record(key: str, age: timedelta) -> IdempotencyRecord:
        return IdempotencyRecord(
            id=new_id("idem", now - age),
            scope="operator",
            key=key,
            method="POST",
            path="/api/v1/billing/accounts",
            request_hash="0" * 64,
            status_code=201,
            response_body={"ok": True},
            created_at=now - age,
        )

    async with billing.transaction() as session:
        session.add_all([record("expired", ttl + 1 * S), record("fresh", ttl - 1 * S)])
        job = await enqueue(session, billing.context(), "idempotency.purge")
        assert job is not None

    assert await billing.worker().drain() == 1
    assert (await get_job(billing, job.id)).status == "succeeded"
    async with billing.db.sessions() as session:
        keys = (await session.execute(select(IdempotencyRecord.key))).scalars().all()
    assert list(keys) == ["fresh"]
