"""One loaded model and what the API derives from it (:class:`ModelState`), and watching its folder.

A state is replaced whole when the model folder changes: a request reads ``service.state`` once and keeps
that object to the end, so a reload never drops or mixes requests. Catalogue additions change the current
state under its write lock; every read path holds the read lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avrec.models.base import Recommender
from avrec.models.versions import VERSIONS_DIR, current_version, is_home, read_pointer, resolve_model_folder
from avrec.serve.errors import NotFound
from avrec.serve.locks import RWLock
from avrec.serve.pools import PoolCache
from avrec.serve.search import TextSearch

log = logging.getLogger("avrec.serve")


def folder_fingerprint(folder: Path) -> tuple:
    """(newest mtime, total size, file count) over a model folder: changes whenever a save touches it. For a
    versioned folder (:mod:`avrec.models.versions`): the current version's name and its folder's fingerprint,
    so writing a version that is not promoted changes nothing and moving the pointer reloads."""
    if is_home(folder):
        name = read_pointer(folder)
        return (name, *folder_fingerprint(folder / VERSIONS_DIR / name))
    newest, size, count = 0, 0, 0
    for root, dirs, files in os.walk(folder):
        if root == str(folder):
            dirs[:] = [d for d in dirs if d != VERSIONS_DIR]
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


def split_values(value: Any) -> list[str]:
    """``"Sci-Fi|Adventure"`` → ``["Sci-Fi", "Adventure"]``."""
    return [v.strip() for v in str(value).split("|") if v.strip()]


def finite(x: float) -> float:
    """A score as JSON can carry it (-inf padding becomes 0)."""
    x = float(x)
    return x if np.isfinite(x) else 0.0


def replayable(stored: list[dict[str, Any]], known: Collection[str]) -> list[dict[str, Any]]:
    """Stored items whose ids ``known`` lacks, less any an older server stored but could not add.

    Before ids were checked up front, an id the model normalises to one it has (``" s1"``) was written
    to the store and then refused; replaying it would stop the server from starting.
    """
    out, seen = [], set(known)
    for it in stored:
        item_id = str(it["item_id"])
        if item_id in known:
            continue
        if item_id != item_id.strip() or not item_id.strip() or item_id.strip() in seen:
            log.warning("event store: skipping stored item %r: it clashes with the catalogue", item_id)
            continue
        seen.add(item_id)
        out.append(it)
    return out


class ModelState:
    """One loaded model and what the API derives from it. Replaced whole on reload.

    The served catalogue is the model's items followed by ``extra_items``: items added to a model that
    cannot add items (``capabilities.add_items`` false), which are listed and searchable, not recommended.
    """

    def __init__(self, model: Recommender, model_dir: Path | None, fingerprint: tuple = ()) -> None:
        self.model = model
        self.model_dir = model_dir
        self.fingerprint = fingerprint
        #: the version of a versioned model folder being served (None for a plain folder)
        self.version: str | None = None
        #: the short hash of ``fingerprint`` impressions log as the model version (set on first use)
        self.fingerprint_id: str | None = None
        self.loaded_at = time.time()
        self.lock = RWLock()
        self.can_add = model.capabilities.add_items
        self.extra_items = pd.DataFrame(columns=["item_id"])
        self.search: TextSearch | None = None
        self.search_error: str | None = None
        self.search_ready = threading.Event()
        self.explainer: Any = None
        self.explainer_error: str | None = None
        #: per-user /recommend candidates (avrec.serve.pools), valid for this model and catalogue only
        self.pools = PoolCache()
        #: finished /similar answers (avrec.serve.pools.Rendered) per (item, k, rule profiles, by)
        self.similar_answers = PoolCache()
        self.refresh_catalog()

    # ---- the catalogue ----
    def refresh_catalog(self) -> None:
        items = self.model.items
        assert items is not None  # a served model is fitted
        if len(self.extra_items):
            items = pd.concat([items, self.extra_items], ignore_index=True).fillna("")
        self.catalog = items.reset_index(drop=True)
        self.catalog_ids = self.catalog["item_id"].astype(str).to_numpy(dtype=object)
        self.catalog_index = {i: n for n, i in enumerate(self.catalog_ids)}
        self.titles = (
            self.catalog["title"].astype(str).tolist() if "title" in self.catalog else list(self.catalog_ids)
        )
        self.n_model_items = self.model.n_items
        #: content-rule masks over this catalogue, per set of profile names (avrec.serve.rules)
        self.rule_masks: dict[tuple[str, ...], np.ndarray] = {}

    def item_row(self, item_id: str) -> int:
        """The catalogue row of ``item_id``; a 404 for an id the catalogue lacks."""
        row = self.catalog_index.get(str(item_id))
        if row is None:
            raise NotFound(f"unknown item_id {str(item_id)!r}")
        return row

    def title(self, row: int) -> str:
        t = self.titles[row]
        return t if t else str(self.catalog_ids[row])

    def item_record(self, row: int) -> dict[str, Any]:
        rec: dict[str, Any] = {str(k): str(v) for k, v in self.catalog.iloc[row].items() if str(v) != ""}
        rec["item_id"] = str(self.catalog_ids[row])
        rec["recommendable"] = row < self.n_model_items
        return rec

    def ids_of(self, idx: np.ndarray) -> np.ndarray:
        """Item ids for index arrays (-1 → None), from the cached id array."""
        out = np.empty(idx.shape, dtype=object)
        valid = idx >= 0
        out[valid] = self.catalog_ids[idx[valid]]
        out[~valid] = None
        return out

    def scored_items(self, ids, scores, k: int, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
        """Up to ``k`` ``{item_id, score, title}`` entries in order, leaving out None padding and ``exclude``."""
        out = []
        for item, score in zip(ids, scores):
            if item is None or str(item) in exclude:
                continue
            title = self.title(self.catalog_index[str(item)])
            out.append({"item_id": str(item), "score": finite(score), "title": title})
            if len(out) == k:
                break
        return out

    def add_details(self, item: dict[str, Any]) -> None:
        """Add ``media_type``, ``genres`` and ``year`` to a listed item (``details=true``)."""
        row = self.catalog.iloc[self.catalog_index[item["item_id"]]]
        item["media_type"] = str(row.get("media_type", "")) or None
        item["genres"] = split_values(row.get("genres", ""))
        item["year"] = str(row.get("year", "")) or None

    # ---- catalogue additions ----
    def replayable(self, stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored items this catalogue lacks and can take (see :func:`replayable`)."""
        return replayable(stored, self.catalog_index)

    def add_items(self, frame: pd.DataFrame,
                  search_vectors: Callable[[TextSearch], np.ndarray] | None = None) -> None:
        """Add ``frame`` to the catalogue: into the model when it can add items, else as listed-only items.

        ``search_vectors(search)``: the new items' vectors for the search index, when there is one.
        """
        with self.lock.write():
            if self.can_add:
                self.model.add_items(frame)
            else:
                self.extra_items = pd.concat([self.extra_items, frame], ignore_index=True).fillna("")
            self.refresh_catalog()
            self.pools.clear()
            self.similar_answers.clear()
            if self.search is not None and search_vectors is not None:
                self.search.add(search_vectors(self.search))

    def warm_similarity(self) -> None:
        """Build the model's similarity caches (unit vectors, norms) before the first request asks."""
        if self.n_model_items:
            self.model.similarity_rows(np.array([0]))


def load_state(model_dir: Path) -> ModelState:
    """A state over the model saved in ``model_dir`` (fingerprinted before it is read)."""
    version = current_version(model_dir)  # read once: the fingerprint and the files are of the same version
    folder = model_dir / VERSIONS_DIR / version if version else model_dir
    fingerprint = (version, *folder_fingerprint(folder)) if version else folder_fingerprint(model_dir)
    state = ModelState(Recommender.load(folder), model_dir, fingerprint)
    state.version = version
    return state


def is_model_folder(folder: Path) -> bool:
    """A folder a model can be loaded from (plain, or versioned with a readable pointer)."""
    try:
        return (resolve_model_folder(folder) / "config.json").exists()
    except (OSError, ValueError):
        return False


class FolderWatcher:
    """Polls a model folder and calls ``reload`` once a change has settled (two equal fingerprints in a row).

    ``current()`` gives the fingerprint of the model being served. A folder whose reload failed is tried
    again only once it changes again; the previous model keeps serving meanwhile.
    """

    def __init__(self, folder: Path, interval: float, current: Callable[[], tuple], reload: Callable[[], Any]) -> None:
        self.folder = folder
        self.interval = interval
        self.current = current
        self.reload = reload
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="avrec-model-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failed: tuple | None = None
        pending: tuple | None = None
        while not self._stop.wait(self.interval):
            try:
                fp = folder_fingerprint(self.folder)
            except (OSError, ValueError):  # a pointer being replaced or naming a missing version
                continue
            # a folder that stopped being a model folder (config.json deleted) is reloaded too: that fails,
            # and the failure (kept for /health and logged) says why the old model is still serving
            if fp == self.current() or fp == failed:
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
                log.error("reload of %s failed, still serving the previous model: %s", self.folder, e)
            pending = None
