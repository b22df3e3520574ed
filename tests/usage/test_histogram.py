"""Latency buckets and percentile estimates."""

from __future__ import annotations

import pytest

from aihub_billing.usage import histogram


@pytest.mark.parametrize(
    ("latency", "bucket"), [(0, 0), (5, 0), (6, 1), (10, 1), (60000, 18), (60001, 19)]
)
def test_bucket_of(latency: int, bucket: int) -> None:
    assert histogram.bucket_of(latency) == bucket


def test_percentiles_interpolate_inside_the_bucket() -> None:
    hist = histogram.empty()
    hist[histogram.bucket_of(60)] = 100  # (50, 75]
    assert histogram.percentile(hist, 0.5) == 62.5
    assert histogram.percentile(hist, 1.0) == 75.0
    hist[histogram.bucket_of(100_000)] = 1  # overflow bucket answers its lower bound
    assert histogram.percentile(hist, 1.0) == 60000.0
    assert histogram.percentile(histogram.empty(), 0.5) is None


def test_merge_adds_bucket_by_bucket() -> None:
    a, b = histogram.empty(), histogram.empty()
    a[0], b[0], b[3] = 1, 2, 5
    assert histogram.merge(a, b)[:4] == [3, 0, 0, 5]
