"""Invoice jobs: generate a period's invoice, finalize a draft when its delay is over, render
and store a finalized invoice's PDF."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.config import InvoiceDocumentConfig
from aihub_billing.invoices import pdf
from aihub_billing.invoices.service import FINALIZE_JOB, GENERATE_JOB, invoices
from aihub_billing.jobs.registry import JobRun, registry
from aihub_billing.kit.periods import Period


@registry.job(GENERATE_JOB)
async def generate(session: AsyncSession, run: JobRun) -> None:
    payload = run.payload
    await invoices.generate(
        session,
        run.ctx,
        payload["subscription_id"],
        payload["reason"],
        Period(
            datetime.fromisoformat(payload["period_start"]),
            datetime.fromisoformat(payload["period_end"]),
        ),
        price_id=payload.get("price_id"),
    )


@registry.job(FINALIZE_JOB)
async def finalize(session: AsyncSession, run: JobRun) -> None:
    await invoices.finalize(session, run.ctx, run.payload["invoice_id"], scheduled=True)


@registry.job(pdf.RENDER_JOB)
async def render_pdf(session: AsyncSession, run: JobRun) -> None:
    config = run.settings.get("documents") or InvoiceDocumentConfig()
    await pdf.store(session, run.ctx, str(run.payload["invoice_id"]), config)
