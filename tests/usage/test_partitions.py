"""usage_events partitioned by month (PostgreSQL): months made ahead by the scheduler's job,
the default partition's rows moved into a month made late, an event id counted once across
months, and an upgrade that keeps stored events and their keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from alembic import command
from sqlalchemy import text

from aihub_billing.accounts.schemas import AccountCreate
from aihub_billing.kit.clock import FrozenClock, SystemClock
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.service import BillingService, migrate_database
from aihub_billing.usage.service import PARTITION_MONTHS_AHEAD, model_prices, usage
from tests.backends import throwaway_postgres
from tests.conftest import make_config
from tests.test_migrations import alembic_config

NOW = SystemClock().now()  # the migration makes months around the wall clock's
_PARTITIONS = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'usage_events'::regclass ORDER BY 1"
)
_WHERE = text("SELECT tableoid::regclass::text, count(*) FROM usage_events GROUP BY 1 ORDER BY 1")


async def _record(billing: BillingService, account: str, events: list[dict[str, object]]) -> int:
    ctx = Context(actor=Actor(role=Role.OWNER, account_id=account), clock=billing.clock)
    async with billing.transaction() as session:
        return (await usage.record(session, ctx, events)).accepted


async def test_months_ahead_and_a_month_made_late(
    pg_billing: BillingService, clock: FrozenClock
) -> None:
    billing = pg_billing
    async with billing.db.sessions() as session:
        made = await usage.add_partitions(session, billing.context())
        await session.commit()
        names = list((await session.execute(_PARTITIONS)).scalars())
    # This month (January 2026) and the months ahead exist, made now or by the migration.
    for k in range(PARTITION_MONTHS_AHEAD + 1):
        month = date(2026, 1 + k, 1)
        assert f"usage_events_y{month.year}m{month.month:02d}" in names
    assert "usage_events_default" in names
    async with billing.db.sessions() as session:  # a second run has nothing to do
        assert await usage.add_partitions(session, billing.context()) == []
    assert all(m >= date(2026, 1, 1) for m in made)

    # An event of a month no partition holds lands in the default partition...
    account = (await billing.create_account(AccountCreate(name="Partitioned"))).id
    later = datetime(2026, 9, 10, tzinfo=UTC)
    clock.advance(later - clock.now())
    assert await _record(billing, account, [{"model": "gpt-4o", "event_id": "sep-1"}]) == 1
    async with billing.db.sessions() as session:
        assert (await session.execute(_WHERE)).all() == [("usage_events_default", 1)]
        # ...and moves into its month when the scheduler makes it, its rollup unchanged.
        made = await usage.add_partitions(session, billing.context())
        await session.commit()
        assert date(2026, 9, 1) in made
        assert (await session.execute(_WHERE)).all() == [("usage_events_y2026m09", 1)]
    # The same id again, with another month's timestamp: counted once, forever.
    again = {"model": "gpt-4o", "event_id": "sep-1", "timestamp": "2026-01-05T00:00:00Z"}
    assert await _record(billing, account, [again]) == 0
    async with asyncio.timeout(60):
        await billing.settle_usage_rollups()
    ctx = Context(actor=Actor(role=Role.ADMIN), clock=clock)
    async with billing.db.sessions() as session:
        stats = await usage.stats(
            session,
            ctx,
            account_id=account,
            start=date(2026, 9, 1),
            end=date(2026, 10, 1),
            group_by="model",
        )
    assert [(r.group, r.requests) for r in stats.rows] == [("gpt-4o", 1)]


def test_the_upgrade_keeps_events_and_their_keys() -> None:
    with throwaway_postgres("aihub_billing_part") as url:
        migrate_database(url, "5c3e81a9d4f0")  # the unpartitioned schema

        async def seed() -> None:
            billing = BillingService(make_config(url), clock=FrozenClock(NOW))
            try:
                async with billing.db.engine.begin() as conn:
                    for n, at in enumerate(("2025-11-03", "2025-12-24", "2026-02-01")):
                        await conn.execute(
                            text(
                                "INSERT INTO usage_events (account_id, event_id, usage_type,"
                                " model, occurred_at, received_at, input_tokens,"
                                " cached_input_tokens, output_tokens, status_code, cost,"
                                " currency) VALUES ('acct_u', :id, 'api_call', 'gpt-4o', :at,"
                                " :at, 10, 0, 5, 200, 0.0001, 'USD')"
                            ),
                            {
                                "id": f"old-{n}",
                                "at": datetime.fromisoformat(at + "T00:00:00+00:00"),
                            },
                        )
            finally:
                await billing.close()

        asyncio.run(seed())
        migrate_database(url)

        async def check() -> None:
            billing = BillingService(make_config(url), clock=FrozenClock(NOW))
            try:
                async with billing.db.sessions() as session:
                    names = set((await session.execute(_PARTITIONS)).scalars())
                    assert {"usage_events_y2025m11", "usage_events_y2025m12"} <= names
                    keys = await session.execute(
                        text("SELECT event_id FROM usage_event_keys ORDER BY 1")
                    )
                    assert list(keys.scalars()) == ["old-0", "old-1", "old-2"]
                    assert (await session.execute(_WHERE)).all() == [
                        ("usage_events_y2025m11", 1),
                        ("usage_events_y2025m12", 1),
                        ("usage_events_y2026m02", 1),
                    ]
                async with billing.transaction() as session:
                    await model_prices.seed_defaults(session, billing.context())
                stamp = (NOW - timedelta(days=1)).isoformat()
                event = {"model": "gpt-4o", "event_id": "old-1", "timestamp": stamp}
                assert await _record(billing, "acct_u", [event]) == 0  # stored before
            finally:
                await billing.close()

        asyncio.run(check())
        command.downgrade(alembic_config(url), "5c3e81a9d4f0")  # and back, data kept

        async def back() -> None:
            billing = BillingService(make_config(url), clock=FrozenClock(NOW))
            try:
                async with billing.db.sessions() as session:
                    count = await session.execute(text("SELECT count(*) FROM usage_events"))
                    assert count.scalar_one() == 3
            finally:
                await billing.close()

        asyncio.run(back())
