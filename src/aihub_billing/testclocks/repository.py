"""Queries on test clocks, their accounts and their jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aihub_billing.models import (
    BalanceTransaction,
    Invoice,
    Job,
    Payment,
    Subscription,
    TestClock,
    TestClockAccount,
    UsageEventKey,
)

# What an account may have done on real time: any of it makes it no longer fresh.
_HISTORY: tuple[tuple[str, Any], ...] = (
    ("a subscription", Subscription.account_id),
    ("an invoice", Invoice.account_id),
    ("usage", UsageEventKey.account_id),
    ("a payment", Payment.account_id),
    ("account credit", BalanceTransaction.account_id),
)


class TestClockRepository:
    __test__ = False

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, clock_id: str, *, lock: bool = False) -> TestClock | None:
        if not lock:
            return await self.session.get(TestClock, clock_id)
        # Two advances of one clock run one after the other (FOR UPDATE on PostgreSQL).
        result = await self.session.execute(
            select(TestClock)
            .where(TestClock.id == clock_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return result.scalar_one_or_none()

    async def page(self, *, limit: int, after_id: str | None = None) -> list[TestClock]:
        query = select(TestClock).order_by(TestClock.id).limit(limit)
        if after_id is not None:
            query = query.where(TestClock.id > after_id)
        return list((await self.session.execute(query)).scalars())

    async def accounts_of_clocks(self, clock_ids: list[str]) -> dict[str, list[str]]:
        """The accounts on each clock, in id order; a clock without any maps to []."""
        found: dict[str, list[str]] = {clock_id: [] for clock_id in clock_ids}
        result = await self.session.execute(
            select(TestClockAccount.test_clock_id, TestClockAccount.account_id)
            .where(TestClockAccount.test_clock_id.in_(clock_ids))
            .order_by(TestClockAccount.account_id)
        )
        for clock_id, account_id in result:
            found[clock_id].append(account_id)
        return found

    async def attachment(self, account_id: str) -> TestClockAccount | None:
        return await self.session.get(TestClockAccount, account_id)

    async def account_ids(self, clock_id: str) -> list[str]:
        result = await self.session.execute(
            select(TestClockAccount.account_id).where(TestClockAccount.test_clock_id == clock_id)
        )
        return list(result.scalars())

    async def clock_of_account(self, account_id: str) -> TestClock | None:
        result = await self.session.execute(
            select(TestClock)
            .join(TestClockAccount, TestClockAccount.test_clock_id == TestClock.id)
            .where(TestClockAccount.account_id == account_id)
        )
        return result.scalar_one_or_none()

    async def clocks_of_accounts(self, account_ids: list[str]) -> dict[str, TestClock]:
        if not account_ids:
            return {}
        result = await self.session.execute(
            select(TestClockAccount.account_id, TestClock)
            .join(TestClock, TestClockAccount.test_clock_id == TestClock.id)
            .where(TestClockAccount.account_id.in_(account_ids))
        )
        return {account_id: clock for account_id, clock in result}

    async def has_open_subscription(self, account_id: str) -> bool:
        result = await self.session.execute(
            select(Subscription.id)
            .where(Subscription.account_id == account_id, Subscription.status != "canceled")
            .limit(1)
        )
        return result.first() is not None

    async def history(self, account_id: str) -> str | None:
        """What the account already has of its own on real time (None for a fresh one)."""
        for what, column in _HISTORY:
            found = await self.session.execute(select(column).where(column == account_id).limit(1))
            if found.first() is not None:
                return what
        return None

    async def next_due_job(self, clock_id: str, until: datetime) -> Job | None:
        result = await self.session.execute(
            select(Job)
            .where(Job.test_clock_id == clock_id, Job.status == "pending", Job.run_at <= until)
            .order_by(Job.run_at, Job.id)
            .limit(1)
        )
        return result.scalar_one_or_none()

    def add(self, obj: TestClock | TestClockAccount) -> None:
        self.session.add(obj)
