"""Per-client rate limits: one token bucket per API key (or per client address without a key).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; each request takes one.
An empty bucket answers 429 with ``Retry-After`` (whole seconds until a token is back). The check is a
dict lookup and a few float operations under the event loop (no lock: the middleware runs on one loop
thread), so it costs nothing measurable next to a request.
"""

from __future__ import annotations

import math
import time

#: buckets kept at most; beyond that the full (idle) ones are dropped, so many addresses cannot grow memory
MAX_BUCKETS = 50_000


class RateLimiter:
    """Token buckets by client id; ``rate`` requests a second with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate < 0:
            raise ValueError("rate must be ≥ 0")
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(1.0, 2 * self.rate)
        self._buckets: dict[str, list[float]] = {}  # client → [tokens, last refill time]

    def take(self, client: str, rate: float | None = None, now: float | None = None) -> float:
        """Take one token for ``client``; 0 when allowed, else the seconds until one is back.

        ``rate`` overrides the default for this client (a key's own ``rate``; 0 means unlimited).
        """
        r = self.rate if rate is None else float(rate)
        if r <= 0:
            return 0.0
        burst = self.burst if rate is None else max(1.0, 2 * r)
        t = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(t)
            bucket = self._buckets[client] = [burst, t]
        tokens = min(burst, bucket[0] + (t - bucket[1]) * r)
        bucket[1] = t
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / r

    def _prune(self, now: float) -> None:
        full = [c for c, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for c in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[c]


def retry_after(wait_s: float) -> str:
    """The ``Retry-After`` value for a wait: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
