"""Per-user candidate pools of ``/recommend``, computed once and reused until the user's feedback changes.

A GET /recommend for a user costs, before the policy picks a slate, the model's scores over the whole
catalogue (the hybrid standardises and fuses several components' rows), the top of them, and the policy
features of those candidates. All of it is a function of the served model, the user's stored events and
the request's content rules, so a :class:`PoolCache` keeps it per ``(user, last event id, rule profiles,
width)``: a like or a skip gives the user a new last event id, and with it a new entry, on the very next
request (in every worker process, since each reads the id from the shared store). The cache lives on a
:class:`~avrec.serve.state.ModelState`, so a reload starts empty, and is cleared when items are added.
Bounded (least recently used out), so memory stays flat under any number of users.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the state module holds a PoolCache, so it cannot be imported here
    from avrec.serve.rerank import ServeReranker
    from avrec.serve.rules import RuleView
    from avrec.serve.state import ModelState
    from avrec.serve.updates import UserProfile

#: the newest stored event of one user (0 without any): the pool cache's version of that user
LAST_EVENT = "SELECT COALESCE(MAX(id), 0) FROM events WHERE user_id = ?"
#: entries kept per model state (a pool of 50 candidates with features is about 15 kB)
DEFAULT_CAPACITY = 4096


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


class PoolCache:
    """A thread-safe LRU of :class:`Pool` entries."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = int(capacity)
        self._entries: OrderedDict[Hashable, Pool] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Pool | None:
        with self._lock:
            pool = self._entries.get(key)
            if pool is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return pool

    def put(self, key: Hashable, pool: Pool) -> None:
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


def fold_in(state: ModelState, history: list[str], k: int,
            candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k indices for one user given as item ids (the history's items excluded)."""
    return state.model.topk_histories(state.model.history_matrix([history]), k, candidates=candidates)


def build_pool(state: ModelState, user_id: str, p: UserProfile, reranker: ServeReranker, view: RuleView,
               width: int) -> Pool:
    """The ``width`` best allowed candidates for ``user_id`` (profile ``p``): the model's list for a known
    user, folded in with positive feedback, or the popular list; negative feedback and the history left out."""
    cand = view.model_candidates()
    model, n = state.model, width + len(p.negative)
    if p.has_feedback:
        idx, scores = fold_in(state, p.history, reranker.width(n), cand)
        idx, scores = reranker.apply(model, idx, scores, n, lambda: model.history_matrix([p.history]))
    elif p.known:
        u = model.user_index[user_id]
        seen = model.seen
        assert seen is not None  # a served model is fitted
        idx, scores = model.topk_indices(np.array([u]), reranker.width(n), exclude=seen[[u]], candidates=cand)
        idx, scores = reranker.apply(model, idx, scores, n, lambda: seen[[u]])
    else:
        idx, scores = model.popular_topk(1, n, candidates=cand)
    items = state.scored_items(state.ids_of(idx)[0], scores[0], width, exclude=p.negative | set(p.history))
    return Pool(items, p.history, not p.known and not p.has_feedback)
