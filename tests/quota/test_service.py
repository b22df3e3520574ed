"""QuotaManager without HTTP: usage recorded without reservation, start-up rebuild."""

from __future__ import annotations

from sqlalchemy import select

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.kit.periods import Period
from aihub_billing.models import Job, QuotaViolation
from aihub_billing.quota.service import UsageTotals
from aihub_billing.service import BillingService


class StoredUsage:
    def __init__(self, calls: int, tokens: int) -> None:
        self.totals = UsageTotals(calls=calls, tokens=tokens)

    async def used(self, account_id: str, period: Period) -> UsageTotals:
        return self.totals


async def test_recorded_usage_counts_and_notifies(billing: BillingService) -> None:
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Acme"))
    ctx = billing.context()
    async with billing.transaction() as session:
        await billing.quota.record(session, ctx, account_id=account.id, calls=1, tokens=7_999)
        status = await billing.quota.status(session, ctx, account.id)
    assert (status.used_calls, status.used_tokens, status.remaining_tokens) == (1, 7_999, 2_001)
    async with billing.transaction() as session:
        # 8,000 of the free plan's 10,000 tokens: the 80% mark.
        await billing.quota.record(session, ctx, account_id=account.id, calls=1, tokens=1)
    assert await billing.flush_quota_events() == 1
    async with billing.db.sessions() as session:
        jobs = list((await session.execute(select(Job))).scalars())
        violations = list((await session.execute(select(QuotaViolation))).scalars())
    assert [(j.name, j.payload["limit"], j.payload["threshold"]) for j in jobs] == [
        ("quota.notify", "tokens", 80)
    ]
    assert violations == []


async def test_start_up_rebuilds_accounts_without_counters(billing: BillingService) -> None:
    await billing.bootstrap()
    first = await billing.create_account(AccountCreate(name="One"))
    second = await billing.create_account(AccountCreate(name="Two"))
    billing.quota.usage_source = StoredUsage(calls=12, tokens=300)
    ctx = billing.context()
    async with billing.transaction() as session:
        assert await billing.quota.rebuild_missing(session, ctx) == 2
        assert await billing.quota.rebuild_missing(session, ctx) == 0
        for account in (first, second):
            status = await billing.quota.status(session, ctx, account.id)
            assert (status.used_calls, status.used_tokens) == (12, 300)
