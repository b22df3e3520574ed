"""/quota: check-and-consume, reservations, status, overrides, violations, notifications."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from aihub_billing.accounts.errors import AccountNotFound
from aihub_billing.api.deps import (
    AdminContext,
    BillingDep,
    ContextDep,
    Idempotent,
    SessionDep,
    lean_context,
)
from aihub_billing.api.routing import TransactionalRoute, replica_read
from aihub_billing.errors import AccountRequired, Forbidden, responses
from aihub_billing.kit.context import Context
from aihub_billing.kit.db import SessionSource
from aihub_billing.kit.pagination import Page
from aihub_billing.notifications.errors import WebhookUrlNotAllowed
from aihub_billing.plans.errors import PlanNotFound
from aihub_billing.quota import schemas
from aihub_billing.quota.errors import (
    EstimateAboveRateLimit,
    ModelNotAllowed,
    QuotaExceeded,
    QuotaUnavailable,
    RateLimited,
    ReservationNotFound,
)
from aihub_billing.quota.service import account_for
from aihub_billing.service import BillingService

router = APIRouter(prefix="/quota", tags=["quota"], route_class=TransactionalRoute)


async def check_quota(
    data: schemas.QuotaCheck, session: SessionDep, ctx: ContextDep, billing: BillingDep
) -> schemas.QuotaCheckResult:
    """Check every limit and reserve the call, its estimated tokens and a concurrency slot."""
    return await _check(data, session, ctx, billing)


async def _check(
    data: schemas.QuotaCheck, session: SessionSource, ctx: Context, billing: BillingService
) -> schemas.QuotaCheckResult:
    return await billing.quota.check(
        session,
        ctx,
        account_id=account_for(ctx, data.account_id),
        model=data.model,
        estimated_tokens=data.estimated_tokens,
        member_id=data.member_id or data.user_id,
    )


class LeanCheckRoute(TransactionalRoute):
    """/quota/check without FastAPI's per-request dependency solving (it cost more than the
    check itself): same parsing, auth, errors and response. Requests that carry an
    Idempotency-Key take the regular path, which stores and replays the response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        regular = super().get_route_handler()

        async def handler(request: Request) -> Response:
            if "idempotency-key" in request.headers:
                return await regular(request)
            billing: BillingService = request.app.state.billing
            # The key first, as on every route: a request without one learns nothing more.
            # No session is made unless auth or the limits miss their caches (each read then
            # opens and closes one).
            ctx = await lean_context(request, billing.db.sessions)
            body = await request.body()
            try:
                data = schemas.QuotaCheck.model_validate_json(body)
            except ValidationError as exc:
                raise RequestValidationError(_body_errors(exc), body=body) from exc
            result = await _check(data, billing.db.sessions, ctx, billing)
            return Response(result.model_dump_json(), media_type="application/json")

        return handler


def _body_errors(exc: ValidationError) -> list[Any]:
    return [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]


router.add_api_route(
    "/check",
    check_quota,
    methods=["POST"],
    dependencies=[Idempotent],
    responses=responses(
        AccountRequired,
        QuotaExceeded,
        ModelNotAllowed,
        AccountNotFound,
        RateLimited,
        EstimateAboveRateLimit,
        QuotaUnavailable,
    ),
    route_class_override=LeanCheckRoute,
)


@router.post(
    "/reservations/{reservation_id}/commit",
    dependencies=[Idempotent],
    responses=responses(AccountRequired, AccountNotFound, ReservationNotFound, QuotaUnavailable),
)
async def commit_reservation(
    reservation_id: str,
    data: schemas.ReservationCommit,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
) -> schemas.Settlement:
    """Settle with the real token count; returns actual - reserved."""
    return await billing.quota.commit(
        session,
        ctx,
        reservation_id,
        data.actual_tokens,
        account_id=account_for(ctx, data.account_id),
    )


@router.post(
    "/reservations/{reservation_id}/release",
    dependencies=[Idempotent],
    responses=responses(AccountRequired, AccountNotFound, ReservationNotFound, QuotaUnavailable),
)
async def release_reservation(
    reservation_id: str,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    data: schemas.ReservationRelease | None = None,
) -> schemas.Settlement:
    """Cancel a reservation: its call, tokens and slot are returned."""
    requested = data.account_id if data is not None else None
    return await billing.quota.release(
        session, ctx, reservation_id, account_id=account_for(ctx, requested)
    )


@router.get("", responses=responses(AccountRequired, AccountNotFound, QuotaUnavailable))
async def get_quota(
    session: SessionDep, ctx: ContextDep, billing: BillingDep, account_id: str | None = None
) -> schemas.QuotaStatus:
    """The seed's quota_status (plan, remaining calls and tokens, reset) and rate limits."""
    return await billing.quota.status(session, ctx, account_for(ctx, account_id))


@router.put("/overrides", responses=responses(Forbidden, AccountNotFound, PlanNotFound))
async def set_override(
    data: schemas.QuotaOverrideUpdate, session: SessionDep, ctx: AdminContext, billing: BillingDep
) -> schemas.QuotaOverride:
    """Replace an account's limits override (operator only)."""
    return await billing.quota.set_override(session, ctx, data)


@router.get("/overrides", responses=responses(AccountRequired, AccountNotFound))
async def get_override(
    session: SessionDep, ctx: ContextDep, billing: BillingDep, account_id: str | None = None
) -> schemas.QuotaOverride | None:
    """The account's override; null when it has none."""
    return await billing.quota.get_override(session, ctx, account_for(ctx, account_id))


@router.get("/violations", responses=responses(AccountNotFound))
@replica_read
async def list_violations(
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    account_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> Page[schemas.Violation]:
    """Refused (and billed-overage) checks, newest first; the operator sees every account."""
    rows, next_cursor = await billing.quota.violations(
        session, ctx, account_id=account_id, cursor=cursor, limit=limit
    )
    return Page(items=[schemas.Violation.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.put(
    "/notifications",
    responses=responses(Forbidden, AccountRequired, AccountNotFound, WebhookUrlNotAllowed),
)
async def set_notification_target(
    data: schemas.NotificationTargetUpdate,
    session: SessionDep,
    ctx: ContextDep,
    billing: BillingDep,
    account_id: str | None = None,
) -> schemas.NotificationTargetSet:
    """Where threshold notifications go (owner or operator); the new secret is shown once.
    The webhook URL's host must be public: not loopback, private, link-local, … nor
    `localhost` (`webhook_url_not_allowed`)."""
    return await billing.quota.set_target(session, ctx, account_for(ctx, account_id), data)


@router.get("/notifications", responses=responses(AccountRequired, AccountNotFound, Forbidden))
async def get_notification_target(
    session: SessionDep, ctx: ContextDep, billing: BillingDep, account_id: str | None = None
) -> schemas.NotificationTarget | None:
    return await billing.quota.get_target(session, ctx, account_for(ctx, account_id))
