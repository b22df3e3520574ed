"""Usage as period close bills it: many (account, period) pairs at once equal a recomputation
from the raw events, at midnight-aligned and odd boundaries."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.context import Actor, Context, Role
from aihub_billing.kit.ids import new_id
from aihub_billing.kit.periods import day_split
from aihub_billing.service import BillingService
from aihub_billing.usage.billing import BilledUsage, billed_usage
from aihub_billing.usage.repository import UsageRepository
from aihub_billing.usage.service import SEED_PRICES, model_prices, usage

MODELS = [m for m, *_ in SEED_PRICES]


def test_day_split_whole_days_and_edges() -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    assert day_split(day, day + timedelta(days=2)) == (day.date(), day.date() + timedelta(2), [])
    odd = day + timedelta(hours=5)
    first, last, edges = day_split(odd, odd + timedelta(days=2))
    assert (first, last) == (day.date() + timedelta(1), day.date() + timedelta(2))
    assert edges == [(odd, day + timedelta(days=1)), (day + timedelta(days=2), odd + timedelta(2))]
    # Inside one day: no whole day, the one edge is the range.
    assert day_split(odd, odd + timedelta(hours=1))[2] == [(odd, odd + timedelta(hours=1))]
    assert day_split(odd, odd)[2] == []


async def test_billed_usage_of_many_periods_equals_the_raw_events(
    billing: BillingService, clock: FrozenClock
) -> None:
    now = clock.now()
    rng = random.Random(7)
    async with billing.transaction() as session:
        await model_prices.seed_defaults(session, billing.context())
    accounts = [new_id("acct", now) for _ in range(3)]
    for account_id in accounts:
        events = [
            {
                "model": rng.choice(MODELS),
                "input_tokens": rng.randint(0, 5000),
                "output_tokens": rng.randint(0, 5000),
                "status_code": rng.choice([200, 429, 500]),
                "timestamp": (now - timedelta(seconds=rng.randint(0, 4 * 86_400))).isoformat(),
            }
            for _ in range(120)
        ]
        actor = Actor(role=Role.OWNER, account_id=account_id)
        async with billing.transaction() as session:
            result = await usage.record(session, Context(actor=actor, clock=clock), events)
        assert result.accepted == 120
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    windows = [
        (midnight - timedelta(days=3), midnight),  # whole days only
        (now - timedelta(days=2, hours=5), now - timedelta(hours=7)),  # both edges partial
        (now - timedelta(hours=30), now - timedelta(hours=29)),  # inside one day
        (now - timedelta(days=5), now + timedelta(seconds=1)),  # everything
    ]
    keys = [(a, start, end) for a in accounts for start, end in windows]
    keys.append(("acct_without_usage", windows[1][0], windows[1][1]))
    async with billing.db.sessions() as session:
        got = await billed_usage(session, keys)
        raw = {a: await UsageRepository(session).events(a) for a in accounts}
    assert got[keys[-1]] == BilledUsage()
    for account_id, start, end in keys[:-1]:
        expected = BilledUsage()
        for e in raw[account_id]:
            if start <= e.occurred_at < end and e.usage_type == "api_call":
                expected.add(e.model or "", 1, e.input_tokens + e.output_tokens)
        assert got[(account_id, start, end)] == expected, (account_id, start, end)
    assert got[(accounts[0], *windows[3])].calls == 120
