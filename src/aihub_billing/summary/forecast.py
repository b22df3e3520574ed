"""Run-rate forecasts to the end of a period (pure): counts, exact amounts, and when a
limit runs out. Time is counted in whole microseconds, so nothing goes through a float."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, localcontext

_US = timedelta(microseconds=1)


def _spans(start: datetime, now: datetime, end: datetime) -> tuple[int, int]:
    """(elapsed, whole period) in microseconds; `now` is held inside [start, end]."""
    if not start < end:
        raise ValueError("a period ends after it starts")
    now = min(max(now, start), end)
    return (now - start) // _US, (end - start) // _US


def projected_count(used: int, start: datetime, now: datetime, end: datetime) -> int:
    """`used` so far, carried on at the same rate to `end` (rounded down). Nothing elapsed
    yet: no rate to carry, the projection is what is used."""
    elapsed, whole = _spans(start, now, end)
    if elapsed == 0:
        return used
    return used * whole // elapsed


def projected_amount(amount: Decimal, start: datetime, now: datetime, end: datetime) -> Decimal:
    """An unrounded amount carried on at the same rate to `end` (exact up to 50 digits;
    the caller rounds once, to minor units)."""
    elapsed, whole = _spans(start, now, end)
    if elapsed == 0:
        return amount
    with localcontext() as ctx:
        ctx.prec = 50
        return amount * whole / elapsed


def runs_out_at(
    used: int, limit: int | None, start: datetime, now: datetime, end: datetime
) -> datetime | None:
    """When `used` reaches `limit` at the rate so far, if before `end` (None: no limit, no
    use yet, or not in this period). Already at or over the limit: `now`."""
    if limit is None:
        return None
    if used >= limit:
        return min(max(now, start), end)
    elapsed, whole = _spans(start, now, end)
    if used == 0 or elapsed == 0:
        return None
    # The moment used * (t - start) / elapsed == limit, rounded up to the microsecond
    # (compared as a count first: far beyond the period it is no date at all).
    reach = -(-limit * elapsed // used)
    return start + _US * reach if reach < whole else None
