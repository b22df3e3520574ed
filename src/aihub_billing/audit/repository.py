"""Queries on the audit log."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import AuditEntry


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, entry: AuditEntry) -> None:
        self.session.add(entry)

    async def page(
        self,
        *,
        limit: int,
        after_id: str | None = None,
        account_id: str | None = None,
        object_id: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        # Newest first; ids are time-ordered ULIDs, so the id alone is a stable cursor.
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if after_id is not None:
            query = query.where(AuditEntry.id < after_id)
        if account_id is not None:
            query = query.where(AuditEntry.account_id == account_id)
        if object_id is not None:
            query = query.where(AuditEntry.object_id == object_id)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        return list((await self.session.execute(query)).scalars())
