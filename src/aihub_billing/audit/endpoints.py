"""/audit-log: every state change, newest first (operator only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aihub_billing.api.deps import AdminContext, SessionDep
from aihub_billing.api.routing import TransactionalRoute, replica_read
from aihub_billing.audit import schemas
from aihub_billing.audit.service import audit
from aihub_billing.errors import Forbidden, responses
from aihub_billing.kit.pagination import Page

router = APIRouter(prefix="/audit-log", tags=["audit"], route_class=TransactionalRoute)


@router.get("", responses=responses(Forbidden))
@replica_read
async def list_audit_log(
    session: SessionDep,
    _ctx: AdminContext,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=200)] = None,
    account_id: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
) -> Page[schemas.AuditEntry]:
    rows, next_cursor = await audit.page(
        session,
        cursor=cursor,
        limit=limit,
        account_id=account_id,
        object_id=object_id,
        action=action,
    )
    return Page(items=[schemas.AuditEntry.model_validate(r) for r in rows], next_cursor=next_cursor)
