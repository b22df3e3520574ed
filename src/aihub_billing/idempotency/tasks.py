"""Housekeeping of idempotency records."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.idempotency.service import idempotency
from aihub_billing.jobs.registry import JobRun, registry


@registry.every(timedelta(hours=1), "idempotency.purge")
async def purge(session: AsyncSession, run: JobRun) -> None:
    """Deletes records past their TTL: a key may then be used again."""
    ttl = timedelta(hours=int(run.settings.get("idempotency_ttl_hours", 24)))
    await idempotency.purge(session, run.ctx, ttl)
