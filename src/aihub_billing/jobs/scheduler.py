"""Enqueues each periodic job once per time slot, however many schedulers run."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.queue import enqueue
from aihub_billing.jobs.registry import JobRegistry, Periodic, registry
from aihub_billing.kit.context import Context

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def slot_start(periodic: Periodic, now: datetime) -> datetime:
    """Start of the slot containing `now`; slots are fixed multiples of `every` from an epoch."""
    index = (now - _EPOCH) // periodic.every
    return _EPOCH + index * periodic.every


async def tick(session: AsyncSession, ctx: Context, *, jobs: JobRegistry = registry) -> list[str]:
    """Enqueues the current slot of every periodic job; returns the names newly enqueued."""
    now = ctx.clock.now()
    enqueued = []
    for periodic in jobs.periodic.values():
        start = slot_start(periodic, now)
        job = await enqueue(
            session,
            ctx,
            periodic.name,
            periodic.payload,
            run_at=start,
            dedupe_key=f"{periodic.name}@{start.isoformat()}",
            jobs=jobs,
        )
        if job is not None:
            enqueued.append(periodic.name)
    return enqueued
