"""Queries on plans and their prices."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import Plan, PlanPrice

_LATEST_KEY = "plans.latest_version"


class PlanRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def latest(self, *, include_archived: bool = False) -> list[Plan]:
        latest = (
            select(Plan.code, func.max(Plan.version).label("version"))
            .group_by(Plan.code)
            .subquery()
        )
        query = (
            select(Plan)
            .join(latest, (Plan.code == latest.c.code) & (Plan.version == latest.c.version))
            .order_by(Plan.code)
        )
        if not include_archived:
            query = query.where(Plan.status == "active")
        return list((await self.session.execute(query)).scalars())

    async def latest_version(self, code: str) -> Plan | None:
        # Remembered for the transaction (a renewal per subscription asks again and again);
        # adding a plan version through this repository forgets it.
        memo = self._latest_memo()
        if code in memo:
            return memo[code]
        result = await self.session.execute(
            select(Plan).where(Plan.code == code).order_by(Plan.version.desc()).limit(1)
        )
        plan = result.scalar_one_or_none()
        if plan is not None:
            memo[code] = plan
        return plan

    async def lock_latest(self, code: str) -> Plan | None:
        """The latest version, read afresh and row-locked (PostgreSQL; SQLite has a single
        writer) until the transaction ends: a PATCH (which copies the status into the next
        version) and an archive (which sets it) of one plan then go one after the other.

        A version added while this waited for the lock is not in the statement's snapshot:
        it locks again until the latest version it holds stays the latest.
        """
        plan: Plan | None = None
        while True:
            result = await self.session.execute(
                select(Plan)
                .where(Plan.code == code)
                .order_by(Plan.version.desc())
                .limit(1)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            latest = result.scalar_one_or_none()
            if latest is None or (plan is not None and latest.id == plan.id):
                break
            plan = latest
        if plan is not None:
            self._latest_memo()[code] = plan
        return plan

    def _latest_memo(self) -> dict[str, Plan]:
        # Only for the current transaction: a later one may see newer versions.
        transaction = self.session.sync_session.get_transaction()
        held = self.session.info.get(_LATEST_KEY)
        if held is None or held[0] is not transaction:
            held = self.session.info[_LATEST_KEY] = (transaction, {})
        memo: dict[str, Plan] = held[1]
        return memo

    async def get(self, plan_id: str) -> Plan | None:
        return await self.session.get(Plan, plan_id)

    async def versions(self, plan_ids: list[str]) -> list[Plan]:
        if not plan_ids:
            return []
        result = await self.session.execute(select(Plan).where(Plan.id.in_(plan_ids)))
        return list(result.scalars())

    async def price(self, price_id: str) -> PlanPrice | None:
        return await self.session.get(PlanPrice, price_id)

    async def prices_for(self, plan_ids: list[str]) -> dict[str, list[PlanPrice]]:
        if not plan_ids:
            return {}
        result = await self.session.execute(
            select(PlanPrice).where(PlanPrice.plan_id.in_(plan_ids))
        )
        grouped: dict[str, list[PlanPrice]] = defaultdict(list)
        for price in result.scalars():
            grouped[price.plan_id].append(price)
        return grouped

    def add(self, obj: Plan | PlanPrice) -> None:
        self.session.info.pop(_LATEST_KEY, None)
        self.session.add(obj)
