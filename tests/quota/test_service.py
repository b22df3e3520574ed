"""QuotaManager without HTTP: usage recorded without reservation, start-up rebuild."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.kit.periods import Period
from aihub_billing.models import Job, QuotaViolation
from aihub_billing.plans.schemas import PlanLimits
from aihub_billing.quota.engine import EngineUnavailable, Limits, QuotaEngine
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.schemas import QuotaCheckResult
from aihub_billing.quota.service import (
    QuotaManager,
    StoredUsageSource,
    UsageTotals,
    resolve_limits,
)
from aihub_billing.service import BillingService
from aihub_billing.usage.service import usage


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


@pytest.mark.parametrize("overage", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("remaining", [(None, None), (0, 7)])
def test_a_trusted_check_result_is_the_validated_one(
    overage: tuple[bool, bool], remaining: tuple[int | None, int | None]
) -> None:
    """The hot path builds its result without validation: it must be the same model."""
    reset_at = datetime(2026, 2, 1, tzinfo=UTC)
    expires_at = datetime(2026, 1, 31, 12, 5, tzinfo=UTC)
    values = {
        "reservation_id": "rsv_1",
        "account_id": "acct_1",
        "calls_overage": overage[0],
        "tokens_overage": overage[1],
        "reserved_tokens": 100,
        "remaining_calls": remaining[0],
        "remaining_tokens": remaining[1],
        "reset_at": reset_at,
        "expires_at": expires_at,
    }
    trusted = QuotaCheckResult.trusted(*values.values())
    validated = QuotaCheckResult(**values, overage=overage[0] or overage[1])
    constructed = QuotaCheckResult.model_construct(**values, overage=overage[0] or overage[1])
    assert trusted == validated
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_fields_set == constructed.model_fields_set
    trusted.degraded = True  # a fields set of its own
    assert "degraded" not in QuotaCheckResult.trusted(*values.values()).model_fields_set


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=10**6),
    policy=st.sampled_from(["block", "bill"]),
    thresholds=st.lists(st.integers(min_value=1, max_value=150), max_size=4, unique=True),
    step=st.integers(min_value=1, max_value=1000),
    data=st.data(),
)
def test_below_the_watch_mark_a_check_has_nothing_to_report(
    limit: int, policy: str, thresholds: list[int], step: int, data: st.DataObject
) -> None:
    """The hot path skips `_crossed` below the watch mark: that must never hide a threshold
    or a billed overage, and the mark itself must report one (so it is no blanket skip)."""
    limits = Limits(calls=limit, calls_policy=policy)
    resolved = resolve_limits(
        "acct_1",
        "pro",
        PlanLimits(included_api_calls=limit, calls_policy=policy),
        Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        None,
        tuple(sorted(thresholds)),
    )
    assert resolved.limits == limits
    manager = QuotaManager(MemoryQuotaEngine())
    ctx = Context(clock=FrozenClock(datetime(2026, 1, 15, tzinfo=UTC)))
    watch = resolved.calls_watch
    if watch == math.inf:
        assert not thresholds and policy == "block"
        return
    assert isinstance(watch, int)
    below = data.draw(st.integers(min_value=0, max_value=watch - 1))
    manager._crossed(ctx, resolved, None, None, "calls", max(below - step, 0), below)
    assert manager.pending == 0
    manager._crossed(ctx, resolved, None, None, "calls", watch - 1, watch)
    assert manager.pending > 0


class Unreachable:
    """The engine, but every operation fails as an unreachable Redis would while `down`."""

    def __init__(self, engine: QuotaEngine) -> None:
        self.engine = engine
        self.down = False

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self.engine, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise EngineUnavailable("redis: ConnectionError")
            return await operation(*args, **kwargs)

        return call


async def test_a_call_let_through_by_fail_open_is_counted_when_its_usage_arrives(
    billing: BillingService,
) -> None:
    """fail_open admits without counting: the call's usage, tracked with the reservation id
    it was given once the counters are back, must count the call and its tokens."""
    await billing.bootstrap()
    account = await billing.create_account(AccountCreate(name="Acme"))
    engine = Unreachable(billing.quota.engine)
    quota = QuotaManager(
        engine,  # type: ignore[arg-type]
        fail_mode="fail_open",
        usage_source=StoredUsageSource(billing.db.sessions),
    )
    ctx = billing.context()
    sessions = billing.db.sessions  # as /quota/check: a session only when a read needs one
    await quota.check(sessions, ctx, account_id=account.id, model="gpt-4o-mini")
    engine.down = True
    degraded = await quota.check(
        sessions, ctx, account_id=account.id, model="gpt-4o-mini", estimated_tokens=500
    )
    assert degraded.degraded
    engine.down = False
    event = {
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 50,
        "event_id": "during-outage",
        "reservation_id": degraded.reservation_id,
    }
    owner = Context(actor=Actor(role=Role.OWNER, account_id=account.id), clock=billing.clock)
    async with billing.transaction() as session:
        result = await usage.record(session, owner, [event], quota)
    assert result.accepted == 1
    async with billing.db.sessions() as session:
        status = await quota.status(session, ctx, account.id)
    # The first check's call, and the call let through with its 150 tokens.
    assert (status.used_calls, status.used_tokens) == (2, 150)
