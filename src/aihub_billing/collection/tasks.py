"""Collection jobs: charge a finalized invoice (and each dunning retry), fail an attempt whose
pending charge failed later; create and cancel provider-billed subscriptions at the provider."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.collection import provider_billing
from aihub_billing.collection.service import (
    COLLECT_JOB,
    LATE_FAILURE_JOB,
    DunningPolicy,
    collection,
)
from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.subscriptions.service import PROVIDER_SUBSCRIBE_JOB, PROVIDER_UNSUBSCRIBE_JOB


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


@registry.job(LATE_FAILURE_JOB)
async def collection_failed(session: AsyncSession, run: JobRun) -> None:
    """An invoice's pending collection payment failed at the provider: dunning as for a
    decline. Needs `dunning` in the job settings."""
    policy: DunningPolicy = run.settings.get("dunning") or DunningPolicy()
    await collection.late_failure(
        session,
        run.ctx,
        policy,
        str(run.payload["invoice_id"]),
        str(run.payload["payment_id"]),
        attempt=int(run.payload["attempt"]),
    )


@registry.job(PROVIDER_SUBSCRIBE_JOB)
async def provider_subscribe(session: AsyncSession, run: JobRun) -> None:
    await provider_billing.subscribe(
        session, run.ctx, run.settings["processors"], str(run.payload["subscription_id"])
    )


@registry.job(PROVIDER_UNSUBSCRIBE_JOB)
async def provider_unsubscribe(session: AsyncSession, run: JobRun) -> None:
    await provider_billing.unsubscribe(
        run.ctx,
        run.settings["processors"],
        str(run.payload["provider"]),
        str(run.payload["provider_subscription_id"]),
    )
