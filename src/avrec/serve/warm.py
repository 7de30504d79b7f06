"""Pools built before their first request: the model's users scored in batches when a model is loaded.

Without it a user's first ``GET /recommend`` after a start, a reload or an item addition pays for the
model's scores over the whole catalogue, the top of them and the policy features (about 10 ms of the
hybrid on ml-latest-small, against microseconds for a kept answer), so a server answers slowly until
every user has asked once. :class:`PoolWarmer` builds those pools in a background thread, in batches of
users (one matrix product per batch instead of one per user), most active users first, up to the pool
cache's capacity; it only fills entries no request has made yet. Users with stored events are left to
the request path (their pool depends on the events), so a warmed pool is exactly the one the request
path would build (:func:`avrec.serve.candidates.known_pools` makes both). ``/health`` reports progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from avrec.serve.candidates import known_pools
from avrec.serve.changes import ChangeWatermark
from avrec.serve.exploration import Explorer
from avrec.serve.rerank import ServeReranker
from avrec.serve.rules import RuleView
from avrec.serve.state import ModelState

log = logging.getLogger("avrec.serve")

#: the list length whose pools are built ahead (the API's default ``k``)
DEFAULT_K = 10


class PoolWarmer:
    """Builds the pools of a state's most active users in the background; ``describe()`` for /health."""

    def __init__(self, state: ModelState, changes: ChangeWatermark, explorer: Explorer, reranker: ServeReranker,
                 view_of: Callable[[ModelState, str], RuleView], is_current: Callable[[ModelState], bool],
                 limit: int, batch: int = 256) -> None:
        self.state, self.changes, self.explorer, self.reranker = state, changes, explorer, reranker
        self.view_of, self.is_current = view_of, is_current
        self.limit, self.batch = int(limit), max(1, int(batch))
        self.built = 0
        self.skipped = 0
        self.seconds = 0.0
        self.done = threading.Event()
        self.error: str | None = None

    def start(self) -> PoolWarmer:
        threading.Thread(target=self.run, name="avrec-pool-warmer", daemon=True).start()
        return self

    def users(self) -> list[int]:
        """The model's users to warm, most training interactions first, at most ``limit`` and the cache's
        capacity."""
        seen = self.state.model.seen
        n = min(self.limit, self.state.pools.capacity)
        if seen is None or n <= 0 or seen.shape[0] == 0:
            return []
        activity = np.diff(seen.indptr)
        order = np.argsort(-activity, kind="stable")
        return [int(u) for u in order[:n]]

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - warming is an optimisation: requests build their own pools
            self.error = f"{type(e).__name__}: {e}"
            log.warning("pool warm-up stopped: %s", self.error)
        finally:
            self.seconds = time.perf_counter() - t0
            self.done.set()

    def _run(self) -> None:
        state, model = self.state, self.state.model
        width = self.explorer.width(DEFAULT_K)
        user_ids = list(model.user_index)
        groups: dict[tuple, tuple[RuleView, list[tuple[tuple, int]]]] = {}
        for u in self.users():
            if not self.is_current(state):
                return
            uid = str(user_ids[u])
            last = self.changes.version(uid)
            if last:  # stored events: the pool depends on them, the request path builds it
                self.skipped += 1
                continue
            view = self.view_of(state, uid)
            key = (uid, last, view.names, width)
            groups.setdefault(view.names, (view, []))[1].append((key, u))
        for view, members in groups.values():
            for start in range(0, len(members), self.batch):
                if not self.is_current(state):
                    return
                with state.lock.read():  # an item addition waits for the batch, then clears the pools
                    chunk = [(key, u) for key, u in members[start:start + self.batch]
                             if state.pools.peek(key) is None]
                    if not chunk:
                        continue
                    pools = known_pools(state, [u for _, u in chunk], self.reranker, view, width)
                    for (key, _), pool in zip(chunk, pools):
                        self.explorer.prepare(state, pool)
                        self.built += state.pools.put_if_absent(key, pool)

    def describe(self) -> dict[str, Any]:
        """Pools built so far, users left to the request path, seconds and whether it has finished."""
        return {"built": self.built, "skipped_with_events": self.skipped, "done": self.done.is_set(),
                "seconds": round(self.seconds, 2), "error": self.error}
