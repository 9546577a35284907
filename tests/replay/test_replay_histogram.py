"""The replay tool's HDR-style histogram: bucket layout, percentiles, merging, serialization."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from arena_rt.replay.histogram import Histogram, bucket_bounds, bucket_index

PRECISION = 1 / 64  # 64 sub-buckets per power of two


def exact_percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def test_every_value_falls_inside_its_bucket_and_buckets_are_narrow() -> None:
    samples = [*range(0, 5000), *(int(1.07**k) for k in range(0, 400))]
    for value in samples:
        low, high = bucket_bounds(bucket_index(value))
        assert low <= value <= high
        assert high - low <= max(value * PRECISION, 0)
    # buckets tile the number line: no gap, no overlap
    for index in range(0, 2000):
        assert bucket_bounds(index + 1)[0] == bucket_bounds(index)[1] + 1


def test_small_values_are_exact() -> None:
    hist = Histogram.of([5, 1, 3, 2, 4])
    assert (hist.percentile(0), hist.percentile(20), hist.percentile(50)) == (1, 1, 3)
    assert hist.percentile(100) == 5
    assert hist.count == 5 and hist.min == 1 and hist.max == 5 and hist.mean == 3


def test_percentiles_of_a_latency_like_distribution() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(math.log(8_000), 0.9)) for _ in range(50_000)]
    hist = Histogram.of(values)
    for p in (50, 90, 99, 99.9, 100):
        exact = exact_percentile(values, p)
        got = hist.percentile(p)
        assert exact <= got <= exact * (1 + PRECISION) + 1, (p, exact, got)
    assert hist.percentile(100) == max(values)
    summary = hist.summary(scale=1000)
    assert summary["count"] == 50_000
    assert summary["max"] == round(max(values) / 1000, 3)


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300))
def test_percentile_never_under_reports_and_stays_within_precision(values: list[int]) -> None:
    hist = Histogram.of(values)
    for p in (1, 25, 50, 75, 90, 99, 99.9, 100):
        exact = exact_percentile(values, p)
        got = hist.percentile(p)
        assert exact <= got <= exact * (1 + PRECISION) + 1


@given(
    st.lists(st.integers(min_value=0, max_value=10**7), max_size=200),
    st.lists(st.integers(min_value=0, max_value=10**7), max_size=200),
)
def test_merge_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    merged = Histogram.of(a)
    merged.merge(Histogram.of(b))
    whole = Histogram.of(a + b)
    assert merged.to_dict() == whole.to_dict()
    assert [merged.percentile(p) for p in (50, 99)] == [whole.percentile(p) for p in (50, 99)]


def test_serialization_round_trip_and_empty_histogram() -> None:
    hist = Histogram.of([10, 200, 3_000, 40_000, 40_001])
    again = Histogram.from_dict(hist.to_dict())
    assert again.to_dict() == hist.to_dict()
    assert again.percentile(99) == hist.percentile(99)
    empty = Histogram()
    assert empty.percentile(99) == 0 and empty.summary()["count"] == 0
    empty.merge(Histogram())
    assert Histogram.from_dict(empty.to_dict()).count == 0
