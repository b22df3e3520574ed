"""The usage roller (PostgreSQL): events reach usage_daily once their transactions are over,
exactly once, and every reader is exact before, during and after a roll."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.service import BillingService
from aihub_billing.usage.service import SEED_PRICES, usage
from tests.conftest import make_config
from tests.usage.test_tracker import _rollups_and_recomputation

MODELS = [m for m, *_ in SEED_PRICES]
_OWN_XACT = text("SELECT CAST(CAST(pg_current_xact_id() AS text) AS bigint)")


def _events(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "model": MODELS[i % len(MODELS)],
            "input_tokens": 100 + i,
            "output_tokens": 7 * i,
            "event_id": f"{prefix}-{i}",
            "user_id": f"u{i % 3}",
            "latency_ms": 40 * i,
            "status_code": 500 if i % 9 == 0 else 200,
        }
        for i in range(n)
    ]


async def _calls(billing: BillingService, account_id: str) -> int:
    """API calls of the account today, as the statistics count them (rollups + the rest)."""
    ctx = Context(actor=Actor(role=Role.ADMIN), clock=billing.clock)
    async with billing.db.sessions() as session:
        stats = await usage.stats(
            session, ctx, account_id=account_id, start=None, end=None, group_by="model"
        )
    return sum(row.requests for row in stats.rows)


async def _account(billing: BillingService) -> tuple[str, Context]:
    from aihub_billing.accounts.schemas import AccountCreate

    account = await billing.create_account(AccountCreate(name="Roller"))
    return account.id, Context(
        actor=Actor(role=Role.OWNER, account_id=account.id), clock=billing.clock
    )


async def test_sqlite_rolls_up_in_the_insert(sqlite_url: str, clock: FrozenClock) -> None:
    billing = BillingService(make_config(sqlite_url), clock=clock)
    try:
        assert await billing.roll_up_usage() is None  # nothing to do: no roller on SQLite
    finally:
        await billing.close()


async def test_an_open_transaction_holds_the_watermark_back(pg_billing: BillingService) -> None:
    billing = pg_billing
    account_id, ctx = await _account(billing)
    # A stores events and stays open; B stores events and commits after A began.
    async with billing.db.sessions() as a_session:
        await usage.record(a_session, ctx, _events("a", 5))
        async with billing.transaction() as b_session:
            await usage.record(b_session, ctx, _events("b", 3))
        a_xact = (await a_session.execute(_OWN_XACT)).scalar_one()
        watermark = await billing.roll_up_usage()
        assert watermark is not None and watermark <= a_xact  # A is not over: not past it
        assert await _calls(billing, account_id) == 3  # B only: A is not visible yet
        await a_session.commit()
    assert await _calls(billing, account_id) == 8  # A's events are past the watermark
    async with asyncio.timeout(60):  # other transactions in the cluster hold the horizon
        await billing.settle_usage_rollups()
    rollups, recomputed = await _rollups_and_recomputation(billing, account_id)
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == 8
    assert await _calls(billing, account_id) == 8


async def test_a_rolled_back_transaction_leaves_nothing_behind(
    pg_billing: BillingService,
) -> None:
    billing = pg_billing
    account_id, ctx = await _account(billing)
    async with billing.db.sessions() as session:
        await usage.record(session, ctx, _events("gone", 4))
        await session.rollback()
    async with billing.transaction() as session:
        await usage.record(session, ctx, _events("kept", 2))
    rollups, recomputed = await _rollups_and_recomputation(billing, account_id)
    assert rollups == recomputed and sum(r[0] for r in rollups.values()) == 2


async def test_one_roller_at_a_time(pg_billing: BillingService) -> None:
    billing = pg_billing
    _, ctx = await _account(billing)
    await billing.roll_up_usage()  # the state row exists (as after the migration)
    async with billing.transaction() as session:
        await usage.record(session, ctx, _events("x", 3))
    async with billing.db.sessions() as holder:
        first = await usage.roll_up(holder, billing.context())
        assert first is not None
        # The state row is locked until `holder` ends: another roller skips, at once.
        assert await asyncio.wait_for(billing.roll_up_usage(), timeout=5) is None
        await holder.commit()
    assert await billing.roll_up_usage() is not None


async def test_concurrent_writers_and_rollers_count_every_event_once(
    pg_billing: BillingService,
) -> None:
    billing = pg_billing
    account_id, ctx = await _account(billing)
    stop = asyncio.Event()
    # Per roller: its reads one after the other (two rollers' reads overlap, so one list of
    # both would be in the order they ended, not the order of their snapshots).
    seen: list[list[int]] = [[], []]

    async def roller(reads: list[int]) -> None:
        while not stop.is_set():
            await billing.roll_up_usage()
            reads.append(await _calls(billing, account_id))
            await asyncio.sleep(0)

    async def writer(n: int) -> int:
        accepted = 0
        for batch in range(6):
            # Ids overlap between writers: each id counts once, whoever stores it.
            events = _events(f"w{(n + batch) % 5}-{batch}", 70)
            async with billing.transaction() as session:
                accepted += (await usage.record(session, ctx, events)).accepted
        return accepted

    rollers = [asyncio.create_task(roller(reads)) for reads in seen]
    accepted = sum(await asyncio.gather(*(writer(n) for n in range(6))))
    stop.set()
    await asyncio.gather(*rollers)
    # A statistic read while rolling never counted an event twice, nor lost a stored one.
    for reads in seen:
        assert reads == sorted(reads) and max(reads) <= accepted
    assert await _calls(billing, account_id) == accepted
    rollups, recomputed = await _rollups_and_recomputation(billing, account_id)
    assert rollups == recomputed
    assert sum(r[0] for r in rollups.values()) == accepted


async def test_the_backlog_is_scraped(pg_billing: BillingService) -> None:
    billing = pg_billing
    _, ctx = await _account(billing)
    async with billing.transaction() as session:
        await usage.record(session, ctx, _events("m", 7))
    figures = await billing.database_metrics()
    assert figures is not None and figures.usage_not_rolled_up == 7
    async with asyncio.timeout(60):  # other transactions in the cluster hold the horizon
        await billing.settle_usage_rollups()
    billing._metrics_cache = None  # read again now, not METRICS_TTL_SECONDS later
    figures = await billing.database_metrics()
    assert figures is not None and figures.usage_not_rolled_up == 0
