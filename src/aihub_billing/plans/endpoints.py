"""/plans: the catalog, readable by every key; the operator adds plans."""

from __future__ import annotations

from fastapi import APIRouter, status

from aihub_billing.api.deps import ActorDep, AdminContext, BillingDep, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.errors import Forbidden, responses
from aihub_billing.plans import schemas
from aihub_billing.plans.errors import PlanExists, PlanNotFound
from aihub_billing.plans.service import plans

router = APIRouter(prefix="/plans", tags=["plans"], route_class=TransactionalRoute)


@router.get("")
async def list_plans(
    session: SessionDep, _actor: ActorDep, billing: BillingDep
) -> list[schemas.Plan]:
    """The current version of every active plan."""
    return await billing.plan_catalog(session)


@router.get("/{code}", responses=responses(PlanNotFound))
async def get_plan(
    code: str, session: SessionDep, _actor: ActorDep, billing: BillingDep
) -> schemas.Plan:
    return await billing.plan(session, code)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(Forbidden, PlanExists),
)
async def create_plan(
    data: schemas.PlanCreate, session: SessionDep, ctx: AdminContext
) -> schemas.Plan:
    """Add a plan to the catalog (operator only)."""
    return await plans.create(session, ctx, data)


@router.patch("/{code}", responses=responses(Forbidden, PlanNotFound))
async def update_plan(
    code: str, data: schemas.PlanUpdate, session: SessionDep, ctx: AdminContext
) -> schemas.Plan:
    """Write a new version of the plan (operator only); subscriptions move to it on renewal."""
    return await plans.update(session, ctx, code, data)


@router.post(
    "/{code}/archive", dependencies=[Idempotent], responses=responses(Forbidden, PlanNotFound)
)
async def archive_plan(code: str, session: SessionDep, ctx: AdminContext) -> schemas.Plan:
    """No new subscriptions to the plan; running ones continue (operator only)."""
    return await plans.archive(session, ctx, code)
