"""Background jobs of the usage domain."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.usage.service import usage

log = structlog.get_logger("aihub_billing.usage")


@registry.every(timedelta(hours=1), "usage.partitions")
async def add_partitions(session: AsyncSession, run: JobRun) -> None:
    """Keeps the monthly partitions of usage_events made ahead (PostgreSQL)."""
    made = await usage.add_partitions(session, run.ctx)
    if made:
        log.info("usage.partitions_added", months=[m.isoformat() for m in made])
