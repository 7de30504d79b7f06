"""The model holder behind the HTTP API: online fold-in, text search, explanations and hot reload.

A :class:`ModelState` bundles one loaded model with what is derived from it (catalogue lookup, text
search index, explainer). :class:`RecommenderService` holds the current state and swaps in a new one
atomically when the model folder changes (or on ``reload()``): a request reads ``service.state`` once
and keeps that object to the end, so a reload never drops or mixes requests. Catalogue additions
(``add_items``) mutate the current state under a write lock; every read path holds the read lock.

Feedback lives in the :class:`~avrec.serve.store.EventStore` and is read per request, so a like or a
skip changes that user's very next recommendations: positive events join the user's training history
and the model folds the profile in through ``recommend_history``; skipped (negative) items are excluded.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.errors import AvrecError, ConfigError
from avrec.eval.topk import topk_from_scores
from avrec.models.artifacts import save_atomically
from avrec.models.base import Recommender
from avrec.models.updates import fold_in_interactions
from avrec.serve.store import DEFAULT_RATING_THRESHOLD, Event, EventStore

log = logging.getLogger("avrec.serve")

MAX_K = 1000
#: 32 MiB: 10,000 catalogue items of about 3 kB of JSON each (title, genres, tags, people, an overview)
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
#: item vectors wider than this are not used for /similar (co-occurrence instead)


# ---- errors the API maps to HTTP statuses --------------------------------------------------------
class ServiceError(AvrecError):
    """An error with an HTTP status; the message is shown to the client."""

    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Unavailable(ServiceError):
    status = 503


# ---- a small readers-writer lock -----------------------------------------------------------------
class RWLock:
    """Many readers or one writer; writers wait for readers in progress and block new ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    @property
    def writer_pending(self) -> bool:
        """A writer holds the lock or waits for it, so a new reader would block."""
        return self._writer or self._waiting_writers > 0

    def read(self) -> _Guard:
        return _Guard(self.acquire_read, self.release_read)

    def write(self) -> _Guard:
        return _Guard(self.acquire_write, self.release_write)


class _Guard:
    def __init__(self, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self._enter, self._leave = enter, leave

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc) -> None:
        self._leave()


# ---- configuration -------------------------------------------------------------------------------
@dataclass
class ServeConfig:
    """Service settings (``avrec serve`` flags and the ``[serve]`` table of a config file).

    ``api_key``: the key write endpoints require in ``X-API-Key`` (``AVREC_API_KEY`` wins when set).
    ``insecure_dev``: accept writes without a key when none is configured (local demos only).
    ``watch_interval``: seconds between checks of the model folder for a new model (0 disables).
    ``search``: build the natural-language search index (at start-up, in the background).
    ``encoder``: text encoder for search when the model has no ``encode_query``.
    ``personal_weight``: weight of the user's model scores when /search is personalised.
    ``max_body_bytes``: the largest request body accepted (413 above it; 0 disables the limit). The
    default fits the largest batch, 10,000 items with long overviews in one ``POST /items``.
    """

    api_key: str | None = None
    insecure_dev: bool = False
    rating_threshold: float = DEFAULT_RATING_THRESHOLD
    watch_interval: float = 2.0
    search: bool = True
    encoder: str = "default"
    cache_dir: str | None = None
    personal_weight: float = 0.3
    search_wait: float = 120.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def effective_api_key(self) -> str | None:
        return os.environ.get("AVREC_API_KEY") or self.api_key or None


# ---- helpers -------------------------------------------------------------------------------------
def folder_fingerprint(folder: Path) -> tuple:
    """(newest mtime, total size, file count) over a model folder: changes whenever a save touches it."""
    newest, size, count = 0, 0, 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(".") or ".sqlite" in name or name.endswith(("-wal", "-shm", "-journal")):
                continue
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime_ns)
            size += st.st_size
            count += 1
    return newest, size, count


def _split_values(value: str) -> list[str]:
    return [v.strip() for v in str(value).split("|") if v.strip()]


def _finite(x: float) -> float:
    x = float(x)
    return x if np.isfinite(x) else 0.0


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x)
    lo, hi = x[finite].min(), x[finite].max()
    out = np.where(finite, (x - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


class TextSearch:
    """Natural-language search over the catalogue: a query encoder plus a FAISS index of item vectors.

    Matching is by cosine: item and query vectors are unit-normalised, so a model's item vectors whose
    norms grow with popularity do not drown the request's meaning.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], vectors: np.ndarray, source: str) -> None:
        self._encode = encode
        self.source = source
        from avrec.models.ann import ANNIndex  # exact below 50k items, HNSW above

        self.index = ANNIndex().build(_unit_rows(vectors))
        self.size = len(vectors)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # one forward pass at a time: torch shares its thread pool
            return _unit_rows(np.asarray(self._encode(texts), dtype=np.float32).reshape(len(texts), -1))

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.encode([query])
        idx, scores = self.index.search(q, min(k, self.size))
        keep = idx[0] >= 0
        return idx[0][keep], scores[0][keep]

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(_unit_rows(vectors))
        self.size += len(vectors)


class ModelState:
    """One loaded model and what the API derives from it. Replaced whole on reload."""

    def __init__(self, model: Recommender, model_dir: Path | None, fingerprint: tuple = ()) -> None:
        self.model = model
        self.model_dir = model_dir
        self.fingerprint = fingerprint
        self.loaded_at = time.time()
        self.lock = RWLock()
        self.can_add = model.capabilities.add_items
        #: items added to a model that cannot score them: searchable and listed, not recommended
        self.extra_items = pd.DataFrame(columns=["item_id"])
        self.search: TextSearch | None = None
        self.search_error: str | None = None
        self.search_ready = threading.Event()
        self.explainer: Any = None
        self._refresh_catalog()

    # ---- catalogue ----
    def _refresh_catalog(self) -> None:
        items = self.model.items
        if len(self.extra_items):
            items = pd.concat([items, self.extra_items], ignore_index=True).fillna("")
        self.catalog = items.reset_index(drop=True)
        self.catalog_ids = self.catalog["item_id"].astype(str).to_numpy(dtype=object)
        self.catalog_index = {i: n for n, i in enumerate(self.catalog_ids)}
        self.titles = (
            self.catalog["title"].astype(str).tolist() if "title" in self.catalog else list(self.catalog_ids)
        )
        self.n_model_items = self.model.n_items

    def item_row(self, item_id: str) -> int:
        row = self.catalog_index.get(str(item_id))
        if row is None:
            raise NotFound(f"unknown item_id {str(item_id)!r}")
        return row

    def title(self, row: int) -> str:
        t = self.titles[row]
        return t if t else str(self.catalog_ids[row])

    def item_record(self, row: int) -> dict[str, Any]:
        rec = {k: str(v) for k, v in self.catalog.iloc[row].items() if str(v) != ""}
        rec["item_id"] = str(self.catalog_ids[row])
        rec["recommendable"] = row < self.n_model_items
        return rec

    def warm_similarity(self) -> None:
        """Build the model's similarity caches (unit vectors, norms) before the first request asks."""
        if self.n_model_items:
            self.model.similarity_rows(np.array([0]))


# ---- the service ---------------------------------------------------------------------------------
class RecommenderService:
    """Everything the HTTP layer calls: recommendations, search, feedback, items and reloads."""

    def __init__(
        self,
        model_dir: str | Path | None,
        store: EventStore,
        config: ServeConfig | None = None,
        model: Recommender | None = None,
    ) -> None:
        self.config = config or ServeConfig()
        self.store = store
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._mutation = threading.RLock()
        self._encoder = None
        self._encoder_lock = threading.Lock()
        self.reloads = 0
        self.reload_errors = 0
        self.last_reload_error: str | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if model is None:
            if self.model_dir is None:
                raise ConfigError("a model folder or a model is required")
            self.state = self._build_state()
        else:
            self.state = self._prepare_state(ModelState(model, self.model_dir))

    # ---- building states ----
    def _build_state(self) -> ModelState:
        assert self.model_dir is not None
        fingerprint = folder_fingerprint(self.model_dir)
        model = Recommender.load(self.model_dir)
        return self._prepare_state(ModelState(model, self.model_dir, fingerprint))

    def _prepare_state(self, state: ModelState) -> ModelState:
        """Replay stored item additions, attach an explainer and start the search index."""
        stored = self._replayable(state, self.store.items())
        if stored:
            self._apply_items(state, pd.DataFrame(stored).fillna("").astype(str), encode_search=False)
        state.explainer = self._make_explainer(state.model)
        # decide /similar's path (and build its vectors) before the first request asks
        threading.Thread(target=state.warm_similarity, name="avrec-item-vectors", daemon=True).start()
        if self.config.search:
            threading.Thread(target=self._build_search, args=(state,), name="avrec-search-index", daemon=True).start()
        else:
            state.search_error = "search is disabled (--no-search)"
            state.search_ready.set()
        return state

    @staticmethod
    def _replayable(state: ModelState, stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored items the catalogue lacks, less any an older server stored but could not add.

        Before ids were checked up front, an id the model normalises to one it has (``" s1"``) was written
        to the store and then refused; replaying it would stop the server from starting.
        """
        out, seen = [], set(state.catalog_index)
        for it in stored:
            item_id = str(it["item_id"])
            if item_id in state.catalog_index:
                continue
            if item_id != item_id.strip() or not item_id.strip() or item_id.strip() in seen:
                log.warning("event store: skipping stored item %r: it clashes with the catalogue", item_id)
                continue
            seen.add(item_id)
            out.append(it)
        return out

    def _make_explainer(self, model: Recommender) -> Any:
        if importlib.util.find_spec("avrec.explain") is None:
            return None
        try:
            mod = importlib.import_module("avrec.explain")
            return mod.Explainer(model)
        except Exception as e:  # noqa: BLE001 - explanations are optional; recommendations still work
            log.warning("explanations from avrec.explain unavailable (%s: %s); using co-occurrence", type(e).__name__, e)
            return None

    def text_encoder(self):
        """The shared text encoder for search (loaded once, reused across reloads)."""
        with self._encoder_lock:
            if self._encoder is None:
                from avrec.encoders import TextEncoder

                self._encoder = TextEncoder(self.config.encoder)
            return self._encoder

    def _encode_documents(self, items: pd.DataFrame) -> np.ndarray:
        from avrec.data.documents import build_documents
        from avrec.encoders import EmbeddingCache, encode_texts

        cache = EmbeddingCache(self.config.cache_dir) if self.config.cache_dir else EmbeddingCache()
        return encode_texts(self.text_encoder(), build_documents(items), cache, show_progress=False)

    def _build_search(self, state: ModelState) -> None:
        try:
            model = state.model
            encode_query = model.encode_query if model.capabilities.text_queries else None
            vectors = model.item_vectors() if encode_query is not None else None
            with state.lock.read():
                catalog = state.catalog.copy()
            if vectors is not None and len(vectors) == len(catalog):
                search = TextSearch(lambda texts: np.stack([encode_query(t) for t in texts]), vectors, "model")
            else:
                encoder = self.text_encoder()
                vectors = self._encode_documents(catalog)
                search = TextSearch(lambda texts: encoder.encode(texts, show_progress=False), vectors, "encoder")
            with state.lock.write():
                if len(state.catalog) > len(catalog):  # items added while we encoded
                    added = state.catalog.iloc[len(catalog):]
                    search.add(np.asarray(model.item_vectors())[len(catalog):] if search.source == "model"
                               else self._encode_documents(added))
                state.search = search
        except Exception as e:  # noqa: BLE001 - search is one feature; the rest of the API keeps serving
            state.search_error = f"{type(e).__name__}: {e}"
            log.error("search index unavailable: %s", state.search_error)
        finally:
            state.search_ready.set()

    # ---- reload ----
    def reload(self) -> dict[str, Any]:
        """Load the model folder again and swap it in; in-flight requests finish on the old model."""
        if self.model_dir is None:
            raise ConfigError("this service was started from an in-memory model; nothing to reload")
        with self._mutation:
            try:
                new = self._build_state()
            except Exception as e:
                self.reload_errors += 1
                self.last_reload_error = f"{type(e).__name__}: {e}"
                raise
            old, self.state = self.state, new
            self.reloads += 1
            self.last_reload_error = None
        log.info("model reloaded from %s (%s, %d items)", self.model_dir, new.model.name, new.model.n_items)
        return {"reloaded": True, "model": new.model.name, "n_items": new.model.n_items,
                "previous_loaded_at": old.loaded_at, "loaded_at": new.loaded_at}

    def start_watching(self) -> None:
        """Poll the model folder; reload once a change has settled (two equal fingerprints in a row)."""
        if self.model_dir is None or self.config.watch_interval <= 0 or self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, name="avrec-model-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        failed: tuple | None = None
        pending: tuple | None = None
        while not self._stop.wait(self.config.watch_interval):
            try:
                fp = folder_fingerprint(self.model_dir)
            except OSError:
                continue
            if fp == self.state.fingerprint or fp == failed or not (self.model_dir / "config.json").exists():
                pending = None
                continue
            if fp != pending:  # changed since the last look: wait for the writer to finish
                pending = fp
                continue
            try:
                self.reload()
                failed = None
            except Exception as e:  # noqa: BLE001 - a half-written or bad model keeps the old one serving
                failed = fp
                log.error("reload of %s failed, still serving the previous model: %s", self.model_dir, e)
            pending = None

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    # ---- users and feedback ----
    def user_events(self, user_id: str) -> list[Event]:
        return self.store.events(user_id=user_id)

    def _profile(self, state: ModelState, user_id: str) -> tuple[bool, list[str], set[str], list[Event]]:
        """(known to the model, history item ids incl. positive feedback, negative item ids, events)."""
        model = state.model
        u = model.user_index.get(str(user_id))
        history: list[str] = []
        if u is not None:
            row = model.seen[u]
            history = [state.catalog_ids[i] for i in row.indices]
        events = self.user_events(user_id)
        last: dict[str, int] = {}
        for e in events:  # the latest event on an item decides its polarity
            last[e.item_id] = e.polarity(self.config.rating_threshold)
        in_model = model.item_index
        hist_set = set(history)
        for item, pol in last.items():
            if pol > 0 and item in in_model and item not in hist_set:
                history.append(item)
                hist_set.add(item)
        negative = {item for item, pol in last.items() if pol < 0}
        return u is not None, history, negative, events

    def recommend(self, user_id: str, k: int = 10, explain: bool = False, details: bool = False) -> dict[str, Any]:
        """Top-k for a user id: the model's list, folded in with stored feedback, or a fallback list."""
        state = self.state
        with state.lock.read():
            known, history, negative, events = self._profile(state, user_id)
            has_feedback = any(e.polarity(self.config.rating_threshold) > 0 for e in events)
            model = state.model
            extra = len(negative)
            fallback = not known and not has_feedback
            if has_feedback:
                ids, scores = self._fold_in(state, history, k + extra)
            elif known:
                u = model.user_index[str(user_id)]
                idx, scores = model.topk_indices(np.array([u]), k + extra, exclude=model.seen[[u]])
                ids = self._to_ids(state, idx)
            else:
                ids, scores = self._popular(state, k + extra)
            items = self._format(state, ids[0], scores[0], k, exclude=negative | set(history))
            return self._answer(state, str(user_id), fallback, items, history, explain, details)

    def recommend_for_history(
        self, history: Sequence[str], k: int = 10, exclude: Sequence[str] = (), explain: bool = False,
        details: bool = False, user_id: str | None = None,
    ) -> dict[str, Any]:
        """Top-k for an anonymous visitor given the item ids they interacted with."""
        state = self.state
        with state.lock.read():
            for item in list(history) + list(exclude):
                state.item_row(item)  # 404 for an unknown item
            model = state.model
            usable = [str(i) for i in dict.fromkeys(history) if str(i) in model.item_index]
            negative = {str(i) for i in exclude}
            if usable:
                ids, scores = self._fold_in(state, usable, k + len(negative))
            else:
                ids, scores = self._popular(state, k + len(negative) + len(history))
            items = self._format(state, ids[0], scores[0], k, exclude=negative | {str(i) for i in history})
            return self._answer(state, user_id, not usable, items, usable, explain, details)

    @staticmethod
    def _popular(state: ModelState, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The fallback list: the model's own (most-interacted items of the training data)."""
        idx, val = state.model.popular_topk(1, k)
        return RecommenderService._to_ids(state, idx), val

    @staticmethod
    def _to_ids(state: ModelState, idx: np.ndarray) -> np.ndarray:
        """Item ids for index arrays (-1 → None), from the state's cached id array."""
        out = np.empty(idx.shape, dtype=object)
        valid = idx >= 0
        out[valid] = state.catalog_ids[idx[valid]]
        out[~valid] = None
        return out

    @staticmethod
    def _fold_in(state: ModelState, history: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """``recommend_history`` for one user at index level (the history's items excluded)."""
        model = state.model
        cols = np.unique(np.fromiter((state.catalog_index[h] for h in history), dtype=np.int64, count=len(history)))
        hist = sp.csr_matrix((np.ones(len(cols), np.float32), (np.zeros(len(cols), np.int64), cols)),
                             shape=(1, model.n_items))
        idx, val = model.topk_histories(hist, k)
        return RecommenderService._to_ids(state, idx), val

    def _format(self, state: ModelState, ids, scores, k: int, exclude: set[str]) -> list[dict[str, Any]]:
        out = []
        for item, score in zip(ids, scores):
            if item is None or str(item) in exclude:
                continue
            out.append({"item_id": str(item), "score": _finite(score), "title": state.title(state.catalog_index[str(item)])})
            if len(out) == k:
                break
        return out

    def _answer(self, state, user_id, fallback, items, history, explain, details) -> dict[str, Any]:
        if details:
            for it in items:
                self._add_details(state, it)
        if explain:
            for it in items:
                it["explanation"] = self._explain(state, user_id, it["item_id"], history)["text"]
        return {"user_id": user_id, "fallback": bool(fallback), "items": items}

    @staticmethod
    def _add_details(state: ModelState, item: dict[str, Any]) -> None:
        row = state.catalog.iloc[state.catalog_index[item["item_id"]]]
        item["media_type"] = str(row.get("media_type", "")) or None
        item["genres"] = _split_values(row.get("genres", ""))
        item["year"] = str(row.get("year", "")) or None

    # ---- explanations ----
    def explain(self, user_id: str, item_id: str) -> dict[str, Any]:
        state = self.state
        with state.lock.read():
            state.item_row(item_id)
            _known, history, _neg, _events = self._profile(state, user_id)
            return self._explain(state, user_id, item_id, history)

    def _explain(self, state: ModelState, user_id: str | None, item_id: str, history: list[str]) -> dict[str, Any]:
        if state.explainer is not None and user_id is not None:
            try:
                out = state.explainer.explain(str(user_id), str(item_id))
                if isinstance(out, dict) and out.get("text"):
                    return {"user_id": user_id, "item_id": str(item_id), "text": str(out["text"]),
                            "evidence": list(out.get("evidence") or [])}
            except Exception as e:  # noqa: BLE001 - e.g. a folded-in user the explainer has not seen
                log.debug("explainer failed for %s/%s: %s", user_id, item_id, e)
        return self._basic_explanation(state, user_id, item_id, history)

    def _basic_explanation(self, state: ModelState, user_id, item_id: str, history: list[str]) -> dict[str, Any]:
        """Why an item: the history item it co-occurs with most, shared genres, else its popularity."""
        row = state.catalog_index[str(item_id)]
        evidence: list[dict[str, Any]] = []
        parts: list[str] = []
        hist_rows = [state.catalog_index[h] for h in history if h in state.catalog_index]
        model_hist = np.array([r for r in hist_rows if r < state.n_model_items], dtype=np.int64)
        if len(model_hist) and row < state.n_model_items:
            x, norms = state.cooccurrence()
            co = np.asarray((x[:, model_hist].T @ x[:, [row]]).todense()).ravel()
            denom = norms[model_hist] * max(norms[row], 1e-9)
            sims = np.where(denom > 0, co / np.maximum(denom, 1e-9), 0.0)
            top = np.argsort(-sims)[:2]
            best = [int(model_hist[t]) for t in top if sims[t] > 0]
            for b, t in zip(best, top):
                evidence.append({"kind": "history_item", "item_id": str(state.catalog_ids[b]),
                                 "weight": round(float(sims[t]), 4)})
            if best:
                titles = " and ".join(f"“{state.title(b)}”" for b in best)
                parts.append(f"People who chose {titles} also chose this.")
        if "genres" in state.catalog:
            genres = _split_values(state.catalog["genres"].iat[row])
            if hist_rows and genres:
                counts: dict[str, int] = {}
                members: dict[str, list[str]] = {}
                for h in hist_rows:
                    for g in _split_values(state.catalog["genres"].iat[h]):
                        counts[g] = counts.get(g, 0) + 1
                        members.setdefault(g, []).append(str(state.catalog_ids[h]))
                shared = sorted((g for g in genres if g in counts), key=lambda g: -counts[g])[:3]
                if shared:
                    evidence.extend({"kind": "entity", "entity": f"genre:{g}", "field": "genres",
                                     "history_items": members[g][:5]} for g in shared)
                    listed = shared[0] if len(shared) == 1 else ", ".join(shared[:-1]) + " and " + shared[-1]
                    parts.append(f"Like items in your history, it is {listed}.")
        if not parts:
            pop = int(state.model.popularity[row]) if row < state.n_model_items else 0
            evidence.append({"kind": "popularity", "users": pop})
            parts.append(f"Popular: {pop} people chose it." if pop else "New in the catalogue.")
        return {"user_id": user_id, "item_id": str(item_id), "text": " ".join(parts), "evidence": evidence}

    # ---- similar items and search ----
    def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        state = self.state
        with state.lock.read():
            row = state.item_row(item_id)
            if row < state.n_model_items:
                sims = state.model.similarity_rows(np.array([row]))  # the library's similar_items, one row
                sims[0, row] = -np.inf
                top, scores = topk_from_scores(sims, k)
                ids = self._to_ids(state, top)
                items = self._format(state, ids[0], scores[0], k, exclude={str(item_id)})
            else:  # an added item the model cannot score: neighbours by text
                search = self._wait_search(state)
                vec = search.index.index.reconstruct(row).reshape(1, -1)
                idx, sc = search.index.search(vec, k + 1)
                items = [{"item_id": str(state.catalog_ids[i]), "score": _finite(s), "title": state.title(i)}
                         for i, s in zip(idx[0], sc[0]) if i >= 0 and i != row][:k]
        return {"item_id": str(item_id), "items": items}

    def _wait_search(self, state: ModelState) -> TextSearch:
        if not state.search_ready.wait(self.config.search_wait):
            raise Unavailable("the search index is still being built; retry in a moment")
        if state.search is None:
            raise Unavailable(f"search is unavailable: {state.search_error}")
        return state.search

    def search(
        self, q: str, k: int = 10, user_id: str | None = None, personal_weight: float | None = None,
        details: bool = False,
    ) -> dict[str, Any]:
        """Items matching a natural-language request, optionally re-ranked by a user's model scores."""
        state = self.state
        search = self._wait_search(state)
        w = self.config.personal_weight if personal_weight is None else personal_weight
        with state.lock.read():
            n_cand = k if not user_id else max(5 * k, 50)
            idx, text_scores = search.search(q, n_cand)
            personalised = False
            negative: set[str] = set()
            final = np.asarray(text_scores, dtype=np.float64)
            if user_id and len(idx):
                known, history, negative, events = self._profile(state, user_id)
                cand = [int(i) for i in idx if i < state.n_model_items]
                if (known or history) and cand and w > 0:
                    cand_ids = [str(state.catalog_ids[i]) for i in cand]
                    if history and (not known or any(e.polarity(self.config.rating_threshold) > 0 for e in events)):
                        ids, sc = state.model.recommend_history([history], k=len(cand), exclude_seen=False,
                                                                candidates=cand_ids)
                    else:
                        ids, sc = state.model.recommend([str(user_id)], k=len(cand), exclude_seen=False,
                                                        candidates=cand_ids)
                    personal = {str(i): float(s) for i, s in zip(ids[0], sc[0]) if i is not None}
                    p = np.array([personal.get(str(state.catalog_ids[i]), -np.inf) for i in idx])
                    final = (1 - w) * _minmax(final) + w * _minmax(p)
                    personalised = True
            order = np.argsort(-final, kind="stable")
            items = []
            for o in order:
                item = str(state.catalog_ids[idx[o]])
                if item in negative:
                    continue
                items.append({"item_id": item, "score": _finite(final[o]), "title": state.title(int(idx[o]))})
                if details:
                    self._add_details(state, items[-1])
                if len(items) == k:
                    break
        return {"query": q, "user_id": user_id, "personalised": personalised, "items": items}

    # ---- writes ----
    def feedback(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Store events durably (after checking their items exist) and return their ids."""
        state = self.state
        for n, e in enumerate(events):
            if str(e["item_id"]) not in state.catalog_index:
                raise NotFound(f"events[{n}].item_id: unknown item_id {str(e['item_id'])!r}")
        ids = self.store.add_events(events)
        return {"stored": len(ids), "ids": ids}

    def add_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Add items to the catalogue now: stored durably, indexed for search, recommendable when the model can.

        All or nothing: a duplicate id (within the batch or against the catalogue) is a 409 before anything
        is written, and a batch that fails while being added is taken out of the store again, so the store
        holds exactly the items that were acknowledged.
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
                self._apply_items(state, frame, encode_search=True)
            except BaseException:
                self.store.remove_items(ids.tolist())
                raise
        return {"added": len(frame), "recommendable": state.can_add, "n_items": len(state.catalog)}

    def _apply_items(self, state: ModelState, frame: pd.DataFrame, encode_search: bool) -> None:
        vectors = None
        if encode_search and state.search is not None:
            if state.search.source == "encoder":
                vectors = self._encode_documents(frame)
        with state.lock.write():
            if state.can_add:
                state.model.add_items(frame)
            else:
                state.extra_items = pd.concat([state.extra_items, frame], ignore_index=True).fillna("")
            state._refresh_catalog()
            if encode_search and state.search is not None:
                if vectors is None:  # the model's own item space
                    vectors = np.asarray(state.model.item_vectors())[-len(frame):]
                state.search.add(vectors)

    # ---- reads ----
    def item(self, item_id: str) -> dict[str, Any]:
        state = self.state
        with state.lock.read():
            return state.item_record(state.item_row(item_id))

    def history(self, user_id: str, limit: int = 100) -> dict[str, Any]:
        """Feedback events (newest first) followed by the training history the model was fitted on."""
        state = self.state
        with state.lock.read():
            model = state.model
            u = model.user_index.get(str(user_id))
            events = self.user_events(user_id)
            if u is None and not events and not self.store.has_user(user_id):
                raise NotFound(f"unknown user_id {str(user_id)!r}")
            out: list[dict[str, Any]] = []
            for e in reversed(events):
                row = state.catalog_index.get(e.item_id)
                out.append({"item_id": e.item_id, "title": state.title(row) if row is not None else e.item_id,
                            "source": "feedback", "event": e.event, "value": e.value, "ts": e.ts})
            n_train = 0
            if u is not None:
                row = model.seen[u]
                n_train = len(row.indices)
                for i in row.indices[np.argsort(-model.popularity[row.indices], kind="stable")]:
                    out.append({"item_id": state.catalog_ids[i], "title": state.title(int(i)), "source": "train",
                                "event": None, "value": None, "ts": None})
            return {"user_id": str(user_id), "known": u is not None, "n_train": n_train, "n_feedback": len(events),
                    "items": out[:limit]}

    def users(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        model = self.state.model
        stored = [u for u in self.store.users() if u not in model.user_index]
        every = [str(u) for u in model.user_ids] + stored
        return {"total": len(every), "users": every[offset: offset + limit]}

    def health(self) -> dict[str, Any]:
        state = self.state
        return {
            "status": "ok",
            "model": state.model.name,
            "model_dir": str(state.model_dir) if state.model_dir else None,
            "n_items": len(state.catalog),
            "n_users": len(state.model.user_ids),
            "events": self.store.count_events(),
            "loaded_at": state.loaded_at,
            "reloads": self.reloads,
            "search": "ready" if state.search is not None else ("building" if not state.search_ready.is_set()
                                                                   else "unavailable"),
            "explanations": "avrec.explain" if state.explainer is not None else "co-occurrence",
            "writes": "api-key" if self.config.effective_api_key() else (
                "open (--insecure-dev)" if self.config.insecure_dev else "disabled (no API key configured)"),
        }


# ---- folding stored events into a model folder (``avrec update``) --------------------------------
def fold_events(model: Recommender, store: EventStore, rating_threshold: float = DEFAULT_RATING_THRESHOLD) -> dict:
    """Fold the store's items and positive events into ``model`` in place, without retraining.

    Stored items the model lacks are added when it can add items; every user's positive events (play,
    like, rating ≥ threshold; the latest event per item wins) go through
    :func:`avrec.models.updates.fold_in_interactions`. Running it twice changes nothing the second time.
    """
    summary: dict[str, Any] = {"model": model.name, "items_added": 0, "items_skipped": 0}
    stored_items = [it for it in store.items() if str(it["item_id"]) not in model.item_index]
    if stored_items:
        if model.capabilities.add_items:
            summary["items_added"] = model.add_items(pd.DataFrame(stored_items).fillna("").astype(str))
        else:
            summary["items_skipped"] = len(stored_items)
    last: dict[tuple[str, str], int] = {}
    max_id = 0
    for e in store.iter_events():
        last[(e.user_id, e.item_id)] = e.polarity(rating_threshold)
        max_id = max(max_id, e.id)
    summary["events_folded_upto"] = max_id
    summary |= fold_in_interactions(model, [pair for pair, pol in last.items() if pol > 0])
    return summary


#: kept for callers of the old name; the mechanism lives in the models layer
save_model_atomically = save_atomically
