"""/invoices: list, read, the upcoming preview; admin period close and status actions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import AdminContext, BillingDep, ContextDep, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute, replica_read
from aihub_billing.documents import InvalidLogo, TemplateFailed, UnknownTemplate, UnsupportedLocale
from aihub_billing.errors import AccountRequired, InvalidRequest, responses
from aihub_billing.invoices import pdf, schemas
from aihub_billing.invoices.errors import (
    InvalidInvoiceTransition,
    InvalidPaymentAmount,
    InvoiceNotFound,
    NoUpcomingInvoice,
)
from aihub_billing.invoices.service import invoices
from aihub_billing.kit.clock import IsoDatetime
from aihub_billing.kit.pagination import Page

router = APIRouter(prefix="/invoices", tags=["invoices"], route_class=TransactionalRoute)

Status = Literal["draft", "open", "paid", "void", "uncollectible"]


@router.get("", responses=responses(AccountNotFound))
@replica_read
async def list_invoices(
    session: SessionDep,
    ctx: ContextDep,
    status: Status | None = None,
    period_from: Annotated[
        IsoDatetime | None, Query(description="periods starting at or after")
    ] = None,
    period_to: Annotated[
        IsoDatetime | None, Query(description="periods ending at or before")
    ] = None,
    subscription_id: str | None = None,
    account_id: Annotated[str | None, Query(description="admin: one account")] = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.InvoiceSummary]:
    """The account's invoices, newest first (an admin sees every account's)."""
    items, next_cursor = await invoices.page(
        session,
        ctx,
        account_id=account_id,
        status=status,
        subscription_id=subscription_id,
        period_from=period_from,
        period_to=period_to,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/upcoming", responses=responses(AccountRequired, AccountNotFound, NoUpcomingInvoice))
async def upcoming_invoice(
    session: SessionDep, ctx: ContextDep, account_id: str | None = None
) -> schemas.UpcomingInvoice:
    """A preview of the invoice that would close the current period now (not stored)."""
    return await invoices.upcoming(session, ctx, account_id)


@router.post(
    "/generate",
    dependencies=[Idempotent],
    responses=responses(AccountNotFound, InvalidRequest),
)
async def generate_invoices(
    data: schemas.GenerateRequest, session: SessionDep, ctx: AdminContext
) -> schemas.GenerateResult:
    """Close periods: runs overdue renewals and creates every missing invoice (idempotent)."""
    outcome = await invoices.close_period(session, ctx, account_id=data.account_id, at=data.at)
    return outcome.schema()


@router.get("/{invoice_id}", responses=responses(InvoiceNotFound))
async def get_invoice(invoice_id: str, session: SessionDep, ctx: ContextDep) -> schemas.Invoice:
    return await invoices.get(session, ctx, invoice_id)


@router.post(
    "/{invoice_id}/finalize",
    dependencies=[Idempotent],
    responses=responses(InvoiceNotFound, InvalidInvoiceTransition),
)
async def finalize_invoice(
    invoice_id: str, session: SessionDep, ctx: AdminContext
) -> schemas.Invoice:
    """draft → open with the next number (→ paid when nothing is due)."""
    invoice = await invoices.finalize(session, ctx, invoice_id)
    return await invoices.render(session, invoice)


@router.post(
    "/{invoice_id}/mark-paid",
    dependencies=[Idempotent],
    responses=responses(InvoiceNotFound, InvalidInvoiceTransition, InvalidPaymentAmount),
)
async def mark_invoice_paid(
    invoice_id: str, session: SessionDep, ctx: AdminContext, data: schemas.MarkPaid | None = None
) -> schemas.Invoice:
    """An out-of-band payment: the whole amount due by default."""
    data = data or schemas.MarkPaid()
    invoice = await invoices.mark_paid(
        session, ctx, invoice_id, data.amount_minor, payment_id=data.payment_id
    )
    return await invoices.render(session, invoice)


@router.post(
    "/{invoice_id}/void",
    dependencies=[Idempotent],
    responses=responses(InvoiceNotFound, InvalidInvoiceTransition),
)
async def void_invoice(invoice_id: str, session: SessionDep, ctx: AdminContext) -> schemas.Invoice:
    invoice = await invoices.void(session, ctx, invoice_id)
    return await invoices.render(session, invoice)


@router.post(
    "/{invoice_id}/mark-uncollectible",
    dependencies=[Idempotent],
    responses=responses(InvoiceNotFound, InvalidInvoiceTransition),
)
async def mark_invoice_uncollectible(
    invoice_id: str, session: SessionDep, ctx: AdminContext
) -> schemas.Invoice:
    invoice = await invoices.mark_uncollectible(session, ctx, invoice_id)
    return await invoices.render(session, invoice)


@router.get(
    "/{invoice_id}/pdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The invoice as PDF"},
        **responses(
            InvoiceNotFound, UnknownTemplate, UnsupportedLocale, InvalidLogo, TemplateFailed
        ),
    },
)
async def invoice_pdf(
    invoice_id: str,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    template: Annotated[str | None, Query(max_length=64, description="default: configured")] = None,
    locale: Annotated[str | None, Query(max_length=16, description="e.g. de_DE, zh_CN")] = None,
) -> Response:
    """The invoice as PDF: the stored rendering when current, else rendered now."""
    invoice = await invoices.row(session, ctx, invoice_id)
    content = await pdf.current(
        session, invoice, billing.config.documents, template=template, locale=locale
    )
    name = invoice.number or f"draft-{invoice.id}"
    return Response(
        content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
    )
