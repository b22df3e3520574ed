"""Injectable clocks: the only module allowed to read the wall clock.

Everything else takes a Clock (or a datetime), so tests and the test clock can move time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

__all__ = [
    "EARLIEST",
    "LATEST",
    "Clock",
    "FrozenClock",
    "IsoDatetime",
    "SystemClock",
    "TimeInRange",
    "ensure_utc",
    "from_unix",
    "monotonic",
]


def ensure_utc(value: datetime) -> datetime:
    """Return `value` converted to UTC; naive datetimes are refused (they are bugs, not local)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime refused: {value.isoformat()} (use aware UTC datetimes)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time
        raise ValueError(f"out of range in UTC: {value.isoformat()}") from None


def from_unix(value: object) -> datetime | None:
    """An integer Unix time as an aware UTC datetime; None for anything else, or one no
    datetime can hold (a provider's payload may say anything)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _iso_only(value: Any) -> Any:
    # Pydantic reads a number (or a numeric string) as Unix time: `?period_to=0.5` would
    # silently mean 1970. Timestamps come as ISO 8601 text.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
    elif not isinstance(value, int | float):
        return value
    raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(ensure_utc)]
"""A datetime given as ISO 8601 text with an offset only (request bodies and query
parameters), in UTC."""

# Where a time the system keeps may stand: ids carry their time from the Unix epoch on, and
# periods from it (up to a plan's longest interval, 36,500 months) must end before year 10,000.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
TimeInRange = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
"""An aware datetime in [EARLIEST, LATEST): checked in pydantic-core, no Python call."""


class Clock(Protocol):
    """Source of the current time."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to, and only forward."""

    def __init__(self, at: datetime) -> None:
        self._now = ensure_utc(at)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by `delta` and/or timedelta keywords (days=3); return the new time."""
        step = (delta if delta is not None else timedelta()) + timedelta(**kwargs)
        if step < timedelta():
            raise ValueError(f"cannot advance by a negative delta ({step}): time does not go back")
        self._now = self._now + step
        return self._now

    def set(self, at: datetime) -> None:
        """Jump to `at`, which must not be before the current time."""
        target = ensure_utc(at)
        if target < self._now:
            raise ValueError(
                f"cannot set the clock back from {self._now.isoformat()} to {target.isoformat()}"
            )
        self._now = target

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()})"


def monotonic() -> float:
    """Seconds from a monotonic clock, for measuring durations (never for timestamps)."""
    return time.monotonic()
