"""The model holder behind the HTTP API: :class:`RecommenderService`, a small facade over the model contract.

It holds the current :class:`~avrec.serve.state.ModelState` and swaps in a new one when the model folder
changes (or on ``reload()``). Feedback lives in the :class:`~avrec.serve.store.EventStore` and is read
per request, so a like or a skip changes that user's very next list: positive events join the user's
history and the model scores it through ``topk_histories`` (fold-in); items with negative feedback are
left out. Explanations come from :class:`avrec.explain.Explainer`, search from :mod:`avrec.serve.search`,
exposure re-ranking from :mod:`avrec.serve.rerank`, content rules from :mod:`avrec.serve.rules`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from avrec.errors import ConfigError
from avrec.eval.topk import topk_from_scores
from avrec.models.base import Recommender
from avrec.serve.candidates import build_pool, fold_in
from avrec.serve.changes import ChangeWatermark
from avrec.serve.config import ServeConfig
from avrec.serve.exploration import Explorer
from avrec.serve.impressions import ImpressionLog
from avrec.serve.modality import ModalityNeighbours
from avrec.serve.pools import Pool, Rendered
from avrec.serve.reads import ServiceReads
from avrec.serve.rerank import ServeReranker
from avrec.serve.rules import RuleView, check_rules, content_rules, rule_view
from avrec.serve.search import SearchIndexer, minmax
from avrec.serve.state import FolderWatcher, ModelState, finite, load_state
from avrec.serve.store import EventStore
from avrec.serve.stores.group_commit import Durable
from avrec.serve.text import explain_item
from avrec.serve.updates import UserProfile, user_profile
from avrec.serve.warm import PoolWarmer
from avrec.serve.writes import ServiceWrites

log = logging.getLogger("avrec.serve")

__all__ = ["RecommenderService"]


class RecommenderService(ServiceReads, ServiceWrites):
    """Everything the HTTP layer calls: recommendations, search, feedback, items and reloads."""

    def __init__(self, model_dir: str | Path | None, store: EventStore, config: ServeConfig | None = None,
                 model: Recommender | None = None) -> None:
        self.config = config or ServeConfig()
        self.store = store
        self.rules = content_rules(self.config)
        self.reranker = ServeReranker(self.config.rerank)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.explorer = Explorer(self.config, store, self.model_dir, model)
        self.changes = ChangeWatermark(store)
        self.indexer = SearchIndexer(self.config)
        self.by_modality = ModalityNeighbours()
        self._mutation = threading.RLock()
        self._watcher: FolderWatcher | None = None
        self.reloads = 0
        self.reload_errors = 0
        self.last_reload_error: str | None = None
        self.warmer: PoolWarmer | None = None
        if model is None:
            if self.model_dir is None:
                raise ConfigError("a model folder or a model is required")
            self.state = self._prepare(load_state(self.model_dir))
        else:
            self.state = self._prepare(ModelState(model, self.model_dir))
        self._warm(self.state)

    # ---- model states: building, reloading, watching ----
    def _prepare(self, state: ModelState) -> ModelState:
        """Replay stored item additions, attach the explainer and start the search index."""
        stored = state.replayable(self.store.items())
        if stored:
            state.add_items(pd.DataFrame(stored).fillna("").astype(str))
        check_rules(self.rules, state)  # a rule naming a column the catalogue lacks fails here, not per request
        self.reranker.check_model(state.model)
        try:
            from avrec.explain import Explainer

            state.explainer = Explainer(state.model, disallowed_terms=self.config.disallowed_terms)
        except Exception as e:  # noqa: BLE001 - explanations are one feature; recommendations still work
            state.explainer_error = f"{type(e).__name__}: {e}"
            log.error("explanations unavailable: %s", state.explainer_error)
        threading.Thread(target=state.warm_similarity, name="avrec-item-vectors", daemon=True).start()
        if self.config.search:
            threading.Thread(target=self.indexer.build, args=(state,), name="avrec-search-index", daemon=True).start()
        else:
            state.search_error = "search is disabled (--no-search)"
            state.search_ready.set()
        return state

    def reload(self) -> dict[str, Any]:
        """Load the model folder again and swap it in; in-flight requests finish on the old model."""
        if self.model_dir is None:
            raise ConfigError("this service was started from an in-memory model; nothing to reload")
        with self._mutation:
            try:
                new = self._prepare(load_state(self.model_dir))
            except Exception as e:
                self.reload_errors += 1
                self.last_reload_error = f"{type(e).__name__}: {e}"
                raise
            old, self.state = self.state, new
            self.reloads += 1
            self.last_reload_error = None
            self._warm(new)
        log.info("model reloaded from %s (%s, %d items)", self.model_dir, new.model.name, new.model.n_items)
        return {"reloaded": True, "model": new.model.name, "n_items": new.model.n_items,
                "previous_loaded_at": old.loaded_at, "loaded_at": new.loaded_at}

    def _warm(self, state: ModelState) -> None:
        """Build the pools of the state's most active users in the background (``serve.warm_pools``)."""
        if self.config.warm_pools <= 0:
            return
        self.warmer = PoolWarmer(state, self.changes, self.explorer, self.reranker,
                                 view_of=lambda st, uid: self._view(st, None, uid),
                                 is_current=lambda st: self.state is st, limit=self.config.warm_pools).start()

    def start_watching(self) -> None:
        """Reload when a new model has been saved into the folder (``watch_interval`` > 0)."""
        if self.model_dir is None or self.config.watch_interval <= 0 or self._watcher is not None:
            return
        self._watcher = FolderWatcher(self.model_dir, self.config.watch_interval,
                                      current=lambda: self.state.fingerprint, reload=self.reload)
        self._watcher.start()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    # ---- recommendations ----
    def _profile(self, state: ModelState, user_id: str) -> UserProfile:
        return user_profile(state, self.store, user_id, self.config.rating_threshold)

    def _view(self, state: ModelState, profile: str | None, user_id: str | None) -> RuleView:
        """The content rules of one request (base rules, default, the user's and the asked-for profile)."""
        return rule_view(self.rules, state, profile, user_id)

    def recommend(self, user_id: str, k: int = 10, explain: bool = False, details: bool = False,
                  profile: str | None = None, pending: list[Durable] | None = None,
                  arrived: float | None = None) -> dict[str, Any]:
        """Top-k for a user id: the model's list, folded in with stored feedback, or the popular list,
        among the items the content rules allow. The candidates come from the state's pool cache
        (:mod:`avrec.serve.pools`) while the user's last stored event is the same
        (:class:`~avrec.serve.changes.ChangeWatermark`; ``arrived``: the request's ``perf_counter()`` on
        arrival, None to check the store now). ``pending``: collect the impression's durable-write future
        there instead of waiting for it (the caller awaits it)."""
        out = self._recommend(user_id, k, explain, details, profile, pending, arrived, None)
        assert isinstance(out, dict)
        return out

    def recommend_json(self, user_id: str, k: int = 10, explain: bool = False, details: bool = False,
                       profile: str | None = None, pending: list[Durable] | None = None,
                       arrived: float | None = None) -> bytes:
        """:meth:`recommend`'s answer as the JSON body. A list served the same way every time (greedy,
        no ties) is kept finished with its pool (:class:`~avrec.serve.pools.Rendered`): serving it again
        logs a new impression and joins bytes."""
        out = self._recommend(user_id, k, explain, details, profile, pending, arrived, (str(user_id), k, explain,
                                                                                        details))
        assert isinstance(out, bytes)
        return out

    def recommend_kept(self, user_id: str, k: int = 10, explain: bool = False, details: bool = False,
                       profile: str | None = None, pending: list[Durable] | None = None,
                       arrived: float | None = None) -> bytes | None:
        """:meth:`recommend_json`'s answer when it is kept finished (logging a new impression), else None
        without computing anything: the caller then builds it, off the event loop (a user's first list
        or one after new feedback costs milliseconds of scoring, a kept one microseconds)."""
        out = self._recommend(user_id, k, explain, details, profile, pending, arrived,
                              (str(user_id), k, explain, details), kept_only=True)
        assert out is None or isinstance(out, bytes)
        return out

    def _recommend(self, user_id: str, k: int, explain: bool, details: bool, profile: str | None,
                   pending: list[Durable] | None, arrived: float | None,
                   render: tuple | None, kept_only: bool = False) -> dict[str, Any] | bytes | None:
        state = self.state
        uid = str(user_id)
        with state.lock.read():
            view = self._view(state, profile, user_id)
            last = self.changes.version(uid, arrived)
            width = self.explorer.width(k)
            # a user the model lacks, without events, gets the one popular list of their rules
            key = (uid if last or uid in state.model.user_index else None, last, view.names, width)
            pool = state.pools.get(key, count=not kept_only)
            if pool is None:
                if kept_only:
                    return None
                pool = build_pool(state, uid, self._profile(state, uid), self.reranker, view, width)
                state.pools.put(key, pool)
            shared = pool.fallback and not explain  # the popular list: one answer template for every such user
            if render is not None and shared:
                render = (None, *render[1:])
            done = pool.responses.get(render) if render is not None else None
            if done is not None:
                row = ImpressionLog.for_user(done.row, uid) if done.user_tail is not None else done.row
                return done.body(self.explorer.log_again(row, pending), uid)
            if kept_only:
                return None
            reusable: list[tuple | None] = []
            items, logged = self._explore(state, "recommend", uid, pool.items, k, pool.history,
                                          {"fallback": pool.fallback}, pending=pending, prepared=pool,
                                          reusable=reusable)
            payload = logged | self._answer(state, uid, pool.fallback, items, pool.history, explain, details, view)
            if render is None:
                return payload
            body = orjson.dumps(payload)
            kept = Rendered.split(body, payload.get("impression_id"), reusable[0],
                                  uid if shared else None) if reusable else None
            if kept is not None:
                pool.keep(render, kept)
            return body

    def recommend_for_history(
        self, history: Sequence[str], k: int = 10, exclude: Sequence[str] = (), explain: bool = False,
        details: bool = False, user_id: str | None = None, profile: str | None = None,
        pending: list[Durable] | None = None,
    ) -> dict[str, Any]:
        """Top-k for an anonymous visitor given the item ids they interacted with (``pending``: as in
        :meth:`recommend`)."""
        state = self.state
        with state.lock.read():
            view = self._view(state, profile, user_id)
            cand = view.model_candidates()
            for item in list(history) + list(exclude):
                state.item_row(item)  # 404 for an unknown item
            usable = [str(i) for i in dict.fromkeys(history) if str(i) in state.model.item_index]
            negative = {str(i) for i in exclude}
            if usable:
                n, model = self.explorer.width(k) + len(negative), state.model
                idx, scores = fold_in(state, usable, self.reranker.width(n), cand)
                idx, scores = self.reranker.apply(model, idx, scores, n, lambda: model.history_matrix([usable]))
            else:
                idx, scores = state.model.popular_topk(
                    1, self.explorer.width(k) + len(negative) + len(history), candidates=cand)
            items = state.scored_items(state.ids_of(idx)[0], scores[0], self.explorer.width(k),
                                       exclude=negative | {str(i) for i in history})
            items, logged = self._explore(state, "recommend", user_id, items, k, usable, {"fallback": not usable},
                                          pending=pending)
            return logged | self._answer(state, user_id, not usable, items, usable, explain, details, view)

    def _answer(self, state, user_id, fallback, items, history, explain, details, view: RuleView) -> dict[str, Any]:
        # the last check of every list, whatever produced it: no item the rules block leaves the service
        items = [it for it in items if view.allows_row(state.catalog_index[it["item_id"]])]
        if details:
            for it in items:
                state.add_details(it)
        if explain and state.explainer is not None:
            allowed_history = view.allowed_ids(state, history)  # explanations never cite a blocked item
            for it in items:
                it["explanation"] = explain_item(state, user_id, it["item_id"], allowed_history, view)["text"]
        return {"user_id": user_id, "fallback": bool(fallback), "items": items}

    def _pool(self, endpoint: str, k: int) -> int:
        """How many items an endpoint's policy chooses ``k`` from (``k`` where it does not explore)."""
        return self.explorer.width(k) if endpoint in self.config.explore_endpoints else k

    def _explore(self, state: ModelState, endpoint: str, user_id: str | None, pool: list[dict[str, Any]], k: int,
                 history: list[str], context: dict[str, Any], explore: bool = True,
                 pending: list[Durable] | None = None, prepared: Pool | None = None,
                 reusable: list[tuple | None] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The policy's ``k`` of ``pool`` (slot order) and the logged impression's id and policy."""
        shown = self.explorer.present(state, endpoint, user_id, pool, k, history, context, explore=explore,
                                      pending=pending, prepared=prepared, reusable=reusable)
        return shown.pop("items"), shown

    # ---- explanations ----
    def explain(self, user_id: str, item_id: str, profile: str | None = None) -> dict[str, Any]:
        """Why ``item_id`` for ``user_id``, from their training history and stored feedback (the part of it
        the content rules allow); a 404 for an item the rules block."""
        state = self.state
        with state.lock.read():
            view = self._view(state, profile, user_id)
            view.check_row(state.item_row(item_id), item_id)
            history = view.allowed_ids(state, self._profile(state, user_id).history)
            return explain_item(state, user_id, item_id, history, view)

    # ---- similar items and search ----
    def similar_kept(self, item_id: str, k: int = 10, profile: str | None = None, by: str = "model",
                     pending: list[Durable] | None = None) -> bytes | None:
        """:meth:`similar_json`'s answer when it is kept finished (a new impression logged), else None."""
        return self._similar_json(item_id, k, profile, by, pending, kept_only=True)

    def similar_json(self, item_id: str, k: int = 10, profile: str | None = None, by: str = "model",
                     pending: list[Durable] | None = None) -> bytes:
        """:meth:`similar`'s answer as the JSON body; kept finished per (item, k, rules, by) while the
        model and catalogue are the same, when the list is the same every time (as for /recommend)."""
        out = self._similar_json(item_id, k, profile, by, pending)
        assert out is not None
        return out

    def _similar_json(self, item_id: str, k: int, profile: str | None, by: str, pending: list[Durable] | None,
                      kept_only: bool = False) -> bytes | None:
        state = self.state
        key = (str(item_id), k, profile, by)  # the rules of a /similar depend on the profile asked for only
        done = state.similar_answers.get(key)
        if done is not None:
            return done.body(self.explorer.log_again(done.row, pending))
        if kept_only:
            return None
        reusable: list[tuple | None] = []
        payload = self.similar(item_id, k=k, profile=profile, by=by, pending=pending, reusable=reusable)
        body = orjson.dumps(payload)
        kept = Rendered.split(body, payload.get("impression_id"), reusable[0]) if reusable else None
        if kept is not None and self.state is state:
            state.similar_answers.put(key, kept)
        return body

    def similar(self, item_id: str, k: int = 10, profile: str | None = None, by: str = "model",
                pending: list[Durable] | None = None, reusable: list[tuple | None] | None = None) -> dict[str, Any]:
        """The items most similar to ``item_id`` that the content rules allow (a 404 for a blocked item);
        ``by``: the model's own similarity, ``text``, or a modality (:mod:`avrec.serve.modality`)."""
        state = self.state
        with state.lock.read():
            view = self._view(state, profile, None)
            row = state.item_row(item_id)
            view.check_row(row, item_id)
            if by not in ("model", "text"):
                items = self.by_modality.neighbours(state, row, str(item_id), by, self._pool("similar", k), view.mask)
            elif by == "model" and row < state.n_model_items:
                sims = state.model.similarity_rows(np.array([row]))  # the library's similar_items, one row
                sims[0, row] = -np.inf
                if view.mask is not None:
                    sims[0, ~view.mask[: sims.shape[1]]] = -np.inf
                n = self._pool("similar", k)
                top, scores = topk_from_scores(sims, n)
                items = state.scored_items(state.ids_of(top)[0], scores[0], n, exclude={str(item_id)})
            else:  # by text, or an added item the model cannot score
                idx, scores = self.indexer.ready(state).neighbours(row, k + view.n_blocked())
                items = [{"item_id": str(state.catalog_ids[i]), "score": finite(s), "title": state.title(i)}
                         for i, s in zip(idx, scores) if view.allows_row(int(i))][:k]
            items = [it for it in items if view.allows_row(state.catalog_index[it["item_id"]])]
        items, logged = self._explore(state, "similar", None, items, k, [], {"item_id": str(item_id)},
                                      "similar" in self.config.explore_endpoints, pending=pending,
                                      reusable=reusable)
        return logged | {"item_id": str(item_id), "items": items}

    def search(self, q: str, k: int = 10, user_id: str | None = None, personal_weight: float | None = None,
               details: bool = False, profile: str | None = None) -> dict[str, Any]:
        """Items matching a natural-language request, optionally re-ranked by a user's model scores, among
        the items the content rules allow."""
        state = self.state
        search = self.indexer.ready(state)
        w = self.config.personal_weight if personal_weight is None else personal_weight
        with state.lock.read():
            view = self._view(state, profile, user_id)
            n = self._pool("search", k)
            idx, text_scores = search.search(q, (n if not user_id else max(5 * n, 50)) + view.n_blocked())
            if view.mask is not None:
                keep = view.mask[np.clip(idx, 0, len(view.mask) - 1)] & (idx < len(view.mask))
                idx, text_scores = idx[keep], np.asarray(text_scores)[keep]
            personalised, negative = False, set()
            final = np.asarray(text_scores, dtype=np.float64)
            if user_id and len(idx):
                p = self._profile(state, user_id)
                negative = p.negative
                cand = [str(state.catalog_ids[i]) for i in idx if i < state.n_model_items]
                if (p.known or p.history) and cand and w > 0:
                    model = state.model
                    if p.history and (not p.known or p.has_feedback):
                        ids, sc = model.recommend_history([p.history], k=len(cand), exclude_seen=False, candidates=cand)
                    else:
                        ids, sc = model.recommend([str(user_id)], k=len(cand), exclude_seen=False, candidates=cand)
                    personal = {str(i): float(s) for i, s in zip(ids[0], sc[0]) if i is not None}
                    p_scores = np.array([personal.get(str(state.catalog_ids[i]), -np.inf) for i in idx])
                    final = (1 - w) * minmax(final) + w * minmax(p_scores)
                    personalised = True
            items = []
            for o in np.argsort(-final, kind="stable"):
                item = str(state.catalog_ids[idx[o]])
                if item in negative:
                    continue
                items.append({"item_id": item, "score": finite(final[o]), "title": state.title(int(idx[o]))})
                if details:
                    state.add_details(items[-1])
                if len(items) == n:
                    break
        items, logged = self._explore(state, "search", user_id, items, k, [], {"query": q},
                                      "search" in self.config.explore_endpoints)
        return logged | {"query": q, "user_id": user_id, "personalised": personalised, "items": items}
