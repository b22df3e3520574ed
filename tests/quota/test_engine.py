"""The engine contract: the in-process and the Redis engine pass the same tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aihub_billing.kit.clock import FrozenClock
from aihub_billing.kit.ids import new_id
from aihub_billing.quota.engine import CheckRequest, Limits, QuotaEngine, Verdict
from aihub_billing.quota.memory_engine import MemoryQuotaEngine
from aihub_billing.quota.redis_engine import RedisQuotaEngine

ACCOUNT = "acct_1"
PERIOD = "2026-01"
PERIOD_END = datetime(2026, 2, 1, tzinfo=UTC)


def req(clock: FrozenClock, tokens: int = 0, member: str | None = None, ttl: int = 300):
    return CheckRequest(
        account_id=ACCOUNT,
        period_key=PERIOD,
        period_end=PERIOD_END,
        now=clock.now(),
        reservation_id=new_id("rsv", clock.now()),
        estimated_tokens=tokens,
        member=member,
        ttl_seconds=ttl,
    )


async def load(engine: QuotaEngine, clock: FrozenClock, calls: int = 0, tokens: int = 0) -> None:
    assert await engine.load(ACCOUNT, PERIOD, PERIOD_END, clock.now(), calls=calls, tokens=tokens)


async def test_unloaded_counters_are_reported_not_admitted(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    assert not await engine.is_loaded(ACCOUNT, PERIOD)
    assert (await engine.check(req(clock), Limits())).verdict is Verdict.NOT_LOADED
    await load(engine, clock, calls=5, tokens=50)
    assert await engine.is_loaded(ACCOUNT, PERIOD)
    # A second load without force keeps the counters.
    assert not await engine.load(ACCOUNT, PERIOD, PERIOD_END, clock.now(), calls=0, tokens=0)
    outcome = await engine.check(req(clock, tokens=10), Limits())
    assert outcome.admitted and (outcome.calls_used, outcome.tokens_used) == (6, 60)


async def test_blocking_calls_limit_admits_up_to_the_limit(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock, calls=97)
    limits = Limits(calls=100)
    verdicts = [(await engine.check(req(clock), limits)).verdict for _ in range(5)]
    assert verdicts == [Verdict.ADMITTED] * 3 + [Verdict.REFUSED] * 2
    refused = await engine.check(req(clock), limits)
    assert (refused.limit_name, refused.limit_value, refused.attempted) == ("calls", 100, 101)
    assert refused.retry_after_ms == 0


async def test_billing_policy_admits_and_flags_overage(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock, calls=1, tokens=90)
    limits = Limits(calls=2, tokens=100, calls_policy="bill", tokens_policy="bill")
    first = await engine.check(req(clock, tokens=5), limits)
    assert first.admitted and not first.overage
    second = await engine.check(req(clock, tokens=10), limits)
    assert second.admitted and second.calls_overage and second.tokens_overage
    assert (second.calls_used, second.tokens_used) == (3, 105)


async def test_blocking_tokens_limit_counts_the_estimate(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock, tokens=90)
    limits = Limits(tokens=100)
    refused = await engine.check(req(clock, tokens=11), limits)
    assert (refused.limit_name, refused.attempted) == ("tokens", 101)
    assert (await engine.check(req(clock, tokens=10), limits)).admitted
    # No room left: even a check without an estimate needs a token.
    assert (await engine.check(req(clock), limits)).limit_name == "tokens"


async def test_member_caps_live_inside_the_account_allowance(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    limits = Limits(calls=10, member_calls=2, member_tokens=100)
    for _ in range(2):
        assert (await engine.check(req(clock, tokens=10, member="mem_a"), limits)).admitted
    refused = await engine.check(req(clock, member="mem_a"), limits)
    assert (refused.limit_name, refused.limit_value, refused.attempted) == ("member_calls", 2, 3)
    assert (await engine.check(req(clock, tokens=100, member="mem_b"), limits)).admitted
    assert (await engine.check(req(clock, member="mem_b"), limits)).limit_name == "member_tokens"
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="mem_a")
    assert (status.calls_used, status.member_calls_used, status.member_tokens_used) == (3, 2, 20)


async def test_rpm_counts_fixed_minute_windows(engine: QuotaEngine, clock: FrozenClock) -> None:
    clock.set(datetime(2026, 1, 31, 12, 0, 45, tzinfo=UTC))
    await load(engine, clock)
    limits = Limits(rpm=2)
    assert (await engine.check(req(clock), limits)).admitted
    assert (await engine.check(req(clock), limits)).admitted
    refused = await engine.check(req(clock), limits)
    assert (refused.limit_name, refused.retry_after_ms) == ("rpm", 15_000)
    clock.advance(seconds=14.999)
    assert (await engine.check(req(clock), limits)).limit_name == "rpm"
    clock.advance(seconds=0.001)  # 12:01:00, a new window
    assert (await engine.check(req(clock), limits)).admitted


async def test_tpm_reservation_settles_in_its_window(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    limits = Limits(tpm=1000)
    first = req(clock, tokens=600)
    assert (await engine.check(first, limits)).admitted
    assert (await engine.check(req(clock, tokens=401), limits)).limit_name == "tpm"
    settled = await engine.commit(ACCOUNT, PERIOD, first.reservation_id, 200, clock.now())
    assert (settled.found, settled.reserved_tokens, settled.difference) == (True, 600, -400)
    outcome = await engine.check(req(clock, tokens=800), limits)
    assert outcome.admitted and outcome.tpm_used == 1000
    status = await engine.status(ACCOUNT, PERIOD, clock.now())
    assert (status.tokens_used, status.tpm_used, status.rpm_used) == (1000, 1000, 2)


async def test_commit_charges_excess_and_is_settled_once(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    r = req(clock, tokens=100)
    await engine.check(r, Limits())
    clock.advance(minutes=2)  # a later window: the excess counts there
    settled = await engine.commit(ACCOUNT, PERIOD, r.reservation_id, 150, clock.now())
    assert settled.difference == 50
    status = await engine.status(ACCOUNT, PERIOD, clock.now())
    assert (status.calls_used, status.tokens_used, status.tpm_used) == (1, 150, 50)
    again = await engine.commit(ACCOUNT, PERIOD, r.reservation_id, 150, clock.now())
    assert not again.found
    assert not (await engine.release(ACCOUNT, PERIOD, "rsv_unknown", clock.now())).found


async def test_usage_naming_a_settled_reservation_counts_as_that_call_or_another(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)

    async def used() -> tuple[int, int, int, int]:
        s = await engine.status(ACCOUNT, PERIOD, clock.now(), member="team|a")
        return s.calls_used, s.tokens_used, s.member_calls_used, s.member_tokens_used

    # Committed, then the stored usage names it: the same call, its tokens now the usage's.
    committed = req(clock, tokens=100, member="team|a")
    await engine.check(committed, Limits())
    await engine.commit(ACCOUNT, PERIOD, committed.reservation_id, 120, clock.now())
    named = await engine.commit(
        ACCOUNT, PERIOD, committed.reservation_id, 130, clock.now(), by_event=True
    )
    assert (named.found, named.reserved_tokens, named.difference) == (True, 120, 10)
    assert await used() == (1, 130, 1, 130)
    # Named by usage once more: another call, counted whole.
    again = await engine.commit(
        ACCOUNT, PERIOD, committed.reservation_id, 40, clock.now(), by_event=True
    )
    assert (again.found, again.difference) == (True, 40)
    assert await used() == (2, 170, 2, 170)
    # Released (its call given back), then named by usage: a call of its own.
    released = req(clock, tokens=50, member="team|a")
    await engine.check(released, Limits())
    await engine.release(ACCOUNT, PERIOD, released.reservation_id, clock.now())
    assert await used() == (2, 170, 2, 170)
    await engine.commit(ACCOUNT, PERIOD, released.reservation_id, 60, clock.now(), by_event=True)
    assert await used() == (3, 230, 3, 230)
    # The client's own commit of a settled one finds nothing, as before.
    assert not (await engine.commit(ACCOUNT, PERIOD, released.reservation_id, 1, clock.now())).found
    # Unknown, or remembered no longer: not found (the caller counts its tokens).
    assert not (
        await engine.commit(ACCOUNT, PERIOD, "rsv_unknown", 5, clock.now(), by_event=True)
    ).found
    clock.advance(hours=1, seconds=1)
    assert not (
        await engine.commit(
            ACCOUNT, PERIOD, committed.reservation_id, 5, clock.now(), by_event=True
        )
    ).found


async def test_release_returns_call_tokens_and_slot(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    limits = Limits(concurrency=2, calls=10)
    held = [req(clock, tokens=10, member="m") for _ in range(2)]
    for r in held:
        assert (await engine.check(r, limits)).admitted
    refused = await engine.check(req(clock), limits)
    assert (refused.limit_name, refused.attempted) == ("concurrency", 3)
    assert refused.retry_after_ms > 0
    released = await engine.release(ACCOUNT, PERIOD, held[0].reservation_id, clock.now())
    assert (released.found, released.reserved_tokens, released.difference) == (True, 10, 0)
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="m")
    assert (status.calls_used, status.tokens_used, status.concurrent) == (1, 10, 1)
    assert (status.member_calls_used, status.member_tokens_used, status.rpm_used) == (1, 10, 1)
    assert (await engine.check(req(clock), limits)).admitted


async def test_expired_reservations_return_tokens_and_slot(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    limits = Limits(tokens=1000, concurrency=1)
    r = req(clock, tokens=1000, member="m", ttl=30)
    assert (await engine.check(r, limits)).admitted
    assert (await engine.check(req(clock, tokens=1), limits)).limit_name == "tokens"
    clock.advance(seconds=29)
    assert (await engine.status(ACCOUNT, PERIOD, clock.now())).concurrent == 1
    clock.advance(seconds=1)  # expiry at exactly the TTL
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="m")
    assert (status.calls_used, status.tokens_used, status.concurrent) == (1, 0, 0)
    assert status.member_tokens_used == 0
    assert (await engine.check(req(clock, tokens=1000), limits)).admitted
    # A commit after expiry finds nothing: the tokens were already returned.
    assert not (await engine.commit(ACCOUNT, PERIOD, r.reservation_id, 5, clock.now())).found


async def test_record_adds_usage_without_reservation(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    await engine.record(
        ACCOUNT, PERIOD, PERIOD_END, clock.now(), calls=2, tokens=300, member="mem_a"
    )
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="mem_a")
    assert (status.calls_used, status.tokens_used, status.tpm_used, status.rpm_used) == (
        2,
        300,
        300,
        0,
    )
    assert (status.member_calls_used, status.member_tokens_used) == (2, 300)
    assert (await engine.check(req(clock, tokens=1), Limits(tpm=300))).limit_name == "tpm"


async def test_forced_load_keeps_live_reservations(engine: QuotaEngine, clock: FrozenClock) -> None:
    await load(engine, clock, calls=3, tokens=30)
    r = req(clock, tokens=100, member="m")
    await engine.check(r, Limits())
    loaded = await engine.load(
        ACCOUNT,
        PERIOD,
        PERIOD_END,
        clock.now(),
        calls=10,
        tokens=500,
        force=True,
        members={"m": (4, 40)},
    )
    assert loaded
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="m")
    assert (status.calls_used, status.tokens_used) == (11, 600)
    assert (status.member_calls_used, status.member_tokens_used) == (5, 140)
    await engine.release(ACCOUNT, PERIOD, r.reservation_id, clock.now())
    status = await engine.status(ACCOUNT, PERIOD, clock.now())
    assert (status.calls_used, status.tokens_used) == (10, 500)


async def test_accounts_are_independent(engine: QuotaEngine, clock: FrozenClock) -> None:
    await load(engine, clock, calls=1)
    other = CheckRequest(
        account_id="acct_2",
        period_key=PERIOD,
        period_end=PERIOD_END,
        now=clock.now(),
        reservation_id="rsv_x",
    )
    assert (await engine.check(other, Limits())).verdict is Verdict.NOT_LOADED
    assert (await engine.check(req(clock), Limits(calls=1))).limit_name == "calls"


OPS = st.lists(
    st.tuples(
        st.sampled_from(["check", "commit", "release", "tick"]),
        st.integers(min_value=0, max_value=400),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
async def test_limits_hold_under_any_sequence(
    engine: QuotaEngine, ops: list[tuple[str, int]]
) -> None:
    """Whatever the order of checks, commits, releases and time: every limit holds."""
    clock = FrozenClock(datetime(2026, 1, 31, 12, 0, tzinfo=UTC))
    account = new_id("acct", clock.now())
    limits = Limits(calls=25, tokens=3000, tpm=1500, rpm=10, concurrency=4)
    await engine.load(account, PERIOD, PERIOD_END, clock.now(), calls=0, tokens=0)
    held: list[tuple[str, int, int]] = []
    window_tokens: dict[int, int] = {}
    for op, n in ops:
        now = clock.now()
        minute = int(now.timestamp()) // 60
        if op == "check":
            r = CheckRequest(account, PERIOD, PERIOD_END, now, new_id("rsv", now), n, None, 90)
            outcome = await engine.check(r, limits)
            if outcome.admitted:
                held.append((r.reservation_id, n, minute))
                window_tokens[minute] = window_tokens.get(minute, 0) + n
                assert outcome.calls_used <= 25 and outcome.tokens_used <= 3000
                assert outcome.tpm_used <= 1500 and outcome.rpm_used <= 10
                assert outcome.concurrent <= 4
        elif op in ("commit", "release") and held:
            rid, reserved, taken_in = held.pop(n % len(held))
            actual = reserved * n // 400 if op == "commit" else 0
            if op == "commit":
                # Settling at or below the estimate keeps every counter within its limit.
                settled = await engine.commit(account, PERIOD, rid, actual, now)
            else:
                settled = await engine.release(account, PERIOD, rid, now)
            if settled.found and taken_in == minute:
                window_tokens[minute] -= reserved - actual  # given back to its window
        elif op == "tick":
            clock.advance(seconds=n / 10)
        status = await engine.status(account, PERIOD, clock.now())
        assert 0 <= status.tokens_used <= 3000 and 0 <= status.calls_used <= 25
        assert 0 <= status.tpm_used <= 1500 and 0 <= status.concurrent <= 4
    assert all(tokens <= 1500 for tokens in window_tokens.values())


async def test_counts_beyond_float_printing_stay_exact(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    """Lua prints 10^14 as 1e+14: every count and limit must still travel as exact digits."""
    big = 2 * 10**15
    await load(engine, clock, calls=big, tokens=big)
    limits = Limits(calls=big + 1, tokens=big + 10, tpm=10**15)
    admitted = await engine.check(req(clock, tokens=7), limits)
    assert admitted.admitted
    assert (admitted.calls_used, admitted.tokens_used) == (big + 1, big + 7)
    refused = await engine.check(req(clock, tokens=7), limits)
    assert (refused.limit_name, refused.limit_value, refused.attempted) == (
        "calls",
        big + 1,
        big + 2,
    )
    limits = Limits(tokens=big + 10)
    refused = await engine.check(req(clock, tokens=7), limits)
    assert (refused.limit_name, refused.limit_value, refused.attempted) == (
        "tokens",
        big + 10,
        big + 14,
    )
    await engine.record(ACCOUNT, PERIOD, PERIOD_END, clock.now(), calls=1, tokens=1)
    status = await engine.status(ACCOUNT, PERIOD, clock.now())
    assert (status.calls_used, status.tokens_used) == (big + 2, big + 8)


async def test_member_ids_may_contain_the_separator(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    await load(engine, clock)
    limits = Limits(member_calls=1)
    r = req(clock, tokens=5, member="team|a")
    assert (await engine.check(r, limits)).admitted
    assert (await engine.check(req(clock, member="team|a"), limits)).limit_name == "member_calls"
    assert (await engine.check(req(clock, member="team"), limits)).admitted
    await engine.release(ACCOUNT, PERIOD, r.reservation_id, clock.now())
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="team|a")
    assert (status.member_calls_used, status.member_tokens_used) == (0, 0)


async def test_checks_issued_together_answer_as_one_after_another(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    """Checks of one event-loop turn go to Redis as one batch: each must still get what it
    would get alone, in order (members, two sets of limits, a reservation expiring between
    two checks of the batch, refusals, an account whose counters are not loaded)."""
    start = clock.now()
    await load(engine, clock, calls=3, tokens=40)
    account_limits = Limits(calls=20, tokens=400, rpm=7, concurrency=2, member_calls=2)
    member_limits = Limits(calls=20, tokens=400, rpm=7, concurrency=5, member_tokens=30)

    def at(ms: int, tokens: int, member: str | None = None, ttl: int = 1) -> CheckRequest:
        now = start + timedelta(milliseconds=ms)
        return CheckRequest(
            ACCOUNT, PERIOD, PERIOD_END, now, new_id("rsv", now), tokens, member, ttl
        )

    other = CheckRequest("acct_other", PERIOD, PERIOD_END, start, "rsv_other", 5)
    batch = [
        (at(0, 10, "a;b"), account_limits),
        (at(1, 20), account_limits),
        (at(2, 5), account_limits),  # concurrency: two live reservations
        (other, account_limits),
        (at(1_000, 25, "a;b", ttl=300), member_limits),  # the first expired: its tokens back
        (at(1_001, 10, "a;b"), member_limits),  # member tokens: 25 + 10 > 30
        (at(1_002, 0, "a;b"), account_limits),  # member calls: the expiry kept the call
        (at(1_003, 7, "c|d"), member_limits),
        (at(1_500, 1), member_limits),
        (at(1_600, 2), member_limits),
        (at(1_700, 3), member_limits),
        (at(1_800, 4), member_limits),  # rpm: 7 admitted in this minute
    ]
    alone = MemoryQuotaEngine()
    await alone.load(ACCOUNT, PERIOD, PERIOD_END, start, calls=3, tokens=40)
    expected = [await alone.check(r, limits) for r, limits in batch]
    assert [o.limit_name or o.verdict.name for o in expected] == [
        "ADMITTED",
        "ADMITTED",
        "concurrency",
        "NOT_LOADED",
        "ADMITTED",
        "member_tokens",
        "member_calls",
        "ADMITTED",
        "ADMITTED",
        "ADMITTED",
        "ADMITTED",
        "rpm",
    ]
    got = await asyncio.gather(*(engine.check(r, limits) for r, limits in batch))
    assert got == expected
    later = start + timedelta(milliseconds=1_800)
    for member in ("a;b", "c|d", None):
        assert await engine.status(ACCOUNT, PERIOD, later, member) == await alone.status(
            ACCOUNT, PERIOD, later, member
        )


async def test_settlements_issued_with_checks_share_a_flush(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    """Commits, releases and records issued in one loop turn with checks go to Redis in one
    pipeline: each has its own effect, whatever order the concurrent calls take."""
    await load(engine, clock, calls=10, tokens=1000)
    first, second = req(clock, tokens=100, member="m1"), req(clock, tokens=50)
    assert (await engine.check(first, Limits())).admitted
    assert (await engine.check(second, Limits())).admitted
    now = clock.now()
    committed, released, recorded, unknown, checked = await asyncio.gather(
        engine.commit(ACCOUNT, PERIOD, first.reservation_id, 80, now),
        engine.release(ACCOUNT, PERIOD, second.reservation_id, now),
        engine.record(ACCOUNT, PERIOD, PERIOD_END, now, calls=1, tokens=5, member="m1"),
        engine.commit(ACCOUNT, PERIOD, "rsv_unknown", 10, now),
        engine.check(req(clock, tokens=30, member="m1"), Limits(calls=14)),
    )
    assert (committed.found, committed.reserved_tokens, committed.difference) == (True, 100, -20)
    assert (released.found, released.reserved_tokens, released.difference) == (True, 50, 0)
    assert not unknown.found
    assert checked.admitted
    assert recorded[0] in (12, 13)  # before or after the concurrent check
    status = await engine.status(ACCOUNT, PERIOD, clock.now(), member="m1")
    # 10 + 2 checked - 1 released + 1 recorded + 1 checked; 1000 + 80 + 5 + 30 tokens.
    assert (status.calls_used, status.tokens_used, status.concurrent) == (13, 1115, 1)
    assert (status.member_calls_used, status.member_tokens_used) == (3, 115)


async def test_a_check_whose_caller_is_gone_gives_its_reservation_back(
    redis_engine: RedisQuotaEngine, clock: FrozenClock
) -> None:
    """A caller cancelled (a gateway's timeout) while its check is on the wire never learns
    the reservation id: the engine releases it instead of holding the call, the tokens and
    the concurrency slot until the TTL."""
    engine = redis_engine
    await load(engine, clock)
    limits = Limits(concurrency=1)
    caller = asyncio.create_task(engine.check(req(clock, tokens=100), limits))
    while not engine._flushes:  # the batch is sent
        await asyncio.sleep(0)
    caller.cancel()
    await asyncio.gather(*engine._flushes)
    for _ in range(100):  # the release goes in a flush of its own
        status = await engine.status(ACCOUNT, PERIOD, clock.now())
        if status.concurrent == 0:
            break
        await asyncio.sleep(0.01)
    assert (status.calls_used, status.tokens_used, status.concurrent) == (0, 0, 0)
    assert (await engine.check(req(clock), limits)).admitted


async def test_many_expired_reservations_are_all_given_back_to_status_and_rebuild(
    engine: QuotaEngine, clock: FrozenClock
) -> None:
    """More reservations than one sweep takes (an outage left their usage unsent): a status
    and a rebuild see every one of them expired, not only the first batch."""
    await load(engine, clock)
    for _ in range(250):
        assert (await engine.check(req(clock, tokens=10, ttl=30), Limits())).admitted
    clock.advance(seconds=31)
    status = await engine.status(ACCOUNT, PERIOD, clock.now())
    assert (status.calls_used, status.tokens_used, status.concurrent) == (250, 0, 0)
    # The stored usage holds 40 calls: a rebuild keeps no expired reservation as live.
    assert await engine.load(
        ACCOUNT, PERIOD, PERIOD_END, clock.now(), calls=40, tokens=400, force=True
    )
    status = await engine.status(ACCOUNT, PERIOD, clock.now())
    assert (status.calls_used, status.tokens_used) == (40, 400)
