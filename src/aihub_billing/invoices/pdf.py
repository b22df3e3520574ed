"""Invoice PDFs: the invoice as an `InvoiceDocument`, rendered by a job and stored.

Rendering takes a few hundred milliseconds of CPU, so period close never waits for it: every
change of a finalized invoice enqueues `invoices.render_pdf`, which stores the PDF with the
invoice's `updated_at`. `GET /invoices/{id}/pdf` streams the stored one while it is current
and in the default template and locale; otherwise (a draft, another locale) it renders then.
"""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.config import InvoiceDocumentConfig
from aihub_billing.documents import DocumentLine, Party, render_pdf
from aihub_billing.documents import InvoiceDocument as Document
from aihub_billing.invoices.repository import InvoiceRepository
from aihub_billing.jobs.queue import enqueue
from aihub_billing.kit.context import Context
from aihub_billing.models import Invoice, InvoiceDocument

RENDER_JOB = "invoices.render_pdf"


async def document_of(session: AsyncSession, invoice: Invoice, seller: Party) -> Document:
    repo = InvoiceRepository(session)
    account = await repo.account(invoice.account_id)
    assert account is not None  # invoices reference accounts
    lines = await repo.lines(invoice.id)
    return Document(
        number=invoice.number,
        status=invoice.status,
        currency=invoice.currency,
        issued_at=invoice.finalized_at,
        due_at=invoice.due_at,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        seller=seller,
        customer=Party(name=account.name, email=account.email, tax_id=None),
        lines=tuple(
            DocumentLine(
                description=line.description,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount_minor=line.amount_minor,
                tax_rate=line.tax_rate,
                tax_minor=line.tax_minor,
                period_start=line.period_start,
                period_end=line.period_end,
            )
            for line in sorted(lines, key=lambda x: x.position)
        ),
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
        balance_applied_minor=invoice.balance_applied_minor,
        amount_due_minor=invoice.amount_due_minor,
        amount_paid_minor=invoice.amount_paid_minor,
        amount_credited_minor=invoice.amount_credited_minor,
        memo=invoice.memo,
    )


async def render(
    session: AsyncSession,
    invoice: Invoice,
    config: InvoiceDocumentConfig,
    *,
    template: str | None = None,
    locale: str | None = None,
) -> bytes:
    """The invoice as PDF bytes, rendered off the event loop."""
    doc = await document_of(session, invoice, config.seller())
    return await asyncio.to_thread(
        render_pdf,
        doc,
        template=template or config.template,
        locale=locale or config.locale,
        templates_dir=config.templates_dir,
        logo=config.logo_path,
    )


async def schedule(
    session: AsyncSession, ctx: Context, invoice: Invoice, clock_id: str | None
) -> None:
    """Enqueues a rendering of the invoice as it stands (once per version)."""
    if invoice.status == "draft":
        return
    await enqueue(
        session,
        ctx,
        RENDER_JOB,
        {"invoice_id": invoice.id},
        dedupe_key=f"{RENDER_JOB}:{invoice.id}:{invoice.updated_at.isoformat()}",
        test_clock_id=clock_id,
    )


async def store(
    session: AsyncSession, ctx: Context, invoice_id: str, config: InvoiceDocumentConfig
) -> None:
    """The render job: stores the current version's PDF (an older job finds it current)."""
    repo = InvoiceRepository(session)
    invoice = await repo.get(invoice_id)
    if invoice is None or invoice.status == "draft":
        return
    stored = await repo.document(invoice_id)
    if stored is not None and stored.source_updated_at >= invoice.updated_at:
        return
    content = await render(session, invoice, config)
    if stored is None:
        stored = InvoiceDocument(invoice_id=invoice_id)
        repo.add(stored)
    stored.template, stored.locale = config.template, config.locale
    stored.content = content
    stored.sha256 = hashlib.sha256(content).hexdigest()
    stored.source_updated_at = invoice.updated_at
    stored.rendered_at = ctx.clock.now()
    await session.flush()


async def current(
    session: AsyncSession,
    invoice: Invoice,
    config: InvoiceDocumentConfig,
    *,
    template: str | None,
    locale: str | None,
) -> bytes:
    """The stored PDF when it is of this version and in the asked template and locale;
    otherwise one rendered now (not stored: a GET changes nothing)."""
    template, locale = template or config.template, locale or config.locale
    stored = await InvoiceRepository(session).document(invoice.id)
    if (
        stored is not None
        and stored.source_updated_at == invoice.updated_at
        and (stored.template, stored.locale) == (template, locale)
    ):
        return stored.content
    return await render(session, invoice, config, template=template, locale=locale)
