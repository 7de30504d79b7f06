"""Per-client rate limits: one token bucket per API key (or per client address without a key).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; each request takes one.
An empty bucket answers 429 with ``Retry-After`` (whole seconds until a token is back). The check is a
dict lookup and a few float operations under the event loop (no lock: the middleware runs on one loop
thread), so it costs nothing measurable next to a request.
"""

from __future__ import annotations

import asyncio
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


class Deadlines:
    """Request timeouts without a timer per request: requests register their task and deadline (a dict
    insert), and one watcher task per event loop, awake only while requests run, cancels the tasks that
    are past their deadline, checking ``period`` times per timeout (at most once a second).

    ``asyncio.timeout()`` per request schedules and cancels a timer handle each time (measured in
    benchmarks/guard_overhead.py); this costs a dict insert and delete.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self.period = min(1.0, max(0.01, self.timeout / 4))
        self.running: dict[asyncio.Task, float] = {}
        self.expired: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> asyncio.Task | None:
        """Register the current request's task; None outside a task (then no deadline applies)."""
        task = asyncio.current_task()
        if task is None:
            return None
        loop = task.get_loop()
        self.running[task] = loop.time() + self.timeout
        if self._watcher is None or self._watcher.done() or self._loop is not loop:
            self._loop = loop
            self._watcher = loop.create_task(self._watch())
        return task

    def leave(self, task: asyncio.Task | None) -> bool:
        """Unregister ``task``; True when the watcher cancelled it for its deadline."""
        if task is None:
            return False
        self.running.pop(task, None)
        if task in self.expired:
            self.expired.discard(task)
            return True
        return False

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.period)
            mine = {t: d for t, d in self.running.items() if t.get_loop() is loop}
            if not mine:
                return
            now = loop.time()
            for task, deadline in mine.items():
                if deadline <= now and task not in self.expired and not task.done():
                    self.expired.add(task)
                    task.cancel()
