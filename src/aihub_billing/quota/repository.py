"""Queries of the quota domain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import Account, QuotaNotificationTarget, QuotaOverride, QuotaViolation


class QuotaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def override(self, account_id: str) -> QuotaOverride | None:
        return await self.session.get(QuotaOverride, account_id)

    async def target(self, account_id: str) -> QuotaNotificationTarget | None:
        return await self.session.get(QuotaNotificationTarget, account_id)

    async def account_exists(self, account_id: str) -> bool:
        result = await self.session.execute(select(Account.id).where(Account.id == account_id))
        return result.scalar_one_or_none() is not None

    async def active_accounts(self) -> int:
        result = await self.session.execute(
            select(func.count()).select_from(Account).where(Account.status == "active")
        )
        return int(result.scalar_one())

    async def account_ids(self, *, after_id: str | None, limit: int) -> list[str]:
        query = select(Account.id).where(Account.status == "active").order_by(Account.id)
        if after_id is not None:
            query = query.where(Account.id > after_id)
        return list((await self.session.execute(query.limit(limit))).scalars())

    async def add_violations(self, rows: Sequence[dict[str, Any]]) -> None:
        """One multi-row INSERT for a whole buffer of violations."""
        if rows:
            await self.session.execute(insert(QuotaViolation), list(rows))

    async def violations(
        self, account_id: str | None, *, after_id: str | None, limit: int
    ) -> list[QuotaViolation]:
        query = select(QuotaViolation).order_by(QuotaViolation.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(QuotaViolation.account_id == account_id)
        if after_id is not None:
            query = query.where(QuotaViolation.id < after_id)
        return list((await self.session.execute(query)).scalars())

    def add(self, obj: QuotaOverride | QuotaNotificationTarget) -> None:
        self.session.add(obj)
