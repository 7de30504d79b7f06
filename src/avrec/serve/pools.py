"""Per-user candidate pools of ``/recommend``, computed once and reused until the user's feedback changes.

A GET /recommend for a user costs, before the policy picks a slate, the model's scores over the whole
catalogue (the hybrid standardises and fuses several components' rows), the top of them, and the policy
features of those candidates. All of it is a function of the served model, the user's stored events and
the request's content rules, so a :class:`PoolCache` keeps it per ``(user, last event id, rule profiles,
width)``: a like or a skip gives the user a new last event id, and with it a new entry, on the very next
request (in every worker process and replica: :class:`~avrec.serve.changes.ChangeWatermark` reads the
ids from the shared store). The cache lives on a :class:`~avrec.serve.state.ModelState`, so a reload
starts empty, and is cleared when items are added. Bounded (least recently used out), so memory stays
flat under any number of users. The pools are built by :func:`avrec.serve.candidates.build_pool`. A
pool also keeps its finished answers (:class:`Rendered`): a list served the same way every time is
answered again by joining bytes around a new impression id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

#: entries kept per model state (a pool of 50 candidates with features is about 15 kB)
DEFAULT_CAPACITY = 4096
#: finished answers kept per pool
RESPONSES_PER_POOL = 16


@dataclass
class Pool:
    """One user's candidates: ``items`` (``{item_id, score, title}``, best first), the history the
    features and explanations use, whether it is the popular fallback, and, once built, the policy's
    features of ``items``, the impression log's ``candidates`` record (JSON text) and greedy slates."""

    items: list[dict[str, Any]]
    history: list[str]
    fallback: bool
    features: np.ndarray | None = None
    candidates_json: str | None = None
    #: greedy slates without ties, per list length (:meth:`avrec.serve.exploration.Explorer.present`)
    slates: dict[int, Any] = field(default_factory=dict)
    #: finished answers per ``(user, k, explain, details)`` (:class:`Rendered`; a few per pool)
    responses: dict[Hashable, Rendered] = field(default_factory=dict)

    def keep(self, key: Hashable, rendered: Rendered) -> None:
        """Keep one finished answer (at most :data:`RESPONSES_PER_POOL`: the popular pool is shared by
        every unknown user, whose answers differ in their ``user_id``)."""
        if len(self.responses) >= RESPONSES_PER_POOL:
            self.responses.clear()
        self.responses[key] = rendered


@dataclass(frozen=True)
class Rendered:
    """A list served the same way every time (a greedy slate without ties): the response body around
    its impression id, and the impression row without id and time (None when impressions are not
    logged). Serving it again logs one more impression (a new id, committed before the answer) and joins
    ``head + id + tail``: nothing is ranked, chosen or serialised again. With ``user_tail`` the answer is
    every unknown user's (the popular list) and the user id is joined in too: ``… + "user_id": id +
    user_tail``."""

    head: bytes
    tail: bytes | None
    row: tuple | None
    user_tail: bytes | None = None

    def body(self, impression_id: str | None, user_id: str | None = None) -> bytes:
        out = self.head if self.tail is None or impression_id is None else (
            self.head + impression_id.encode() + self.tail)
        if self.user_tail is None:
            return out
        return out + USER_KEY + orjson.dumps(user_id) + self.user_tail

    @staticmethod
    def split(body: bytes, impression_id: str | None, row: tuple | None,
              user_id: str | None = None) -> Rendered | None:
        """The template of ``body`` (serialised with ``impression_id`` in it once, and with ``user_id``
        once after it when given), None when either is not found exactly once (then it is not kept)."""
        user_tail = None
        if user_id is not None:
            parts = body.split(USER_KEY + orjson.dumps(user_id))
            if len(parts) != 2:
                return None
            body, user_tail = parts
        if impression_id is None:
            return Rendered(body, None, None, user_tail) if row is None else None
        parts = body.split(impression_id.encode())
        return Rendered(parts[0], parts[1], row, user_tail) if len(parts) == 2 and row is not None else None


#: how the user id of an answer is serialised (orjson: no spaces)
USER_KEY = b'"user_id":'


class PoolCache:
    """A thread-safe LRU of :class:`Pool` entries (or of :class:`Rendered` answers)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = int(capacity)
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, count: bool = True) -> Any:
        """The entry of ``key`` (None when absent; ``count``: a miss is counted)."""
        with self._lock:
            pool = self._entries.get(key)
            if pool is None:
                self.misses += count
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return pool

    def peek(self, key: Hashable) -> Any:
        """The entry of ``key`` or None, without counting a hit or a miss or refreshing its recency."""
        with self._lock:
            return self._entries.get(key)

    def put_if_absent(self, key: Hashable, pool: Any) -> bool:
        """Add ``pool`` unless ``key`` has an entry already (one a request made, with its kept answers, is
        never replaced); whether it was added. A full cache takes it only in place of the oldest entry."""
        if self.capacity <= 0:
            return False
        with self._lock:
            if key in self._entries:
                return False
            self._entries[key] = pool
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return True

    def put(self, key: Hashable, pool: Any) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[key] = pool
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> dict[str, int]:
        """Entries, capacity, hits and misses (for ``/health``)."""
        return {"entries": len(self._entries), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
