"""Billing periods computed from an immutable anchor: calendar-month arithmetic and [start, end).

Every period is derived from the anchor by adding N intervals, never chained from the previous
period, so a Jan 31 anchor gives Feb 28/29 and then Mar 31 again.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from aihub_billing.kit.clock import ensure_utc

__all__ = [
    "Interval",
    "Period",
    "add_months",
    "day_split",
    "month_at",
    "months_of",
    "nth_period",
    "period_at",
    "period_index",
]

IntervalUnit = Literal["day", "month"]


def add_months(anchor: datetime, months: int) -> datetime:
    """Add calendar months, clamping the day to the target month's last day.

    Keeps the time of day and the anchor's tzinfo (no UTC conversion here).
    """
    ensure_utc(anchor)  # only to refuse naive datetimes
    total = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(total, 12)
    month = month0 + 1
    if not 1 <= year <= 9999:
        raise ValueError(f"{anchor.isoformat()} + {months} months is out of range")
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


@dataclass(frozen=True, slots=True)
class Interval:
    """A billing interval: `count` days or `count` calendar months."""

    unit: IntervalUnit
    count: int = 1

    def __post_init__(self) -> None:
        if self.unit not in ("day", "month"):
            raise ValueError(f"interval unit must be 'day' or 'month', not {self.unit!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"interval count must be an int >= 1, not {self.count!r}")

    @classmethod
    def monthly(cls) -> Interval:
        return cls("month", 1)

    @classmethod
    def yearly(cls) -> Interval:
        return cls("month", 12)

    @classmethod
    def days(cls, n: int) -> Interval:
        return cls("day", n)

    def shift(self, anchor: datetime, n: int) -> datetime:
        """Start of the n-th period after `anchor` (n may be negative), in UTC."""
        anchor = ensure_utc(anchor)
        if self.unit == "month":
            return add_months(anchor, n * self.count)
        return anchor + timedelta(days=n * self.count)


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open time range [start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start, end = ensure_utc(self.start), ensure_utc(self.end)
        if not start < end:
            raise ValueError(
                f"period start {start.isoformat()} must be before end {end.isoformat()}"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    def contains(self, at: datetime) -> bool:
        return self.start <= ensure_utc(at) < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def seconds(self) -> int:
        """Whole seconds in the period (floor), e.g. for proration ratios."""
        return self.duration // timedelta(seconds=1)


def period_index(anchor: datetime, interval: Interval, at: datetime) -> int:
    """The n with shift(anchor, n) <= at < shift(anchor, n + 1); negative before the anchor."""
    anchor, at = ensure_utc(anchor), ensure_utc(at)
    if interval.unit == "day":
        # Timedelta floor division is exact integer arithmetic on microseconds.
        return (at - anchor) // timedelta(days=interval.count)
    # Estimate from the month difference; clamping can only put it off by one, fixed below.
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    n = months // interval.count
    while interval.shift(anchor, n) > at:
        n -= 1
    while interval.shift(anchor, n + 1) <= at:
        n += 1
    return n


def nth_period(anchor: datetime, interval: Interval, n: int) -> Period:
    """The n-th period after `anchor` (period 0 starts at the anchor)."""
    return Period(interval.shift(anchor, n), interval.shift(anchor, n + 1))


def period_at(anchor: datetime, interval: Interval, at: datetime) -> Period:
    """The period that contains `at`, computed from the anchor."""
    return nth_period(anchor, interval, period_index(anchor, interval, at))


def months_of(period: Period) -> list[Period]:
    """The months of a period, counted from its start as calendar months (a Jan 31 start
    gives Feb 29, then Mar 31), the last one cut at the period's end: the units a monthly
    allowance is counted in. A period of a month or less is its one month."""
    months: list[Period] = []
    start, n = period.start, 1
    while (end := add_months(period.start, n)) < period.end:
        months.append(Period(start, end))
        start, n = end, n + 1
    months.append(Period(start, period.end))
    return months


def month_at(period: Period, at: datetime) -> Period:
    """The month of `period` (see `months_of`) that contains `at`, or the last one when `at`
    lies past the period."""
    months = months_of(period)
    return next((m for m in months if m.contains(at)), months[-1])


_DAY = timedelta(days=1)


def day_split(start: datetime, end: datetime) -> tuple[date, date, list[tuple[datetime, datetime]]]:
    """[start, end) as whole UTC days [first_day, last_day) plus the partial edges (what daily
    rollups answer and what raw events must); when no whole day fits, first_day >= last_day
    and the one edge is the whole range."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first_day = start.date() if start.timetz() == time(0, tzinfo=UTC) else start.date() + _DAY
    last_day = end.date()  # exclusive
    if first_day >= last_day:
        return first_day, last_day, [(start, end)] if start < end else []
    edges = [(start, midnight(first_day)), (midnight(last_day), end)]
    return first_day, last_day, [(s, e) for s, e in edges if s < e]


def midnight(day: date) -> datetime:
    """The UTC instant `day` starts."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def next_month(day: date) -> date:
    """The first day of the month after `day`'s."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)
