"""Run-rate forecasts: exact tables and properties (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aihub_billing.summary.forecast import (
    MIN_RATE_SPAN,
    projected_amount,
    projected_count,
    runs_out_at,
)

START = datetime(2026, 1, 31, 12, tzinfo=UTC)
END = datetime(2026, 2, 28, 12, tzinfo=UTC)  # 28 days
WEEK = START + timedelta(days=7)


def test_a_week_of_a_four_week_period_is_a_quarter() -> None:
    assert projected_count(700, START, WEEK, END) == 2800
    assert projected_amount(Decimal("0.0875"), START, WEEK, END) == Decimal("0.35")
    # 105,000 tokens a week against 200,000: out after 13 1/3 days.
    assert runs_out_at(105_000, 200_000, START, WEEK, END) == START + timedelta(days=13, hours=8)
    assert runs_out_at(105_000, 1_000_000, START, WEEK, END) is None  # after the period
    assert runs_out_at(105_000, None, START, WEEK, END) is None  # no limit


def test_edges() -> None:
    # Under a day in, the rate is taken over the first day: 20 calls in 5 seconds (or at
    # the very start) are the day's, not 3.4 million a week.
    assert timedelta(days=1) == MIN_RATE_SPAN
    assert projected_count(20, START, START + timedelta(seconds=5), END) == 20 * 28
    assert projected_count(5, START, START, END) == 5 * 28
    assert projected_amount(Decimal("0.15"), START, START, END) == Decimal("4.2")
    assert runs_out_at(5_000, 10_000, START, START + timedelta(minutes=1), END) == START + (
        timedelta(days=2)
    )
    # A period shorter than a day: the rate is over the whole of it.
    assert projected_count(7, START, START, START + timedelta(hours=1)) == 7
    assert projected_count(0, START, WEEK, END) == 0
    assert projected_count(10, START, END + timedelta(days=3), END) == 10  # held at the end
    assert runs_out_at(0, 100, START, WEEK, END) is None  # no use, no rate
    assert runs_out_at(100, 100, START, WEEK, END) == WEEK  # already there
    assert runs_out_at(150, 100, START, END + timedelta(days=1), END) == END
    with pytest.raises(ValueError):
        projected_count(1, END, WEEK, START)


moments = st.integers(1, 28 * 86_400 * 10**6).map(lambda us: START + timedelta(microseconds=us))


@given(used=st.integers(0, 10**12), now=moments)
def test_projections_never_fall_below_what_is_used(used: int, now: datetime) -> None:
    projected = projected_count(used, START, now, END)
    assert used <= projected
    assert projected <= used * 28  # at most the rate of the first day


@given(used=st.integers(1, 10**9), limit=st.integers(1, 10**9), now=moments)
def test_the_run_out_moment_is_where_the_rate_reaches_the_limit(
    used: int, limit: int, now: datetime
) -> None:
    at = runs_out_at(used, limit, START, now, END)
    elapsed = max(now - START, MIN_RATE_SPAN) // timedelta(microseconds=1)
    if used >= limit:
        assert at == now
        return
    reach = -(-limit * elapsed // used)  # microseconds after START, rounded up
    if reach >= (END - START) // timedelta(microseconds=1):
        assert at is None
    else:
        assert at == START + timedelta(microseconds=reach)
        # At that moment the projected use has reached the limit, a microsecond before not.
        assert used * reach >= limit * elapsed > used * (reach - 1)
