"""Writes audit entries in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.audit.repository import AuditRepository
from aihub_billing.kit.context import Context
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.pagination import id_page
from aihub_billing.models import AuditEntry


class AuditService:
    async def record(
        self,
        session: AsyncSession,
        ctx: Context,
        *,
        action: str,
        object_type: str,
        object_id: str,
        account_id: str | None,
        before: BaseModel | None = None,
        after: BaseModel | None = None,
    ) -> AuditEntry:
        """`before`/`after` are the API's own schemas of the object, stored as their JSON."""
        now = ctx.clock.now()
        entry = AuditEntry(
            id=new_id("aud", now),
            at=now,
            actor_key_id=ctx.actor.key_id,
            actor_role=str(ctx.actor.role),
            account_id=account_id,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=_snapshot(before),
            after=_snapshot(after),
            request_id=ctx.request_id,
        )
        AuditRepository(session).add(entry)
        return entry

    async def page(
        self,
        session: AsyncSession,
        *,
        cursor: str | None,
        limit: int | None,
        account_id: str | None = None,
        object_id: str | None = None,
        action: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        repo = AuditRepository(session)
        return await id_page(
            cursor,
            limit,
            lambda after_id, n: repo.page(
                limit=n,
                after_id=after_id,
                account_id=account_id,
                object_id=object_id,
                action=action,
            ),
        )


def _snapshot(value: BaseModel | None) -> dict[str, Any] | None:
    return None if value is None else value.model_dump(mode="json")


audit = AuditService()
