"""Queries on accounts and members."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import Account, Member


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def lock(self, account_id: str) -> None:
        """Holds the account row until the transaction ends (FOR UPDATE on PostgreSQL; SQLite
        has one writer): what decides by the account's state (subscribing, attaching it to a
        test clock) takes turns."""
        await self.session.execute(
            select(Account.id).where(Account.id == account_id).with_for_update()
        )

    async def page(self, *, limit: int, after_id: str | None = None) -> list[Account]:
        query = select(Account).order_by(Account.id).limit(limit)
        if after_id is not None:
            query = query.where(Account.id > after_id)
        return list((await self.session.execute(query)).scalars())

    async def member(self, account_id: str, member_id: str) -> Member | None:
        result = await self.session.execute(
            select(Member).where(Member.id == member_id, Member.account_id == account_id)
        )
        return result.scalar_one_or_none()

    async def member_by_email(self, account_id: str, email: str) -> Member | None:
        result = await self.session.execute(
            select(Member).where(Member.account_id == account_id, Member.email == email)
        )
        return result.scalar_one_or_none()

    async def members(self, account_id: str) -> list[Member]:
        result = await self.session.execute(
            select(Member).where(Member.account_id == account_id).order_by(Member.id)
        )
        return list(result.scalars())

    def add(self, obj: Account | Member) -> None:
        self.session.add(obj)
