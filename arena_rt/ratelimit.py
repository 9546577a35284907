"""Token buckets: per connection (socket messages) and per client address (HTTP)."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate_per_s: float, capacity: float) -> None:
        self._rate = rate_per_s
        self._capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class KeyedLimiter:
    """One bucket per key (client address), the least recently seen evicted past ``max_keys``.

    Per process: behind a load balancer each node enforces its own share.
    """

    def __init__(self, per_minute: int, *, burst: int | None = None, max_keys: int = 50_000):
        self._rate = per_minute / 60.0
        self._burst = float(burst if burst is not None else per_minute)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()
