"""The collection job: charge a finalized invoice (and each dunning retry)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.collection.service import COLLECT_JOB, DunningPolicy, collection
from aihub_billing.jobs.registry import JobRun, registry


@registry.job(COLLECT_JOB)
async def collect(session: AsyncSession, run: JobRun) -> None:
    """Needs `processors` and `dunning` in the job settings (BillingService.job_settings)."""
    processors = run.settings["processors"]
    policy: DunningPolicy = run.settings.get("dunning") or DunningPolicy()
    attempt = run.payload.get("attempt")
    await collection.collect(
        session,
        run.ctx,
        processors,
        policy,
        str(run.payload["invoice_id"]),
        attempt=int(attempt) if attempt is not None else None,
    )
