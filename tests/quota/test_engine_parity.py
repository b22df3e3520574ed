"""The in-process and the Redis engine answer every sequence of operations alike."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.ids import new_id
from aihub_billing.quota.engine import CheckRequest, Limits
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.redis_engine import RedisQuotaEngine

PERIODS = [
    ("2026-01", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2026-02", datetime(2026, 3, 1, tzinfo=UTC)),
]
LIMITS = (
    Limits(calls=12, tokens=1500, tpm=900, rpm=8, concurrency=3),
    Limits(
        calls=12,
        tokens=1500,
        calls_policy="bill",
        tokens_policy="bill",
        member_calls=3,
        member_tokens=400,
    ),
    Limits(),
)

OP = st.tuples(
    st.integers(0, 12),
    st.one_of(
        st.tuples(
            st.just("check"),
            st.integers(0, 300),
            st.sampled_from([None, "a", "b"]),
            st.sampled_from([1, 30, 90]),
            st.integers(0, 2),
        ),
        st.tuples(st.just("commit"), st.integers(0, 50), st.integers(0, 600)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(
            st.just("record"),
            st.integers(0, 2),
            st.integers(0, 300),
            st.sampled_from([None, "a", "b"]),
        ),
        st.tuples(st.just("tick"), st.integers(0, 900)),
        st.tuples(st.just("load"), st.integers(0, 5), st.integers(0, 500), st.booleans()),
        st.tuples(st.just("status"), st.sampled_from([None, "a", "b"])),
    ),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(OP, max_size=40))
async def test_engines_agree(redis_engine: RedisQuotaEngine, ops: list[tuple]) -> None:
    memory = MemoryQuotaEngine()
    clock = FrozenClock(datetime(2026, 1, 31, 12, 0, 30, tzinfo=UTC))
    account = new_id("acct", clock.now())
    for engine in (memory, redis_engine):
        await engine.load(account, PERIODS[0][0], PERIODS[0][1], clock.now(), calls=0, tokens=0)
    held: list[str] = []
    current = 0
    for pi, op in ops:
        if pi == 0 and current == 0:
            current = 1  # the next period begins: the service loads it at its first check
            for engine in (memory, redis_engine):
                await engine.load(
                    account, PERIODS[1][0], PERIODS[1][1], clock.now(), calls=0, tokens=0
                )
        PERIOD, PERIOD_END = PERIODS[current]
        now = clock.now()
        name = op[0]
        if name == "check":
            _, est, member, ttl, li = op
            rid = new_id("rsv", now)
            r = CheckRequest(account, PERIOD, PERIOD_END, now, rid, est, member, ttl)
            got = [await e.check(r, LIMITS[li]) for e in (memory, redis_engine)]
            held.append(rid)
        elif name in ("commit", "release") and held:
            rid = held[op[1] % len(held)]
            if name == "commit":
                got = [
                    await e.commit(account, PERIOD, rid, op[2], now) for e in (memory, redis_engine)
                ]
            else:
                got = [await e.release(account, PERIOD, rid, now) for e in (memory, redis_engine)]
        elif name == "record":
            _, calls, tokens, member = op
            if not await memory.is_loaded(account, PERIOD):
                continue
            got = [
                await e.record(
                    account, PERIOD, PERIOD_END, now, calls=calls, tokens=tokens, member=member
                )
                for e in (memory, redis_engine)
            ]
        elif name == "tick":
            clock.advance(seconds=op[1] / 10)
            continue
        elif name == "load":
            _, calls, tokens, force = op
            got = [
                await e.load(
                    account,
                    PERIOD,
                    PERIOD_END,
                    now,
                    calls=calls,
                    tokens=tokens,
                    force=force,
                    members={"a": (1, 10)},
                )
                for e in (memory, redis_engine)
            ]
        elif name == "status":
            got = [await e.status(account, PERIOD, now, op[1]) for e in (memory, redis_engine)]
        else:
            continue
        assert got[0] == got[1], (op, got)
    PERIOD = PERIODS[current][0]
    for member in (None, "a", "b"):
        now = clock.now()
        assert await memory.status(account, PERIOD, now, member) == await redis_engine.status(
            account, PERIOD, now, member
        )
