"""/invoices/{id}/credit-notes, /credit-notes and /accounts/{id}/balance: credit notes against
invoices and the account balance they credit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from aihub_billing.api.deps import AdminContext, BillingDep, ContextDep, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute, replica_read
from aihub_billing.creditnotes import schemas
from aihub_billing.creditnotes.errors import (
    AccountNotFound,
    BalanceInsufficient,
    CreditNoteExceedsCreditable,
    CreditNoteNotFound,
    CurrencyMismatch,
    DuplicateInvoiceLine,
    InvoiceLineNotFound,
    InvoiceNotCreditable,
    InvoiceNotFound,
    RefundNotPossible,
)
from aihub_billing.creditnotes.service import credit_notes
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.pagination import Page
from aihub_billing.payments.errors import (
    PaymentNotRefundable,
    ProviderError,
    ProviderNotConfigured,
    ProviderUnavailable,
    RefundExceedsPayment,
)

router = APIRouter(tags=["credit-notes"], route_class=TransactionalRoute)
balance_router = APIRouter(
    prefix="/accounts", tags=["account-balance"], route_class=TransactionalRoute
)


@router.post(
    "/invoices/{invoice_id}/credit-notes",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        Forbidden,
        InvoiceNotFound,
        InvoiceNotCreditable,
        RefundNotPossible,
        CreditNoteExceedsCreditable,
        InvoiceLineNotFound,
        DuplicateInvoiceLine,
        CurrencyMismatch,
        PaymentNotRefundable,
        RefundExceedsPayment,
        ProviderNotConfigured,
        ProviderUnavailable,
        ProviderError,
    ),
)
async def create_credit_note(
    invoice_id: str,
    data: schemas.CreditNoteCreate,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
) -> schemas.CreditNote:
    """Credit an open or paid invoice, by line or by a tax-inclusive amount (owner, billing,
    operator). Outcome `credit` adds to the account balance; `refund` refunds through the
    processor that took the invoice's payment."""
    return await credit_notes.create(session, ctx, billing.processor, invoice_id, data)


@router.get("/credit-notes", responses=responses(Forbidden))
@replica_read
async def list_credit_notes(
    session: SessionDep,
    ctx: ContextDep,
    account_id: str | None = None,
    invoice_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.CreditNote]:
    """The credit notes of the key's account (the operator sees all, or one account)."""
    items, next_cursor = await credit_notes.page(
        session, ctx, account_id=account_id, invoice_id=invoice_id, cursor=cursor, limit=limit
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/credit-notes/{credit_note_id}", responses=responses(Forbidden, CreditNoteNotFound))
async def get_credit_note(
    credit_note_id: str, session: SessionDep, ctx: ContextDep
) -> schemas.CreditNote:
    return await credit_notes.get(session, ctx, credit_note_id)


@balance_router.get("/{account_id}/balance", responses=responses(Forbidden, AccountNotFound))
async def get_account_balance(
    account_id: str, session: SessionDep, ctx: ContextDep
) -> schemas.AccountBalance:
    """The account's credit per currency and its most recent balance transactions."""
    return await credit_notes.account_balance(session, ctx, account_id)


@balance_router.post(
    "/{account_id}/balance-adjustments",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(Forbidden, AccountNotFound, BalanceInsufficient),
)
async def adjust_account_balance(
    account_id: str,
    data: schemas.BalanceAdjustmentCreate,
    session: SessionDep,
    ctx: AdminContext,
) -> schemas.BalanceTransaction:
    """A signed adjustment of the balance (operator only); never below zero."""
    return await credit_notes.adjust_balance(session, ctx, account_id, data)
