"""A small HDR-style histogram: log-linear buckets, mergeable, JSON-friendly.

Values are non-negative integers (the replay tool records microseconds). Values below
``2 ** SUB_BITS`` have a bucket each; above that every power of two is split into
``2 ** (SUB_BITS - 1)`` equal buckets, so any recorded value is reported within
``1 / 2 ** (SUB_BITS - 1)`` (about 1.6 %) of itself, at any magnitude, like HdrHistogram
with two significant digits. Buckets are kept sparse (a dict), so a histogram costs a few
hundred entries at most and histograms from several processes merge by adding counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

SUB_BITS = 7
_SUB = 1 << SUB_BITS  # 128 exact buckets: 0..127
_HALF = _SUB >> 1  # 64 buckets per power of two above that


def bucket_index(value: int) -> int:
    """The bucket holding ``value`` (negative values are clamped to 0)."""
    if value < _SUB:
        return max(value, 0)
    shift = value.bit_length() - SUB_BITS  # >= 1; value >> shift is in [64, 128)
    return _SUB + (shift - 1) * _HALF + ((value >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value that fall into bucket ``index`` (inclusive)."""
    if index < _SUB:
        return index, index
    shift = (index - _SUB) // _HALF + 1
    mantissa = (index - _SUB) % _HALF + _HALF
    low = mantissa << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of values per log-linear bucket, plus exact count, sum, min and max."""

    __slots__ = ("buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int, times: int = 1) -> None:
        value = max(int(value), 0)
        index = bucket_index(value)
        self.buckets[index] = self.buckets.get(index, 0) + times
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += times
        self.total += value * times

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0-100): the highest value of the bucket holding the
        rank ``ceil(p/100 x count)``, capped by the exact maximum (HdrHistogram's convention:
        never under-reports). 0 when empty."""
        if self.count == 0:
            return 0
        if p <= 0:
            return self.min
        rank = max(1, math.ceil(min(p, 100.0) / 100.0 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return max(min(bucket_bounds(index)[1], self.max), self.min)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self, scale: float = 1.0) -> dict[str, float | int]:
        """count, min, mean, p50, p90, p99, p99.9, max; values divided by ``scale``."""

        def sc(v: float) -> float:
            return round(v / scale, 3)

        return {
            "count": self.count,
            "min": sc(self.min),
            "mean": sc(self.mean),
            "p50": sc(self.percentile(50)),
            "p90": sc(self.percentile(90)),
            "p99": sc(self.percentile(99)),
            "p999": sc(self.percentile(99.9)),
            "max": sc(self.max),
        }

    def bins(self) -> Iterator[tuple[int, int, int]]:
        """(low, high, count) for every non-empty bucket, in value order."""
        for index in sorted(self.buckets):
            low, high = bucket_bounds(index)
            yield low, high, self.buckets[index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subBucketBits": SUB_BITS,
            "count": self.count,
            "sum": self.total,
            "min": self.min,
            "max": self.max,
            "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        if data.get("subBucketBits", SUB_BITS) != SUB_BITS:
            raise ValueError("histogram was written with a different bucket layout")
        hist = cls()
        hist.buckets = {int(k): int(v) for k, v in data.get("buckets", {}).items()}
        hist.count = int(data.get("count", sum(hist.buckets.values())))
        hist.total = int(data.get("sum", 0))
        hist.min = int(data.get("min", 0))
        hist.max = int(data.get("max", 0))
        return hist

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        hist = cls()
        for v in values:
            hist.record(v)
        return hist

    def __len__(self) -> int:
        return self.count
