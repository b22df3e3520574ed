"""Storage snapshots to GB-months (pure): each snapshot's value holds until the next one."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from aihub_billing.kit.clock import ensure_utc
from aihub_billing.kit.money import round_fraction

# Same scale as the unrounded usage columns (NUMERIC(38, 18)).
RESULT_PLACES = 18
_US = timedelta(microseconds=1)


def gb_months(
    snapshots: Iterable[tuple[datetime, Decimal]],
    start: datetime,
    end: datetime,
    *,
    initial_gb: Decimal = Decimal(0),
) -> Decimal:
    """Time-weighted GB over the period [start, end), in units of that whole period.

    `initial_gb` is the value in force at `start` (the last snapshot before it); snapshots
    outside the period are ignored. Holding 10 GB for the whole period gives exactly 10; the
    result is exact, rounded half-up to 18 places only when the division does not terminate.
    """
    start, end = ensure_utc(start), ensure_utc(end)
    if end <= start:
        raise ValueError("the period must end after it starts")
    points = sorted(
        (ensure_utc(at), _gb(gb)) for at, gb in snapshots if start <= ensure_utc(at) < end
    )
    total = Fraction(0)
    value, since = _gb(initial_gb), start
    for at, gb in points:
        total += Fraction(value) * ((at - since) // _US)
        value, since = gb, at
    total += Fraction(value) * ((end - since) // _US)
    exact = total / ((end - start) // _US)
    return round_fraction(exact, RESULT_PLACES)


def _gb(value: object) -> Decimal:
    if isinstance(value, (float, bool)) or not isinstance(value, (Decimal, int)):
        raise TypeError("storage GB must be Decimal or int")
    gb = Decimal(value)
    if not gb.is_finite() or gb < 0:
        raise ValueError(f"storage GB must be finite and >= 0, got {gb}")
    return gb
