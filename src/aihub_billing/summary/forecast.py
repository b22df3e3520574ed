"""Run-rate forecasts to the end of a period (pure): counts, exact amounts, and when a
limit runs out. Time is counted in whole microseconds, so nothing goes through a float."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, localcontext

_US = timedelta(microseconds=1)
# The rate is taken over at least this much of the period (or all of a shorter one): 20
# calls in the first minute are that day's, not 29,000 a day.
MIN_RATE_SPAN = timedelta(days=1)


def _spans(start: datetime, now: datetime, end: datetime) -> tuple[int, int]:
    """(the span the rate is taken over, the whole period) in microseconds: the time
    elapsed, `now` held inside [start, end], but not less than MIN_RATE_SPAN."""
    if not start < end:
        raise ValueError("a period ends after it starts")
    now = min(max(now, start), end)
    whole = (end - start) // _US
    return max((now - start) // _US, min(MIN_RATE_SPAN // _US, whole)), whole


def projected_count(used: int, start: datetime, now: datetime, end: datetime) -> int:
    """`used` so far, carried on at the same rate to `end` (rounded down)."""
    span, whole = _spans(start, now, end)
    return used * whole // span


def projected_amount(amount: Decimal, start: datetime, now: datetime, end: datetime) -> Decimal:
    """An unrounded amount carried on at the same rate to `end` (exact up to 50 digits;
    the caller rounds once, to minor units)."""
    span, whole = _spans(start, now, end)
    with localcontext() as ctx:
        ctx.prec = 50
        return amount * whole / span


def runs_out_at(
    used: int, limit: int | None, start: datetime, now: datetime, end: datetime
) -> datetime | None:
    """When `used` reaches `limit` at the rate so far, if before `end` (None: no limit, no
    use yet, or not in this period). Already at or over the limit: `now`."""
    if limit is None:
        return None
    if used >= limit:
        return min(max(now, start), end)
    span, whole = _spans(start, now, end)
    if used == 0:
        return None
    # The moment used * (t - start) / span == limit, rounded up to the microsecond (after
    # `now`, since used < limit; compared as a count first: far beyond the period it is no
    # date at all).
    reach = -(-limit * span // used)
    return start + _US * reach if reach < whole else None
