"""gb_months: time-weighted storage snapshots, exact Decimal results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aihub_billing.usage.storage import gb_months

JAN = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
FEB = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


def at(day: int, hour: int = 0, month: int = 1) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("snapshots", "period", "initial", "expected"),
    [
        # Nothing stored at all.
        ([], JAN, Decimal(0), Decimal("0")),
        # A value held for the whole period is that many GB-months, in 31- and 28-day months.
        ([], JAN, Decimal("10"), Decimal("10")),
        ([], FEB, Decimal("10"), Decimal("10")),
        ([(at(1), Decimal("7.5"))], JAN, Decimal(0), Decimal("7.5")),
        # Half the month at 10, half at 30 (15.5 days each of 31).
        ([(at(1), Decimal(10)), (at(16, 12), Decimal(30))], JAN, Decimal(0), Decimal("20")),
        # Before the first snapshot the initial value holds; 0 GB from day 15 of 28.
        ([(at(15, month=2), Decimal(0))], FEB, Decimal("4"), Decimal("2")),
        # Snapshots outside the period are ignored; order of input does not matter.
        (
            [(at(16, 12), Decimal(30)), (at(1), Decimal(10)), (at(1, month=2), Decimal(99))],
            JAN,
            Decimal(0),
            Decimal("20"),
        ),
        # One day of 31 at 1 GB: 1/31 rounded half-up at 18 places.
        ([(at(31), Decimal(1))], JAN, Decimal(0), Decimal("0.032258064516129032")),
        # 30 days of 31 at 1 GB = 30/31 = 0.967741935483870967741... -> ...968 (half-up).
        (
            [(at(1), Decimal(1)), (at(31), Decimal(0))],
            JAN,
            Decimal(0),
            Decimal("0.967741935483870968"),
        ),
        # One hour of a 24-hour period at 24 GB is exactly 1.
        (
            [(at(1, 5), Decimal(24)), (at(1, 6), Decimal(0))],
            (at(1), at(2)),
            Decimal(0),
            Decimal("1"),
        ),
    ],
)
def test_gb_months(
    snapshots: list[tuple[datetime, Decimal]],
    period: tuple[datetime, datetime],
    initial: Decimal,
    expected: Decimal,
) -> None:
    result = gb_months(snapshots, *period, initial_gb=initial)
    assert result == expected
    assert str(result) == str(expected)


def test_refuses_floats_negative_values_and_empty_periods() -> None:
    with pytest.raises(TypeError):
        gb_months([(at(2), 1.5)], *JAN)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        gb_months([(at(2), Decimal(-1))], *JAN)
    with pytest.raises(ValueError):
        gb_months([], JAN[1], JAN[0])
    with pytest.raises(ValueError):
        gb_months([(datetime(2026, 1, 2), Decimal(1))], *JAN)  # naive


def test_a_result_with_many_digits_is_rounded_once() -> None:
    """2/3 of a period at 90,000,000,000.000001 GB: the exact 60000000000.000000666... is
    rounded half-up at 18 places (29 digits), not rounded again to the default 28."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(microseconds=3)
    result = gb_months(
        [(start + timedelta(microseconds=2), Decimal(0))],
        start,
        end,
        initial_gb=Decimal("90000000000.000001"),
    )
    assert str(result) == "60000000000.000000666666666667"
