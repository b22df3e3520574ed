"""Queries on API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import ApiKey


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_digest(self, key_digest: str) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.key_hash == key_digest))
        return result.scalar_one_or_none()

    async def get(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def for_account(self, account_id: str) -> list[ApiKey]:
        result = await self.session.execute(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id)
        )
        return list(result.scalars())

    async def any_admin(self) -> ApiKey | None:
        result = await self.session.execute(
            select(ApiKey)
            .where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.id)
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def live_admins(self, *, names: tuple[str, ...]) -> list[ApiKey]:
        result = await self.session.execute(
            select(ApiKey).where(
                ApiKey.role == "admin", ApiKey.revoked_at.is_(None), ApiKey.name.in_(names)
            )
        )
        return list(result.scalars())

    def add(self, key: ApiKey) -> None:
        self.session.add(key)
