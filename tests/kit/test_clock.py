"""Tests for kit.clock: FrozenClock only moves forward, naive datetimes are refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from aihub_billing.kit.clock import Clock, FrozenClock, SystemClock, ensure_utc, monotonic

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))

Advance = Callable[[FrozenClock], datetime]


def read(clock: Clock) -> datetime:
    return clock.now()


class TestFrozenClock:
    def test_now_is_fixed(self) -> None:
        clock = FrozenClock(T0)
        assert clock.now() == T0
        assert clock.now() == T0
        assert read(clock) == T0

    def test_converts_to_utc(self) -> None:
        clock = FrozenClock(datetime(2025, 1, 31, 14, 0, tzinfo=PLUS_TWO))
        assert clock.now() == T0
        assert clock.now().tzinfo is UTC

    def test_refuses_naive(self) -> None:
        with pytest.raises(ValueError, match="naive"):
            FrozenClock(datetime(2025, 1, 31))

    @pytest.mark.parametrize(
        ("advance", "expected"),
        [
            (lambda c: c.advance(days=3), T0 + timedelta(days=3)),
            (lambda c: c.advance(timedelta(hours=1)), T0 + timedelta(hours=1)),
            (
                lambda c: c.advance(timedelta(hours=1), minutes=30),
                T0 + timedelta(hours=1, minutes=30),
            ),
            (lambda c: c.advance(seconds=0.5), T0 + timedelta(milliseconds=500)),
            (lambda c: c.advance(), T0),
            (lambda c: c.advance(timedelta(0)), T0),
        ],
    )
    def test_advance(self, advance: Advance, expected: datetime) -> None:
        clock = FrozenClock(T0)
        assert advance(clock) == expected
        assert clock.now() == expected

    def test_advance_accumulates(self) -> None:
        clock = FrozenClock(T0)
        clock.advance(days=1)
        clock.advance(hours=12)
        assert clock.now() == T0 + timedelta(days=1, hours=12)

    @pytest.mark.parametrize(
        "advance",
        [
            lambda c: c.advance(timedelta(seconds=-1)),
            lambda c: c.advance(days=-3),
            lambda c: c.advance(timedelta(hours=1), hours=-2),
        ],
    )
    def test_advance_refuses_going_back(self, advance: Advance) -> None:
        clock = FrozenClock(T0)
        with pytest.raises(ValueError, match="negative"):
            advance(clock)
        assert clock.now() == T0

    def test_advance_refuses_unknown_unit(self) -> None:
        with pytest.raises(TypeError):
            FrozenClock(T0).advance(fortnights=1)

    def test_set_forward_and_same_time(self) -> None:
        clock = FrozenClock(T0)
        later = datetime(2025, 3, 1, tzinfo=UTC)
        clock.set(later)
        assert clock.now() == later
        clock.set(later)
        assert clock.now() == later

    def test_set_converts_to_utc(self) -> None:
        clock = FrozenClock(T0)
        clock.set(datetime(2025, 2, 1, 2, 0, tzinfo=PLUS_TWO))
        assert clock.now() == datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
        assert clock.now().tzinfo is UTC

    def test_set_refuses_going_back(self) -> None:
        clock = FrozenClock(T0)
        with pytest.raises(ValueError, match="back"):
            clock.set(T0 - timedelta(microseconds=1))
        assert clock.now() == T0

    def test_set_refuses_naive(self) -> None:
        clock = FrozenClock(T0)
        with pytest.raises(ValueError, match="naive"):
            clock.set(datetime(2030, 1, 1))


class TestEnsureUtc:
    def test_converts(self) -> None:
        value = ensure_utc(datetime(2025, 1, 31, 14, 0, tzinfo=PLUS_TWO))
        assert value == T0
        assert value.tzinfo is UTC

    def test_keeps_utc(self) -> None:
        assert ensure_utc(T0) == T0
        assert ensure_utc(T0).tzinfo is UTC

    def test_refuses_naive(self) -> None:
        with pytest.raises(ValueError, match="naive datetime"):
            ensure_utc(datetime(2025, 1, 31))


def test_system_clock_is_aware_utc_and_moves_forward() -> None:
    clock = SystemClock()
    first = read(clock)
    second = clock.now()
    assert first.tzinfo is UTC
    assert first <= second
    assert first.year >= 2024


def test_monotonic_never_goes_back() -> None:
    first = monotonic()
    assert monotonic() >= first
