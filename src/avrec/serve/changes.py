"""Which users' stored events changed: the pool cache's version of a user without a query per user.

The pool cache (:mod:`avrec.serve.pools`) keys a user's candidates by the id of their newest stored
event, so a like or a skip (in this process or in another one sharing the store) gives them a new
entry on their very next request. Reading that id with one indexed query per request cost about a
tenth of a cached ``/recommend``. :class:`ChangeWatermark` keeps it per user instead, and per request
only asks the store for its newest event id (``MAX(id)``, one B-tree seek, which impressions do not
move): when it grew, one query fetches the users of the new events and only their versions change.
A user seen for the first time costs one indexed query, once.

Why not SQLite's ``PRAGMA data_version``: every answered list commits an impression to the same
database, so under load it changes on every group commit and would say "changed" nearly always.

Correct because event ids become visible in increasing order (SQLite serialises writers; the
PostgreSQL store takes one advisory lock per write transaction): after reading ``MAX(id) = m`` every
event with an id up to ``m`` is visible, so the delta query misses none.

One check serves every request that arrived before it started (``arrived``, the request's
``time.perf_counter()`` at the outermost middleware): a write acknowledged before such a request was
sent committed before the check began, so the check saw it. On the event loop, :meth:`settle` makes the
requests of one loop turn wait for one check scheduled after all of them arrived: concurrent requests
share one query.
"""

from __future__ import annotations

import asyncio
import threading
import time

from avrec.serve.store import EventStore

#: users whose version is kept; past it the map starts again (each user is then looked up once more)
DEFAULT_CAPACITY = 200_000
NEWEST = "SELECT COALESCE(MAX(id), 0) FROM events"
SINCE = "SELECT id, user_id FROM events WHERE id > ? AND id <= ? ORDER BY id"
USER_LAST = "SELECT COALESCE(MAX(id), 0) FROM events WHERE user_id = ? AND id <= ?"


class ChangeWatermark:
    """Per-user versions (the newest stored event id of the user, 0 without any) of one store."""

    def __init__(self, store: EventStore, capacity: int = DEFAULT_CAPACITY) -> None:
        self.store = store
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._newest = int(store.query(NEWEST)[0][0])  # every event up to here is in _versions or unread
        self._checked_at = time.perf_counter()
        self._next: asyncio.Future | None = None  # the check scheduled on the event loop, not yet run
        #: store round trips: newest-id checks, delta reads, first lookups of a user (for /health, tests)
        self.checks = self.deltas = self.lookups = self.shared = 0

    def refresh(self) -> None:
        """Read the store's newest event id; when it grew, bump the version of each user in the new events."""
        started = time.perf_counter()
        with self._lock:
            if self._checked_at >= started:  # another thread's check began after this call: it is enough
                self.shared += 1
                return
            self.checks += 1
            newest = int(self.store.query(NEWEST)[0][0])
            if newest > self._newest:
                self.deltas += 1
                rows = self.store.query(SINCE, (self._newest, newest))
                if len(self._versions) + len(rows) > self.capacity:
                    self._versions.clear()  # looked up again on demand, bounded by _newest: still exact
                for event_id, user_id in rows:
                    self._versions[str(user_id)] = int(event_id)
                self._newest = newest
            self._checked_at = started

    async def settle(self, arrived: float) -> None:
        """Return once a check that began after ``arrived`` is done. The first request of a loop turn
        schedules one check behind the requests already ready to run; they all wait for it, so it began
        after every one of them arrived."""
        if arrived < self._checked_at:
            self.shared += 1
            return
        future = self._next
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._next = loop.create_future()
            loop.call_soon(self._scheduled_check)
        else:
            self.shared += 1
        await asyncio.shield(future)  # one request going away does not cancel the others' check

    def _scheduled_check(self) -> None:
        future, self._next = self._next, None
        if future is None:
            return
        try:
            self.refresh()
        except Exception as e:  # noqa: BLE001 - every waiting request gets the store's error
            future.set_exception(e)
            if not future.cancelled():
                future.exception()  # retrieved here too: no "never retrieved" warning when all went away
            return
        future.set_result(None)

    def version(self, user_id: str, arrived: float | None = None) -> int:
        """The newest stored event id of ``user_id`` as of a check that began after ``arrived`` (None:
        check now)."""
        if arrived is None or arrived >= self._checked_at:
            self.refresh()
        else:
            self.shared += 1
        uid = str(user_id)
        v = self._versions.get(uid)
        if v is not None:
            return v
        with self._lock:
            v = self._versions.get(uid)
            if v is None:  # events up to _newest; later ones arrive through the delta of a later check
                self.lookups += 1
                v = int(self.store.query(USER_LAST, (uid, self._newest))[0][0])
                if len(self._versions) >= self.capacity:
                    self._versions.clear()
                self._versions[uid] = v
            return v

    def describe(self) -> dict[str, int]:
        """Users kept and the store round trips so far."""
        return {"users": len(self._versions), "newest_event": self._newest, "checks": self.checks,
                "deltas": self.deltas, "lookups": self.lookups, "shared_checks": self.shared}
