"""/coupons: the operator creates, lists, reads and archives coupons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from aihub_billing.api.deps import AdminContext, Idempotent, SessionDep
from aihub_billing.api.routing import TransactionalRoute
from aihub_billing.coupons import schemas
from aihub_billing.coupons.errors import CouponExists, CouponNotFound
from aihub_billing.coupons.service import coupons
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.pagination import Page
from aihub_billing.plans.errors import PlanNotFound

router = APIRouter(prefix="/coupons", tags=["coupons"], route_class=TransactionalRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Idempotent],
    responses=responses(Forbidden, CouponExists, PlanNotFound),
)
async def create_coupon(
    data: schemas.CouponCreate, session: SessionDep, ctx: AdminContext
) -> schemas.Coupon:
    """Create a coupon (operator only)."""
    return schemas.Coupon.model_validate(await coupons.create(session, ctx, data))


@router.get("", responses=responses(Forbidden))
async def list_coupons(
    session: SessionDep,
    _ctx: AdminContext,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.Coupon]:
    rows, next_cursor = await coupons.page(session, cursor=cursor, limit=limit)
    return Page(items=[schemas.Coupon.model_validate(c) for c in rows], next_cursor=next_cursor)


@router.get("/{code}", responses=responses(Forbidden, CouponNotFound))
async def get_coupon(code: str, session: SessionDep, _ctx: AdminContext) -> schemas.Coupon:
    return schemas.Coupon.model_validate(await coupons.get(session, code))


@router.post(
    "/{code}/archive",
    dependencies=[Idempotent],
    responses=responses(Forbidden, CouponNotFound),
)
async def archive_coupon(code: str, session: SessionDep, ctx: AdminContext) -> schemas.Coupon:
    """No new redemptions; subscriptions holding the coupon keep their discount."""
    return schemas.Coupon.model_validate(await coupons.archive(session, ctx, code))
