"""/payments and /payment-methods: intents, confirmation, history, refunds, saved methods."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import BillingDep, ContextDep, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute, replica_read
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.pagination import Page
from aihub_billing.models import Payment
from aihub_billing.payments import schemas
from aihub_billing.payments.errors import (
    AccountRequired,
    InvoiceNotPayable,
    PaymentCurrencyMismatch,
    PaymentDeclined,
    PaymentExceedsAmountDue,
    PaymentMethodNotFound,
    PaymentNotConfirmable,
    PaymentNotFound,
    PaymentNotRefundable,
    ProviderError,
    ProviderNotConfigured,
    ProviderOperationUnsupported,
    ProviderUnavailable,
    RefundExceedsPayment,
)
from aihub_billing.payments.payment_types import PaymentIntent
from aihub_billing.payments.service import payments
from aihub_billing.subscriptions.errors import SubscriptionNotFound

router = APIRouter(prefix="/payments", tags=["payments"], route_class=TransactionalRoute)
methods_router = APIRouter(
    prefix="/payment-methods", tags=["payment-methods"], route_class=TransactionalRoute
)
_PROVIDER_ERRORS = (ProviderNotConfigured, ProviderUnavailable, ProviderError)


def _render(payment: Payment, remote: PaymentIntent | None = None) -> schemas.Payment:
    out = schemas.Payment.model_validate(payment)
    if remote is not None and (remote.client_secret or remote.approval_url):
        out.next_action = schemas.NextAction(
            client_secret=remote.client_secret, approval_url=remote.approval_url
        )
    return out


@router.post(
    "/intents",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        Forbidden,
        AccountRequired,
        AccountNotFound,
        PaymentMethodNotFound,
        PaymentCurrencyMismatch,
        SubscriptionNotFound,
        InvoiceNotPayable,
        PaymentExceedsAmountDue,
        *_PROVIDER_ERRORS,
    ),
)
async def create_intent(
    data: schemas.PaymentIntentCreate, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> schemas.Payment:
    """Create a payment at the provider for an amount (not charged until confirmed).

    Without `provider`: the subscription's, else the account's default, else the first enabled.
    With `invoice_id` (an invoice of the account): only an `open` or `uncollectible` one, in its
    currency, for at most what is still due (409 `invoice_not_payable`,
    `payment_exceeds_amount_due`)."""
    payment, remote = await payments.create_intent(session, ctx, billing.processor, data)
    return _render(payment, remote)


@router.post(
    "/{payment_id}/confirm",
    dependencies=[Idempotent],
    responses=responses(PaymentNotFound, PaymentNotConfirmable, PaymentDeclined, *_PROVIDER_ERRORS),
)
async def confirm_payment(
    payment_id: str,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    data: schemas.PaymentConfirm | None = None,
) -> schemas.Payment:
    """Charge: `requires_action` comes back with the 3-D Secure client secret or approval link."""
    payment, remote = await payments.confirm(
        session, ctx, billing.processor, payment_id, data or schemas.PaymentConfirm()
    )
    return _render(payment, remote)


@router.get("/settings", responses=responses(Forbidden, AccountRequired, AccountNotFound))
async def get_payment_settings(
    session: SessionDep, ctx: ContextDep, account_id: str | None = None
) -> schemas.PaymentSettings:
    """The account's payment settings (its default provider)."""
    return await payments.settings(session, ctx, account_id)


@router.put(
    "/settings",
    responses=responses(Forbidden, AccountRequired, AccountNotFound, ProviderNotConfigured),
)
async def put_payment_settings(
    data: schemas.PaymentSettingsUpdate, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> schemas.PaymentSettings:
    """Set the account's default provider (owner, billing or operator keys)."""
    return await payments.update_settings(session, ctx, billing.processor, data)


@router.get("", responses=responses(Forbidden))
@replica_read
async def list_payments(
    session: SessionDep,
    ctx: ContextDep,
    account_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.Payment]:
    """Payment history of the key's account (the operator sees all, or one account)."""
    rows, next_cursor = await payments.page(
        session, ctx, account_id=account_id, cursor=cursor, limit=limit
    )
    return Page(items=[_render(p) for p in rows], next_cursor=next_cursor)


@router.get("/{payment_id}", responses=responses(PaymentNotFound))
async def get_payment(payment_id: str, session: SessionDep, ctx: ContextDep) -> schemas.Payment:
    return _render(await payments.get(session, ctx, payment_id))


@router.post(
    "/{payment_id}/refund",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        PaymentNotFound, PaymentNotRefundable, RefundExceedsPayment, *_PROVIDER_ERRORS
    ),
)
async def refund_payment(
    payment_id: str,
    data: schemas.RefundCreate,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
) -> schemas.Refund:
    """Refund all that remains refundable, or a part of it."""
    refund = await payments.refund(session, ctx, billing.processor, payment_id, data)
    return schemas.Refund.model_validate(refund)


@methods_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        Forbidden, AccountRequired, AccountNotFound, ProviderOperationUnsupported, *_PROVIDER_ERRORS
    ),
)
async def attach_payment_method(
    data: schemas.PaymentMethodCreate, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> schemas.PaymentMethod:
    """Attach a provider token (made by the provider's browser SDK) to the account."""
    record = await payments.attach_method(session, ctx, billing.processor(data.provider), data)
    return schemas.PaymentMethod.model_validate(record)


@methods_router.get("", responses=responses(Forbidden, AccountRequired, AccountNotFound))
async def list_payment_methods(
    session: SessionDep, ctx: ContextDep, account_id: str | None = None
) -> list[schemas.PaymentMethod]:
    return [
        schemas.PaymentMethod.model_validate(m)
        for m in await payments.methods(session, ctx, account_id)
    ]


@methods_router.delete(
    "/{method_id}",
    responses=responses(PaymentMethodNotFound, ProviderOperationUnsupported, *_PROVIDER_ERRORS),
)
async def detach_payment_method(
    method_id: str, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> schemas.PaymentMethod:
    record = await payments.detach_method(session, ctx, billing.processor, method_id)
    return schemas.PaymentMethod.model_validate(record)
