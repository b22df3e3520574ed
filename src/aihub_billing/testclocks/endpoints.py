"""/test-clocks: the operator creates clocks, attaches accounts and advances time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import AdminContext, BillingDep, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.pagination import Page
from aihub_billing.testclocks import schemas
from aihub_billing.testclocks.errors import (
    AccountAlreadyAttached,
    AccountHasHistory,
    AccountHasSubscription,
    TestClockNotFound,
    TestClocksDisabled,
    TimeGoesForward,
    TooManyJobs,
)
from aihub_billing.testclocks.service import test_clocks

router = APIRouter(prefix="/test-clocks", tags=["test-clocks"], route_class=TransactionalRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(Forbidden, TestClocksDisabled),
)
async def create_test_clock(
    data: schemas.TestClockCreate, session: SessionDep, ctx: AdminContext
) -> schemas.TestClock:
    return schemas.TestClock.model_validate(await test_clocks.create(session, ctx, data))


@router.get("", responses=responses(Forbidden))
async def list_test_clocks(
    session: SessionDep,
    ctx: AdminContext,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.TestClockListed]:
    """Every test clock, oldest first, with the accounts on it (operator only)."""
    rows, next_cursor = await test_clocks.page(session, ctx, cursor=cursor, limit=limit)
    items = [
        schemas.TestClockListed(
            **schemas.TestClock.model_validate(clock).model_dump(), account_ids=account_ids
        )
        for clock, account_ids in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{clock_id}", responses=responses(Forbidden, TestClockNotFound))
async def get_test_clock(
    clock_id: str, session: SessionDep, ctx: AdminContext
) -> schemas.TestClockListed:
    """The clock, with the accounts on it."""
    clock, account_ids = await test_clocks.with_accounts(session, ctx, clock_id)
    return schemas.TestClockListed(
        **schemas.TestClock.model_validate(clock).model_dump(), account_ids=account_ids
    )


@router.post(
    "/{clock_id}/accounts",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(
        Forbidden,
        TestClockNotFound,
        AccountNotFound,
        AccountAlreadyAttached,
        AccountHasSubscription,
        AccountHasHistory,
        TestClocksDisabled,
    ),
)
async def attach_account(
    clock_id: str, data: schemas.TestClockAttach, session: SessionDep, ctx: AdminContext
) -> schemas.Attachment:
    """Put a fresh account (no subscription, invoice, usage, payment or credit yet) on the
    clock's time."""
    link = await test_clocks.attach(session, ctx, clock_id, data.account_id)
    return schemas.Attachment.model_validate(link)


@router.post(
    "/{clock_id}/advance",
    dependencies=[Idempotent],
    responses=responses(
        Forbidden, TestClockNotFound, TimeGoesForward, TooManyJobs, TestClocksDisabled
    ),
)
async def advance_test_clock(
    clock_id: str,
    data: schemas.TestClockAdvance,
    session: SessionDep,
    ctx: AdminContext,
    billing: BillingDep,
) -> schemas.TestClockAdvanced:
    """Run the clock's due jobs (renewals, trial ends) in time order, then move it."""
    clock, ran = await test_clocks.advance(
        session, ctx, clock_id, data.frozen_time, settings=billing.job_settings()
    )
    return schemas.TestClockAdvanced(
        **schemas.TestClock.model_validate(clock).model_dump(),
        jobs_run=[
            schemas.JobRan(
                name=a.name, run_at=a.at, payload=a.payload, status=a.status, error=a.error
            )
            for a in ran
        ],
    )
