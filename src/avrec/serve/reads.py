"""The read-only endpoints of :class:`~avrec.serve.service.RecommenderService` that need no model
scoring: one item, its summary, a user's history, the user list and ``/health`` (a mixin, so the
service module stays small)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from avrec.serve.changes import ChangeWatermark
from avrec.serve.config import ServeConfig
from avrec.serve.errors import NotFound
from avrec.serve.exploration import Explorer
from avrec.serve.rerank import ServeReranker
from avrec.serve.rules import RuleView
from avrec.serve.state import ModelState
from avrec.serve.store import EventStore
from avrec.serve.text import item_summary
from avrec.serve.warm import PoolWarmer


class ServiceReads:
    """Catalogue, history and health reads (the attributes are the service's)."""

    state: ModelState
    store: EventStore
    config: ServeConfig
    explorer: Explorer
    reranker: ServeReranker
    changes: ChangeWatermark
    rules: Any
    reloads: int
    reload_errors: int
    last_reload_error: str | None
    warmer: PoolWarmer | None

    def _view(self, state: ModelState, profile: str | None, user_id: str | None) -> RuleView:
        raise NotImplementedError

    def item(self, item_id: str, profile: str | None = None) -> dict[str, Any]:
        state = self.state
        with state.lock.read():
            row = state.item_row(item_id)
            self._view(state, profile, None).check_row(row, item_id)
            return state.item_record(row)

    def summary(self, item_id: str, profile: str | None = None) -> dict[str, Any]:
        """An item's extractive summary (disallowed terms masked); a 404 for an item the rules block."""
        state = self.state
        with state.lock.read():
            return item_summary(state, state.item_row(item_id), self._view(state, profile, None))

    def history(self, user_id: str, limit: int = 100, profile: str | None = None) -> dict[str, Any]:
        """Feedback events (newest first) followed by the training history the model was fitted on; items
        the content rules block are left out."""
        state = self.state
        with state.lock.read():
            view = self._view(state, profile, user_id)
            model = state.model
            u = model.user_index.get(str(user_id))
            events = self.store.events(user_id=user_id)
            if u is None and not events and not self.store.has_user(user_id):
                raise NotFound(f"unknown user_id {str(user_id)!r}")
            out: list[dict[str, Any]] = []
            for e in reversed(events):
                row = state.catalog_index.get(e.item_id)
                out.append({"item_id": e.item_id, "title": state.title(row) if row is not None else e.item_id,
                            "source": "feedback", "event": e.event, "value": e.value, "ts": e.ts})
            n_train = 0
            if u is not None:
                assert model.seen is not None and model.popularity is not None  # a served model is fitted
                row = model.seen[u]
                n_train = len(row.indices)
                for i in row.indices[np.argsort(-model.popularity[row.indices], kind="stable")]:
                    out.append({"item_id": state.catalog_ids[i], "title": state.title(int(i)), "source": "train",
                                "event": None, "value": None, "ts": None})
            if view.active:
                out = [it for it in out if view.allows_row(state.catalog_index.get(it["item_id"], -1))]
            return {"user_id": str(user_id), "known": u is not None, "n_train": n_train, "n_feedback": len(events),
                    "items": out[:limit]}

    def users(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        model = self.state.model
        stored = [u for u in self.store.users() if u not in model.user_index]
        assert model.user_ids is not None  # a served model is fitted
        every = [str(u) for u in model.user_ids] + stored
        return {"total": len(every), "users": every[offset: offset + limit]}

    def health(self) -> dict[str, Any]:
        state = self.state
        user_ids = state.model.user_ids
        assert user_ids is not None  # a served model is fitted
        return {
            "status": "ok",
            "model": state.model.name,
            "model_dir": str(state.model_dir) if state.model_dir else None,
            "n_items": len(state.catalog),
            "n_users": len(user_ids),
            "events": self.store.count_events(),
            "impressions": self.explorer.impressions.count(),
            "impression_commits": self.explorer.impressions.commit_stats(),
            "policy": self.explorer.describe(),
            "loaded_at": state.loaded_at,
            "reloads": self.reloads, "pid": os.getpid(), "pool_cache": state.pools.describe(),
            "pool_warmup": self.warmer.describe() if self.warmer is not None else None,
            "changes": self.changes.describe(),
            # why the last reload failed (a corrupt or half-written folder); None once a reload succeeds
            "reload_error": self.last_reload_error, "reload_errors": self.reload_errors,
            "search": "ready" if state.search is not None else ("building" if not state.search_ready.is_set()
                                                                   else "unavailable"),
            "query_cache": state.search.queries.describe() if state.search is not None else None,
            "explanations": "avrec.explain" if state.explainer is not None else "unavailable",
            "profiles": sorted(self.rules.profiles), "rerank": self.reranker.describe(),
            "writes": "api-key" if self.config.effective_api_key() else (
                "open (--insecure-dev)" if self.config.insecure_dev else "disabled (no API key configured)"),
        }
