"""Fixed latency buckets kept in the daily rollups, and percentiles estimated from them (pure)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Upper bounds (inclusive, ms) of the buckets; one more bucket holds everything above the last.
BOUNDS_MS: tuple[int, ...] = (
    5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000,
)  # fmt: skip
SIZE = len(BOUNDS_MS) + 1


def empty() -> list[int]:
    return [0] * SIZE


def bucket_of(latency_ms: int) -> int:
    """Index of the bucket a latency falls in (a bound belongs to its own bucket)."""
    return bisect_left(BOUNDS_MS, latency_ms)


def merge(into: list[int], other: Sequence[int]) -> list[int]:
    """Adds `other` to `into` in place (both SIZE long) and returns it."""
    for i, count in enumerate(other):
        into[i] += count
    return into


def percentile(hist: Sequence[int], q: float) -> float | None:
    """Estimated q-quantile (0 < q <= 1) in ms: linear inside the bucket holding the rank.

    The overflow bucket has no upper bound, so a rank there answers its lower bound. Latency
    is a measurement, not money: floats are fine here.
    """
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            lower = 0 if i == 0 else BOUNDS_MS[i - 1]
            if i == len(BOUNDS_MS):
                return float(lower)
            upper = BOUNDS_MS[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(BOUNDS_MS[-1])  # pragma: no cover - rank never exceeds the total
