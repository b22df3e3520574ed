"""Tests for kit.periods: calendar-month clamping, anchor-based periods, exact boundaries."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.kit.periods import (
    Interval,
    Period,
    add_months,
    nth_period,
    period_at,
    period_index,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("anchor", "months", "expected"),
    [
        (utc(2024, 1, 31), 1, utc(2024, 2, 29)),  # leap year
        (utc(2025, 1, 31), 1, utc(2025, 2, 28)),  # non-leap year
        (utc(2025, 1, 31), 2, utc(2025, 3, 31)),  # from the anchor, not from Feb 28
        (utc(2024, 1, 31), 2, utc(2024, 3, 31)),
        (utc(2025, 1, 31), 3, utc(2025, 4, 30)),
        (utc(2025, 3, 31), 1, utc(2025, 4, 30)),
        (utc(2025, 1, 30), 1, utc(2025, 2, 28)),
        (utc(2024, 1, 30), 1, utc(2024, 2, 29)),
        (utc(2025, 1, 29), 1, utc(2025, 2, 28)),
        (utc(2024, 1, 29), 1, utc(2024, 2, 29)),
        (utc(2024, 2, 29), 12, utc(2025, 2, 28)),
        (utc(2024, 2, 29), 48, utc(2028, 2, 29)),
        (utc(2025, 12, 31), 2, utc(2026, 2, 28)),
        (utc(2025, 11, 15), 1, utc(2025, 12, 15)),
        (utc(2025, 12, 15), 1, utc(2026, 1, 15)),
        (utc(2025, 1, 15), 0, utc(2025, 1, 15)),
        # negative months
        (utc(2025, 3, 31), -1, utc(2025, 2, 28)),
        (utc(2024, 3, 31), -1, utc(2024, 2, 29)),
        (utc(2025, 1, 15), -1, utc(2024, 12, 15)),
        (utc(2025, 1, 31), -13, utc(2023, 12, 31)),
        (utc(2025, 5, 31), -3, utc(2025, 2, 28)),
        (utc(2025, 1, 1), -12, utc(2024, 1, 1)),
        (utc(2025, 1, 1), -1200, utc(1925, 1, 1)),
    ],
)
def test_add_months(anchor: datetime, months: int, expected: datetime) -> None:
    assert add_months(anchor, months) == expected


def test_add_months_keeps_time_of_day_and_tzinfo() -> None:
    plus_five = timezone(timedelta(hours=5))
    anchor = datetime(2025, 1, 31, 23, 59, 58, 123456, tzinfo=plus_five)
    result = add_months(anchor, 1)
    assert result == datetime(2025, 2, 28, 23, 59, 58, 123456, tzinfo=plus_five)
    assert result.tzinfo is plus_five


def test_add_months_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        add_months(datetime(2025, 1, 31), 1)


def test_add_months_out_of_range() -> None:
    with pytest.raises(ValueError, match="range"):
        add_months(utc(9999, 12, 1), 1)


class TestInterval:
    def test_constructors(self) -> None:
        assert Interval.monthly() == Interval("month", 1)
        assert Interval.yearly() == Interval("month", 12)
        assert Interval.days(7) == Interval("day", 7)

    @pytest.mark.parametrize(
        ("unit", "count"),
        [("month", 0), ("month", -1), ("day", 0), ("week", 1), ("month", True), ("day", 1.0)],
    )
    def test_refuses_bad(self, unit: str, count: object) -> None:
        with pytest.raises(ValueError, match="interval"):
            Interval(unit, count)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("interval", "n", "expected"),
        [
            (Interval.monthly(), 0, utc(2024, 1, 31, 9)),
            (Interval.monthly(), 1, utc(2024, 2, 29, 9)),
            (Interval.monthly(), 2, utc(2024, 3, 31, 9)),
            (Interval.monthly(), -1, utc(2023, 12, 31, 9)),
            (Interval("month", 3), 1, utc(2024, 4, 30, 9)),
            (Interval.yearly(), 1, utc(2025, 1, 31, 9)),
            (Interval.days(7), 2, utc(2024, 2, 14, 9)),
            (Interval.days(30), -1, utc(2024, 1, 1, 9)),
        ],
    )
    def test_shift(self, interval: Interval, n: int, expected: datetime) -> None:
        assert interval.shift(utc(2024, 1, 31, 9), n) == expected

    def test_shift_refuses_naive(self) -> None:
        with pytest.raises(ValueError, match="naive"):
            Interval.monthly().shift(datetime(2024, 1, 31), 1)


class TestPeriod:
    def test_half_open(self) -> None:
        period = Period(utc(2025, 1, 1), utc(2025, 2, 1))
        assert period.contains(utc(2025, 1, 1))
        assert period.contains(utc(2025, 1, 31, 23, 59, 59, 999999))
        assert not period.contains(utc(2025, 2, 1))
        assert not period.contains(utc(2024, 12, 31, 23, 59, 59, 999999))

    def test_duration_and_seconds(self) -> None:
        period = Period(utc(2025, 2, 1), utc(2025, 3, 1))
        assert period.duration == timedelta(days=28)
        assert period.seconds == 28 * 86400
        assert Period(utc(2025, 1, 1), utc(2025, 1, 1, 0, 0, 1, 500000)).seconds == 1

    def test_normalizes_to_utc(self) -> None:
        plus_two = timezone(timedelta(hours=2))
        period = Period(datetime(2025, 1, 1, 2, tzinfo=plus_two), utc(2025, 2, 1))
        assert period.start == utc(2025, 1, 1)
        assert period.start.tzinfo is UTC
        assert period.contains(datetime(2025, 1, 1, 2, tzinfo=plus_two))

    @pytest.mark.parametrize(
        ("start", "end"),
        [(utc(2025, 2, 1), utc(2025, 2, 1)), (utc(2025, 2, 1), utc(2025, 1, 1))],
    )
    def test_refuses_empty_or_reversed(self, start: datetime, end: datetime) -> None:
        with pytest.raises(ValueError, match="before"):
            Period(start, end)

    def test_refuses_naive(self) -> None:
        with pytest.raises(ValueError, match="naive"):
            Period(datetime(2025, 1, 1), utc(2025, 2, 1))
        with pytest.raises(ValueError, match="naive"):
            Period(utc(2025, 1, 1), utc(2025, 2, 1)).contains(datetime(2025, 1, 2))


MONTHLY = Interval.monthly()
YEARLY = Interval.yearly()


@pytest.mark.parametrize(
    ("anchor", "interval", "at", "index", "start", "end"),
    [
        # anchor on the 31st, non-leap year
        (utc(2025, 1, 31), MONTHLY, utc(2025, 1, 31), 0, utc(2025, 1, 31), utc(2025, 2, 28)),
        (
            utc(2025, 1, 31),
            MONTHLY,
            utc(2025, 2, 27, 23, 59, 59, 999999),
            0,
            utc(2025, 1, 31),
            utc(2025, 2, 28),
        ),
        (utc(2025, 1, 31), MONTHLY, utc(2025, 2, 28), 1, utc(2025, 2, 28), utc(2025, 3, 31)),
        (utc(2025, 1, 31), MONTHLY, utc(2025, 3, 30), 1, utc(2025, 2, 28), utc(2025, 3, 31)),
        (utc(2025, 1, 31), MONTHLY, utc(2025, 3, 31), 2, utc(2025, 3, 31), utc(2025, 4, 30)),
        (utc(2025, 1, 31), MONTHLY, utc(2025, 4, 30), 3, utc(2025, 4, 30), utc(2025, 5, 31)),
        # anchor on the 31st, leap year
        (utc(2024, 1, 31), MONTHLY, utc(2024, 2, 28), 0, utc(2024, 1, 31), utc(2024, 2, 29)),
        (utc(2024, 1, 31), MONTHLY, utc(2024, 2, 29), 1, utc(2024, 2, 29), utc(2024, 3, 31)),
        # anchor on the 30th and 29th
        (utc(2025, 1, 30), MONTHLY, utc(2025, 2, 28, 12), 1, utc(2025, 2, 28), utc(2025, 3, 30)),
        (utc(2025, 1, 30), MONTHLY, utc(2025, 3, 29), 1, utc(2025, 2, 28), utc(2025, 3, 30)),
        (utc(2025, 1, 29), MONTHLY, utc(2025, 3, 28), 1, utc(2025, 2, 28), utc(2025, 3, 29)),
        (utc(2024, 1, 29), MONTHLY, utc(2024, 2, 29), 1, utc(2024, 2, 29), utc(2024, 3, 29)),
        (utc(2024, 1, 30), MONTHLY, utc(2024, 2, 29), 1, utc(2024, 2, 29), utc(2024, 3, 30)),
        # time of day in the anchor is kept
        (
            utc(2025, 1, 31, 10),
            MONTHLY,
            utc(2025, 2, 28, 9, 59),
            0,
            utc(2025, 1, 31, 10),
            utc(2025, 2, 28, 10),
        ),
        # yearly from Feb 29
        (utc(2024, 2, 29), YEARLY, utc(2025, 2, 27), 0, utc(2024, 2, 29), utc(2025, 2, 28)),
        (utc(2024, 2, 29), YEARLY, utc(2025, 3, 1), 1, utc(2025, 2, 28), utc(2026, 2, 28)),
        (utc(2024, 2, 29), YEARLY, utc(2028, 2, 29), 4, utc(2028, 2, 29), utc(2029, 2, 28)),
        (utc(2024, 2, 29), YEARLY, utc(2028, 2, 28), 3, utc(2027, 2, 28), utc(2028, 2, 29)),
        # at before the anchor: negative indexes
        (utc(2025, 1, 31), MONTHLY, utc(2025, 1, 30), -1, utc(2024, 12, 31), utc(2025, 1, 31)),
        (utc(2025, 1, 31), MONTHLY, utc(2024, 12, 31), -1, utc(2024, 12, 31), utc(2025, 1, 31)),
        (utc(2025, 1, 31), MONTHLY, utc(2024, 12, 30), -2, utc(2024, 11, 30), utc(2024, 12, 31)),
        (utc(2025, 3, 31), MONTHLY, utc(2025, 3, 1), -1, utc(2025, 2, 28), utc(2025, 3, 31)),
        # quarterly
        (
            utc(2025, 1, 31),
            Interval("month", 3),
            utc(2025, 5, 1),
            1,
            utc(2025, 4, 30),
            utc(2025, 7, 31),
        ),
        # far from the anchor: no loop over a thousand periods
        (utc(2000, 1, 31), MONTHLY, utc(2099, 12, 31), 1199, utc(2099, 12, 31), utc(2100, 1, 31)),
        (utc(2000, 1, 31), MONTHLY, utc(2099, 12, 30), 1198, utc(2099, 11, 30), utc(2099, 12, 31)),
        # day intervals
        (utc(2025, 1, 1), Interval.days(7), utc(2025, 1, 8), 1, utc(2025, 1, 8), utc(2025, 1, 15)),
        (
            utc(2025, 1, 1),
            Interval.days(7),
            utc(2025, 1, 7, 23, 59),
            0,
            utc(2025, 1, 1),
            utc(2025, 1, 8),
        ),
        (
            utc(2025, 1, 1),
            Interval.days(7),
            utc(2024, 12, 31, 23, 59),
            -1,
            utc(2024, 12, 25),
            utc(2025, 1, 1),
        ),
        (
            utc(2025, 1, 1, 6),
            Interval.days(1),
            utc(2025, 3, 1, 5),
            58,
            utc(2025, 2, 28, 6),
            utc(2025, 3, 1, 6),
        ),
    ],
)
def test_period_at_and_index(
    anchor: datetime,
    interval: Interval,
    at: datetime,
    index: int,
    start: datetime,
    end: datetime,
) -> None:
    assert period_index(anchor, interval, at) == index
    period = period_at(anchor, interval, at)
    assert period == Period(start, end)
    assert period == nth_period(anchor, interval, index)
    assert period.contains(at)


@pytest.mark.parametrize("interval", [MONTHLY, YEARLY, Interval.days(1), Interval.days(30)])
def test_boundaries(interval: Interval) -> None:
    anchor = utc(2024, 1, 31, 8, 30)
    for n in range(-3, 4):
        period = nth_period(anchor, interval, n)
        # start belongs to the period, end to the next one
        assert period_index(anchor, interval, period.start) == n
        assert period_index(anchor, interval, period.end) == n + 1
        assert period_index(anchor, interval, period.end - timedelta(microseconds=1)) == n


def test_non_utc_inputs_are_converted() -> None:
    plus_five = timezone(timedelta(hours=5))
    # 2025-03-01 03:00 +05:00 is 2025-02-28 22:00 UTC: still period 1 of a Jan 31 anchor.
    at = datetime(2025, 3, 1, 3, tzinfo=plus_five)
    period = period_at(utc(2025, 1, 31), MONTHLY, at)
    assert period == Period(utc(2025, 2, 28), utc(2025, 3, 31))
    assert period.start.tzinfo is UTC


@pytest.mark.parametrize(
    "call",
    [
        lambda: period_index(datetime(2025, 1, 1), MONTHLY, utc(2025, 1, 1)),
        lambda: period_index(utc(2025, 1, 1), MONTHLY, datetime(2025, 1, 1)),
        lambda: period_at(utc(2025, 1, 1), Interval.days(1), datetime(2025, 1, 1)),
        lambda: nth_period(datetime(2025, 1, 1), MONTHLY, 0),
    ],
)
def test_refuses_naive(call: object) -> None:
    with pytest.raises(ValueError, match="naive"):
        call()  # type: ignore[operator]


datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
)
intervals = st.sampled_from(
    [
        MONTHLY,
        YEARLY,
        Interval("month", 3),
        Interval("month", 7),
        Interval.days(1),
        Interval.days(7),
        Interval.days(30),
    ]
)


@given(anchor=datetimes, at=datetimes, interval=intervals)
def test_period_at_contains_and_tiles(anchor: datetime, interval: Interval, at: datetime) -> None:
    n = period_index(anchor, interval, at)
    period = period_at(anchor, interval, at)
    assert period.contains(at)
    assert period == nth_period(anchor, interval, n)
    assert period.start == interval.shift(anchor, n)
    previous = nth_period(anchor, interval, n - 1)
    following = nth_period(anchor, interval, n + 1)
    # No gap, no overlap.
    assert previous.end == period.start
    assert period.end == following.start
    assert not previous.contains(at)
    assert not following.contains(at)


@given(anchor=datetimes, months=st.integers(min_value=-1200, max_value=1200))
def test_add_months_clamps(anchor: datetime, months: int) -> None:
    result = add_months(anchor, months)
    assert (result.year - anchor.year) * 12 + (result.month - anchor.month) == months
    assert result.day == min(anchor.day, calendar.monthrange(result.year, result.month)[1])
    assert result.time() == anchor.time()
    assert result.tzinfo is anchor.tzinfo
