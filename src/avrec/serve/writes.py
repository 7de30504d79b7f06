"""The writes of :class:`~avrec.serve.service.RecommenderService`: feedback and added items (a mixin, so
the service module stays small; the attributes are the service's)."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from avrec.serve.errors import Conflict, NotFound, ServiceError
from avrec.serve.exploration import Explorer
from avrec.serve.search import SearchIndexer
from avrec.serve.state import ModelState
from avrec.serve.store import EventStore


class ServiceWrites:
    """Feedback and catalogue additions."""

    state: ModelState
    store: EventStore
    explorer: Explorer
    indexer: SearchIndexer
    _mutation: threading.RLock

    def _warm(self, state: ModelState) -> None:
        raise NotImplementedError

    def feedback(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Store events durably (after checking their items exist) and return their ids."""
        state = self.state
        for n, e in enumerate(events):
            if str(e["item_id"]) not in state.catalog_index:
                raise NotFound(f"events[{n}].item_id: unknown item_id {str(e['item_id'])!r}")
        ids = self.explorer.record_feedback(events, self.store.add_events)  # joins impressions, teaches the policy
        return {"stored": len(ids), "ids": ids}

    def add_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Add items to the catalogue now: stored durably, indexed for search, recommendable when the model can.

        All or nothing: a duplicate id (within the batch or against the catalogue) is a 409 before anything
        is written, and a batch that fails while being added is taken out of the store again, so the store
        holds exactly the items that were acknowledged. A model that cannot add items (``capabilities``)
        keeps them listed and searchable, not recommended, and gets them again on every start.
        """
        frame = pd.DataFrame(items).fillna("").astype(str)
        ids = frame["item_id"]
        bad = [i for i in ids if not i.strip() or i != i.strip()]
        if bad:  # the API's id pattern refuses these; the model would strip them into other ids
            raise ServiceError(f"items: item_id {bad[0]!r} is empty or starts or ends with whitespace")
        twice = ids[ids.duplicated()]
        if len(twice):
            raise Conflict(f"items: item_id {twice.iloc[0]!r} appears twice in the batch; nothing was added")
        with self._mutation:
            state = self.state
            clash = [i for i in ids if i in state.catalog_index]
            if clash:
                raise Conflict(f"item_id {clash[0]!r} is already in the catalogue; nothing was added")
            self.store.add_items(frame.to_dict("records"))
            try:
                self._apply_items(state, frame)
            except BaseException:
                self.store.remove_items(ids.tolist())
                raise
            self._warm(state)  # the addition emptied the pool cache
        return {"added": len(frame), "recommendable": state.can_add, "n_items": len(state.catalog)}

    def _apply_items(self, state: ModelState, frame: pd.DataFrame) -> None:
        search = state.search  # encoder vectors are computed before the write lock, which blocks reads
        early = self.indexer.encode_items(frame) if search is not None and search.source == "encoder" else None
        state.add_items(frame, lambda s: early if early is not None and s is search
                        else self.indexer.item_vectors(s, state.model, frame))
