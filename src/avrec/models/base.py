"""The one ``Recommender`` protocol every avrec model implements.

Public API (external string ids): ``fit``, ``recommend``, ``recommend_history`` (fold-in of a user the
model has not seen), ``similar_items``, ``add_items``, ``save`` and ``load``.

A model implements the index-level hooks: ``_fit``, ``_score`` (users × items scores) and, when it can,
``_score_history`` and ``_item_vectors``. The base class does batching, seen-item exclusion, candidate
restriction, top-K selection, fallbacks for unknown users and the no-pickle artifact format:
``config.json`` + ``catalog/`` (items, users, training matrix) + ``model.safetensors``.
"""

from __future__ import annotations

import json
import platform
from abc import ABC, abstractmethod
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, DataError

FORMAT_VERSION = 1


def topk_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the K best columns per row, best first; -inf entries become -1."""
    n, m = scores.shape
    k_eff = min(k, m)
    if k_eff == 0:
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    val = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    idx[~np.isfinite(val) & (val < 0)] = -1
    if k_eff < k:
        idx = np.pad(idx, ((0, 0), (0, k - k_eff)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return idx, val


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a whole number of at least 1, not {k!r}")


def csr_to_tensors(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(m)
    return {
        f"{prefix}.indptr": m.indptr.astype(np.int64),
        f"{prefix}.indices": m.indices.astype(np.int32),
        f"{prefix}.data": m.data.astype(np.float32),
        f"{prefix}.shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_tensors(prefix: str, t: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(s) for s in t[f"{prefix}.shape"])
    return sp.csr_matrix((t[f"{prefix}.data"], t[f"{prefix}.indices"], t[f"{prefix}.indptr"]), shape=shape)


class Recommender(ABC):
    """Base class and protocol of every avrec model."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    #: True when the model can score items that have no interactions (content-aware models).
    scores_cold_items: ClassVar[bool] = False

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        from avrec.config import apply_overrides

        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            # typed and checked like --set values: unknown keys give a ConfigError listing the valid ones
            config = apply_overrides(self.Config(), config) if is_dataclass(self.Config) else self.Config(**config)
        if overrides:
            config = apply_overrides(config, overrides)
        self.config = config
        self.items: pd.DataFrame | None = None
        self.user_ids: np.ndarray | None = None
        self.seen: sp.csr_matrix | None = None
        self.popularity: np.ndarray | None = None

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, dataset: Dataset, *, valid: Dataset | None = None, valid_candidates: np.ndarray | None = None):
        """Train on ``dataset``; ``valid`` (same catalogue) lets a model early-stop or tune."""
        if dataset.n_interactions == 0:
            raise DataError(f"{dataset.name or 'dataset'}: no interactions to fit on")
        self.items = dataset.items
        self.user_ids = dataset.user_ids
        self.seen = dataset.matrix(binary=True)
        self.popularity = np.asarray(self.seen.sum(axis=0)).ravel().astype(np.float32)
        self._clear_caches()
        self._fit(dataset, valid, valid_candidates)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        """Learn parameters from the training interactions."""

    @abstractmethod
    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        """Scores (len(user_idx), n_items or len(item_idx)) for known users; higher is better."""

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        """Scores for users given only their histories (rows over the catalogue). Default: popularity."""
        return self._popularity_scores(history.shape[0], item_idx)

    def _item_vectors(self) -> np.ndarray | None:
        """Item vectors whose cosine similarity defines ``similar_items``; None for co-occurrence."""
        return None

    def _item_vector_dim(self) -> int | None:
        """Width of ``_item_vectors()`` without building them (None: the model has none)."""
        v = self._item_vectors()
        return None if v is None else int(np.shape(v)[1])

    def _add_items(self, new_items: pd.DataFrame) -> None:
        raise ConfigError(
            f"model {self.name!r} cannot score items without interactions; "
            "use a content-aware model (tfidf, content, hybrid) to add items without a retrain"
        )

    def _clear_caches(self) -> None:
        self._item_index: dict[str, int] | None = None
        self._user_index: dict[str, int] | None = None
        self._unit_vectors: np.ndarray | sp.csr_matrix | None = None

    def _popularity_scores(self, n: int, item_idx: np.ndarray | None) -> np.ndarray:
        pop = self.popularity if item_idx is None else self.popularity[item_idx]
        return np.broadcast_to(pop.astype(np.float32), (n, len(pop))).copy()

    # ---- id maps -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.items is None:
            raise ConfigError(f"model {self.name!r} is not fitted: call fit() or load() first")

    @property
    def item_ids(self) -> np.ndarray:
        self._check_fitted()
        return self.items["item_id"].to_numpy(dtype=object)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items)

    @property
    def item_index(self) -> dict[str, int]:
        if getattr(self, "_item_index", None) is None:
            self._item_index = {i: n for n, i in enumerate(self.item_ids)}
        return self._item_index

    @property
    def user_index(self) -> dict[str, int]:
        if getattr(self, "_user_index", None) is None:
            self._user_index = {u: n for n, u in enumerate(self.user_ids)}
        return self._user_index

    def known_users(self, users) -> np.ndarray:
        """Boolean mask of the users the model was trained on."""
        index = self.user_index
        return np.fromiter((str(u) in index for u in users), dtype=bool, count=len(users))

    def _items_to_index(self, item_ids, what: str = "candidates") -> np.ndarray:
        index = self.item_index
        idx = np.fromiter((index.get(str(i), -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        if (idx < 0).any():
            bad = [str(i) for i, j in zip(item_ids, idx) if j < 0]
            raise DataError(f"{what}: {len(bad)} unknown item id(s), e.g. {bad[0]!r}")
        return idx

    # ---- ranking -----------------------------------------------------------------------------
    def topk_indices(
        self,
        user_idx: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K item indices and scores for known users (index level; used by evaluation).

        ``exclude`` holds one row per entry of ``user_idx``: items to leave out. ``candidates``
        restricts the ranking to those item indices.
        """
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        out_idx = np.full((len(user_idx), k), -1, dtype=np.int64)
        out_val = np.full((len(user_idx), k), -np.inf, dtype=np.float32)
        for start in range(0, len(user_idx), batch_size):
            sl = slice(start, start + batch_size)
            scores = np.asarray(self._score(user_idx[sl], candidates), dtype=np.float32)
            self._rank_into(scores, exclude[sl] if exclude is not None else None, candidates, k, out_idx[sl], out_val[sl])
        return out_idx, out_val

    @staticmethod
    def _rank_into(scores, exclude, candidates, k, out_idx, out_val) -> None:
        scores = np.array(scores, dtype=np.float32, copy=True)
        scores[~np.isfinite(scores)] = np.float32(-1e30)
        if exclude is not None:
            ex = sp.csr_matrix(exclude)
            if candidates is not None:
                ex = ex[:, candidates]
            rows, cols = ex.nonzero()
            scores[rows, cols] = -np.inf
        idx, val = topk_from_scores(scores, k)
        if candidates is not None:
            idx = np.where(idx >= 0, np.asarray(candidates)[np.maximum(idx, 0)], -1)
        out_idx[:] = idx
        out_val[:] = val

    def recommend(
        self,
        users,
        k: int = 10,
        exclude_seen: bool = True,
        candidates=None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K item ids and scores for each user, best first.

        Returns two (len(users), k) arrays; a row is padded with None / -inf when fewer items remain.
        Users the model has not seen get the ``_score_history`` fallback with an empty history
        (popularity for most models); ``known_users`` tells which those are.
        """
        self._check_fitted()
        _check_k(k)
        users = [str(u) for u in users]
        cand_idx = None if candidates is None else np.unique(self._items_to_index(list(candidates)))
        uidx = np.fromiter((self.user_index.get(u, -1) for u in users), dtype=np.int64, count=len(users))
        out_idx = np.full((len(users), k), -1, dtype=np.int64)
        out_val = np.full((len(users), k), -np.inf, dtype=np.float32)
        known = np.flatnonzero(uidx >= 0)
        if len(known):
            exclude = self.seen[uidx[known]] if exclude_seen else None
            out_idx[known], out_val[known] = self.topk_indices(
                uidx[known], k, exclude=exclude, candidates=cand_idx, batch_size=batch_size
            )
        unknown = np.flatnonzero(uidx < 0)
        if len(unknown):
            empty = sp.csr_matrix((len(unknown), self.n_items), dtype=np.float32)
            scores = np.asarray(self._score_history(empty, cand_idx), dtype=np.float32)
            idx = np.empty((len(unknown), k), dtype=np.int64)
            val = np.empty((len(unknown), k), dtype=np.float32)
            self._rank_into(scores, None, cand_idx, k, idx, val)  # fancy-indexed rows are copies: fill, then assign
            out_idx[unknown], out_val[unknown] = idx, val
        return self._to_ids(out_idx), out_val

    def recommend_history(
        self, histories, k: int = 10, exclude_seen: bool = True, candidates=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fold in users the model has not seen, each given as a list of item ids, without a retrain."""
        self._check_fitted()
        _check_k(k)
        rows, cols = [], []
        for r, history in enumerate(histories):
            idx = self._items_to_index(list(history), what=f"history {r}")
            rows.extend([r] * len(idx))
            cols.extend(idx.tolist())
        hist = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(histories), self.n_items))
        hist.sum_duplicates()
        hist.data[:] = 1.0
        cand_idx = None if candidates is None else np.unique(self._items_to_index(list(candidates)))
        scores = np.asarray(self._score_history(hist, cand_idx), dtype=np.float32)
        out_idx = np.full((len(histories), k), -1, dtype=np.int64)
        out_val = np.full((len(histories), k), -np.inf, dtype=np.float32)
        self._rank_into(scores, hist if exclude_seen else None, cand_idx, k, out_idx, out_val)
        return self._to_ids(out_idx), out_val

    def similar_items(self, item_ids, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The K items most similar to each given item (the item itself excluded)."""
        self._check_fitted()
        _check_k(k)
        idx = self._items_to_index(list(item_ids), what="items")
        scores = np.array(self._similarity_rows(idx), dtype=np.float32)
        scores[np.arange(len(idx)), idx] = -np.inf
        top, val = topk_from_scores(scores, k)
        return self._to_ids(top), val

    def _similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), n_items) similarities: cosine of ``_item_vectors``, else co-occurrence cosine.

        The normalised matrix is built once and cached (cleared by ``_clear_caches``), not per call.
        """
        if getattr(self, "_unit_vectors", None) is None:
            vectors = self._item_vectors()
            if vectors is not None:
                v = np.asarray(vectors, dtype=np.float32)
                norms = np.linalg.norm(v, axis=1, keepdims=True)
                self._unit_vectors = v / np.where(norms > 0, norms, 1)
            else:
                x = sp.csr_matrix(self.seen.T, dtype=np.float32)
                norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
                self._unit_vectors = sp.csr_matrix(sp.diags(1 / np.where(norms > 0, norms, 1)) @ x)
        v = self._unit_vectors
        if sp.issparse(v):
            return (v[idx] @ v.T).toarray()
        return v[idx] @ v.T

    def _to_ids(self, idx: np.ndarray) -> np.ndarray:
        ids = self.item_ids
        out = np.empty(idx.shape, dtype=object)
        valid = idx >= 0
        out[valid] = ids[idx[valid]]
        out[~valid] = None
        return out

    # ---- catalogue updates -------------------------------------------------------------------
    def add_items(self, new_items: pd.DataFrame) -> int:
        """Make new items recommendable without a retrain; returns how many were added."""
        from avrec.data.io import clean_items

        self._check_fitted()
        new_items = clean_items(new_items, Path("new items"))
        clash = new_items["item_id"].isin(self.item_index)
        if clash.any():
            raise DataError(f"new items: item_id {new_items['item_id'][clash].iloc[0]!r} is already in the catalogue")
        self._add_items(new_items)
        n_old = self.n_items
        self.items = pd.concat([self.items, new_items], ignore_index=True).fillna("")
        n_new = len(new_items)
        self.seen = sp.csr_matrix(sp.hstack([self.seen, sp.csr_matrix((self.seen.shape[0], n_new))]), dtype=np.float32)
        self.popularity = np.r_[self.popularity, np.zeros(n_new, np.float32)]
        self._clear_caches()
        assert self.n_items == n_old + n_new
        return n_new

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays that make up the fitted model (saved as safetensors)."""
        return {}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from the arrays written by ``_state``."""

    def _save_extra(self, folder: Path) -> None:
        """Write files beyond the arrays (for example an ANN index)."""

    def _load_extra(self, folder: Path) -> None:
        """Read what ``_save_extra`` wrote."""

    def save(self, folder: str | Path) -> Path:
        """Write the fitted model as JSON + Parquet + safetensors (no pickle)."""
        from avrec import __version__

        self._check_fitted()
        folder = Path(folder)
        (folder / "catalog").mkdir(parents=True, exist_ok=True)
        config = asdict(self.config) if is_dataclass(self.config) else {}
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "config": config,
            "avrec_version": __version__,
            "python": platform.python_version(),
            "n_items": self.n_items,
            "n_users": len(self.user_ids),
        }
        (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        self.items.astype(str).to_parquet(folder / "catalog" / "items.parquet", index=False)
        pd.DataFrame({"user_id": self.user_ids.astype(str)}).to_parquet(folder / "catalog" / "users.parquet", index=False)
        base = csr_to_tensors("seen", self.seen)
        base["popularity"] = self.popularity.astype(np.float32)
        save_file(base, str(folder / "catalog" / "train.safetensors"))
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(state, str(folder / "model.safetensors"))
        self._save_extra(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Recommender:
        """Load any saved avrec model; the concrete class comes from ``config.json``."""
        from avrec.models.registry import get_model_class

        folder = Path(folder)
        meta_path = folder / "config.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: not a model folder (no config.json); create one with `avrec fit`")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        model_cls = get_model_class(meta["model"])
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise ConfigError(f"{folder} holds a {meta['model']!r} model, not {cls.name!r}")
        known = {f.name for f in fields(model_cls.Config)} if is_dataclass(model_cls.Config) else set()
        model = model_cls({k: v for k, v in meta["config"].items() if k in known})
        model.items = pd.read_parquet(folder / "catalog" / "items.parquet").fillna("")
        model.user_ids = pd.read_parquet(folder / "catalog" / "users.parquet")["user_id"].to_numpy(dtype=object)
        base = load_file(str(folder / "catalog" / "train.safetensors"))
        model.seen = csr_from_tensors("seen", base)
        model.popularity = base["popularity"]
        model._clear_caches()
        model._load_state(load_file(str(folder / "model.safetensors")))
        model._load_extra(folder)
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
