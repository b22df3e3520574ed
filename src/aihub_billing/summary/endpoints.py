"""/summary: the account's billing summary (the seed's shape) with a run-rate forecast."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import BillingDep, ContextDep, SessionDep
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.errors import responses
from aihub_billing.quota.errors import QuotaUnavailable
from aihub_billing.subscriptions.errors import AccountRequired
from aihub_billing.summary import schemas

router = APIRouter(prefix="/summary", tags=["summary"], route_class=TransactionalRoute)


@router.get("", responses=responses(AccountRequired, AccountNotFound, QuotaUnavailable))
async def billing_summary(
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    account_id: Annotated[str | None, Query(description="Operator keys only")] = None,
) -> schemas.Summary:
    """Plan, status and days to renewal; requests and cost this period; quota left; and the
    period's requests, cost and token-quota day at the run rate so far."""
    return await billing.summary(session, ctx, account_id)
