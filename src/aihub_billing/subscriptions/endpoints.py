"""/subscriptions: create, read, change (with preview), cancel, resume, pause; history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import BillingDep, ContextDep, Idempotent, SessionDep, require_roles
from aihub_billing.api.routing import TransactionalRoute, replica_read
from aihub_billing.coupons.errors import CouponNotFound, CouponNotRedeemable
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.context import Context, Role
from aihub_billing.kit.pagination import Page
from aihub_billing.plans.errors import PlanArchived, PlanNotFound, PriceNotFound
from aihub_billing.subscriptions import schemas
from aihub_billing.subscriptions.errors import (
    AccountRequired,
    InvalidTransition,
    NoChange,
    PaymentMethodRequired,
    SubscriptionExists,
    SubscriptionNotFound,
)
from aihub_billing.subscriptions.service import item_schema, line_schema, subscriptions

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"], route_class=TransactionalRoute)

# Changing a subscription takes the account's owner or billing role (or the operator).
BillingContext = Annotated[Context, Depends(require_roles(Role.OWNER, Role.BILLING))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        AccountRequired,
        PaymentMethodRequired,
        Forbidden,
        AccountNotFound,
        PlanNotFound,
        PriceNotFound,
        CouponNotFound,
        SubscriptionExists,
        PlanArchived,
        CouponNotRedeemable,
    ),
)
async def create_subscription(
    data: schemas.SubscriptionCreate, session: SessionDep, ctx: BillingContext
) -> schemas.SubscriptionResult:
    """Subscribe the account: a trial when the plan has one, else the first period is billed."""
    sub, items = await subscriptions.create(session, ctx, data)
    return schemas.SubscriptionResult(
        subscription=await subscriptions.render(session, sub),
        invoice_items=[item_schema(i) for i in items],
    )


@router.get("/current", responses=responses(AccountRequired, AccountNotFound))
async def current_subscription(
    session: SessionDep, ctx: ContextDep, billing: BillingDep, account_id: str | None = None
) -> schemas.CurrentPlan:
    """The plan the account is on now (free without a subscription) and its open subscription."""
    return await billing.current_subscription(session, ctx, account_id)


@router.get("/history", responses=responses(AccountRequired, AccountNotFound))
@replica_read
async def subscription_history(
    session: SessionDep,
    ctx: ContextDep,
    account_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.SubscriptionEvent]:
    """Every change of the account's subscriptions, oldest first."""
    rows, next_cursor = await subscriptions.history(
        session, ctx, account_id, cursor=cursor, limit=limit
    )
    return Page(
        items=[schemas.SubscriptionEvent.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/{subscription_id}/invoice-items", responses=responses(SubscriptionNotFound))
async def subscription_invoice_items(
    subscription_id: str, session: SessionDep, ctx: ContextDep
) -> list[schemas.InvoiceItem]:
    """The items the subscription recorded (fees, proration, setup fee, discounts)."""
    items = await subscriptions.invoice_items(session, ctx, subscription_id)
    return [item_schema(i) for i in items]


@router.post(
    "/{subscription_id}/change",
    dependencies=[Idempotent],
    responses=responses(
        Forbidden,
        SubscriptionNotFound,
        PaymentMethodRequired,
        PlanNotFound,
        PriceNotFound,
        CouponNotFound,
        InvalidTransition,
        NoChange,
        PlanArchived,
        CouponNotRedeemable,
    ),
)
async def change_subscription(
    subscription_id: str,
    data: schemas.SubscriptionChange,
    session: SessionDep,
    ctx: BillingContext,
) -> schemas.ChangeResult:
    """Change plan or cycle: upgrades now with proration, downgrades at period end by default.

    With `preview: true` nothing changes; the lines that would be billed are returned.
    """
    outcome = await subscriptions.change(session, ctx, subscription_id, data)
    if outcome.preview:
        lines = [line_schema(line, outcome.subscription.id) for line in outcome.lines]
    else:
        lines = [item_schema(item) for item in outcome.items]
    return schemas.ChangeResult(
        subscription=await subscriptions.render(session, outcome.subscription),
        invoice_items=lines,
        preview=outcome.preview,
        direction=outcome.direction,
        when=outcome.when,
        effective_at=outcome.effective_at,
    )


@router.post(
    "/{subscription_id}/cancel",
    dependencies=[Idempotent],
    responses=responses(Forbidden, SubscriptionNotFound, InvalidTransition),
)
async def cancel_subscription(
    subscription_id: str,
    session: SessionDep,
    ctx: BillingContext,
    data: schemas.SubscriptionCancel | None = None,
) -> schemas.SubscriptionResult:
    """Cancel at the period end (default) or now (`at_period_end: false`, no credit)."""
    at_period_end = data.at_period_end if data is not None else True
    sub, items = await subscriptions.cancel(
        session, ctx, subscription_id, at_period_end=at_period_end
    )
    return schemas.SubscriptionResult(
        subscription=await subscriptions.render(session, sub),
        invoice_items=[item_schema(i) for i in items],
    )


@router.post(
    "/{subscription_id}/resume",
    dependencies=[Idempotent],
    responses=responses(Forbidden, SubscriptionNotFound, InvalidTransition),
)
async def resume_subscription(
    subscription_id: str, session: SessionDep, ctx: BillingContext
) -> schemas.SubscriptionResult:
    """End a pause, or withdraw a scheduled cancellation."""
    sub, items = await subscriptions.resume(session, ctx, subscription_id)
    return schemas.SubscriptionResult(
        subscription=await subscriptions.render(session, sub),
        invoice_items=[item_schema(i) for i in items],
    )


@router.post(
    "/{subscription_id}/pause",
    dependencies=[Idempotent],
    responses=responses(Forbidden, SubscriptionNotFound, InvalidTransition),
)
async def pause_subscription(
    subscription_id: str, session: SessionDep, ctx: BillingContext
) -> schemas.SubscriptionResult:
    """Pause an active subscription: periods that start while paused are not billed."""
    sub, items = await subscriptions.pause(session, ctx, subscription_id)
    return schemas.SubscriptionResult(
        subscription=await subscriptions.render(session, sub),
        invoice_items=[item_schema(i) for i in items],
    )
