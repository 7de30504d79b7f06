"""The one ``Recommender`` contract every avrec model implements.

Public API, id level: ``fit``, ``recommend``, ``recommend_history`` (fold-in of a user the model has not
seen), ``similar_items``, ``add_items``, ``save`` and ``load``. Index level, for other layers (pipeline,
explanations, serving): ``score_users``, ``score_histories``, ``item_vectors``, ``similarity_rows``,
``topk_indices``, ``topk_histories``, ``popular_topk``, ``history_matrix`` and ``ids_of``; what a model
can do is its :class:`Capabilities` value, never probed with ``hasattr``.

A model implements the hooks ``_fit`` and ``_score`` and, when it can, ``_score_history``,
``_item_vectors``, ``_similarity_rows``, ``_add_items`` and ``_state``/``_load_state``. The base class does
batching, seen-item exclusion, candidate restriction, top-K selection, the popularity fallback for
unknown users and the no-pickle artifact format (:mod:`avrec.models.artifacts`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, DataError, ScaleError
from avrec.eval.topk import rank_scores, topk_from_scores
from avrec.models import artifacts
from avrec.models.capabilities import Capabilities
from avrec.models.cooccurrence import cooccurrence_unit_rows
from avrec.models.scale import Size, score_batch_rows
from avrec.models.versions import is_home, resolve_model_folder

__all__ = ["Capabilities", "Recommender", "check_k", "rank_scores", "topk_from_scores"]
_T = TypeVar("_T")


def check_k(k: Any) -> None:
    """A ConfigError unless ``k`` is a whole number of at least 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a whole number of at least 1, not {k!r}")


class Recommender(ABC):
    """Base class and contract of every avrec model."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    #: the class's capabilities; a composite overrides :attr:`capabilities` to derive them from its parts
    CAPABILITIES: ClassVar[Capabilities] = Capabilities()

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

    @property
    def capabilities(self) -> Capabilities:
        return self.CAPABILITIES

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, dataset: Dataset, *, valid: Dataset | None = None,
            valid_candidates: np.ndarray | None = None) -> Self:
        """Train on ``dataset``; ``valid`` (same catalogue) lets a model early-stop or tune."""
        if dataset.n_interactions == 0:
            raise DataError(f"{dataset.name or 'dataset'}: no interactions to fit on")
        self.check_size(Size.of(dataset))
        self.items = dataset.items
        self.user_ids = dataset.user_ids
        self.seen = dataset.matrix(binary=True)
        self.popularity = np.asarray(self.seen.sum(axis=0)).ravel().astype(np.float32)
        self._clear_caches()
        self._fit(dataset, valid, valid_candidates)
        return self

    def check_size(self, size: Size) -> None:
        """A ScaleError, before anything is allocated, when this model cannot fit data of ``size`` here."""
        if problem := self._size_problem(size):
            raise ScaleError(f"{self.name}: {problem}")

    def _size_problem(self, size: Size) -> str | None:  # what a fit of ``size`` needs and what to use instead
        return None

    @abstractmethod
    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        """Learn parameters from the training interactions."""

    @abstractmethod
    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        """Scores (len(user_idx), n_items or len(item_idx)) for known users; higher is better."""

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        """Scores for users given only their histories (rows over the catalogue). Default: popularity."""
        return self.popularity_scores(history.shape[0], item_idx)

    def _item_vectors(self) -> np.ndarray | None:
        """Item vectors whose cosine similarity defines ``similar_items``; None for co-occurrence."""
        return None

    def _item_vector_dim(self) -> int | None:
        v = self._item_vectors()
        return None if v is None else int(np.shape(v)[1])

    def _add_items(self, new_items: pd.DataFrame) -> None:
        """Extend the model's item-side state with ``new_items`` (models with ``add_items`` capability)."""
        raise NotImplementedError

    def _clear_caches(self) -> None:
        self._item_index: dict[str, int] | None = None
        self._user_index: dict[str, int] | None = None
        self._unit_vectors: np.ndarray | sp.csr_matrix | None = None

    # ---- public scoring (index level) --------------------------------------------------------
    def score_users(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        """(len(user_idx), n_items or len(item_idx)) scores for users the model was trained on."""
        self._check_fitted()
        return np.asarray(self._score(np.asarray(user_idx, dtype=np.int64), item_idx), dtype=np.float32)

    def score_histories(self, history: sp.spmatrix, item_idx: np.ndarray | None = None) -> np.ndarray:
        """Scores for users given only their history rows (users × catalogue): the fold-in path."""
        self._check_fitted()
        return np.asarray(self._score_history(sp.csr_matrix(history, dtype=np.float32), item_idx), dtype=np.float32)

    def popularity_scores(self, n: int, item_idx: np.ndarray | None = None) -> np.ndarray:
        """The fallback score rows: training popularity, the same for every one of ``n`` users."""
        pop = self._fitted(self.popularity) if item_idx is None else self._fitted(self.popularity)[item_idx]
        return np.broadcast_to(pop.astype(np.float32), (n, len(pop))).copy()

    def item_vectors(self) -> np.ndarray | None:
        """(n_items, d) vectors whose cosine is the model's item similarity, or None when it has none.

        Models whose "vectors" are as wide as the catalogue (EASE) return None: see ``similarity_rows``.
        """
        self._check_fitted()
        if not self.capabilities.item_vectors:
            return None
        return self._item_vectors()

    def item_vector_dim(self) -> int | None:
        """Width of :meth:`item_vectors` without building them."""
        return self._item_vector_dim() if self.capabilities.item_vectors else None

    def similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), n_items) item-item similarities in the model's own terms."""
        self._check_fitted()
        return np.asarray(self._similarity_rows(np.asarray(idx, dtype=np.int64)), dtype=np.float32)

    def _similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        """Cosine of ``_item_vectors``, else co-occurrence cosine; the normalised matrix is cached."""
        if getattr(self, "_unit_vectors", None) is None:
            vectors = self._item_vectors()
            if vectors is not None:
                dense = np.asarray(vectors, dtype=np.float32)
                norms = np.linalg.norm(dense, axis=1, keepdims=True)
                self._unit_vectors = dense / np.where(norms > 0, norms, 1)
            else:
                self._unit_vectors = cooccurrence_unit_rows(self.seen)
        v: Any = self._unit_vectors  # dense (n_items, d) or sparse (n_items, n_users) unit rows
        if sp.issparse(v):
            return (v[idx] @ v.T).toarray()
        return v[idx] @ v.T

    # ---- id maps -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        self._fitted(self.items)

    def _fitted(self, value: _T | None) -> _T:  # a fitted attribute (items, seen, ...) narrowed from None
        if value is None:
            raise ConfigError(f"model {self.name!r} is not fitted: call fit() or load() first")
        return value

    @property
    def item_ids(self) -> np.ndarray:
        return self._fitted(self.items)["item_id"].to_numpy(dtype=object)

    @property
    def n_items(self) -> int:
        return len(self._fitted(self.items))

    @property
    def item_index(self) -> dict[str, int]:
        if getattr(self, "_item_index", None) is None:
            self._item_index = {i: n for n, i in enumerate(self.item_ids)}
        return cast(dict[str, int], self._item_index)

    @property
    def user_index(self) -> dict[str, int]:
        if getattr(self, "_user_index", None) is None:
            self._user_index = {u: n for n, u in enumerate(self._fitted(self.user_ids))}
        return cast(dict[str, int], self._user_index)

    def known_users(self, users: Collection[Any]) -> np.ndarray:
        """Boolean mask of the users the model was trained on."""
        index = self.user_index
        return np.fromiter((str(u) in index for u in users), dtype=bool, count=len(users))

    def items_to_index(self, item_ids: Collection[Any], what: str = "candidates") -> np.ndarray:
        """Catalogue indices of ``item_ids``; a DataError naming ``what`` for an unknown id."""
        index = self.item_index
        idx = np.fromiter((index.get(str(i), -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        if (idx < 0).any():
            bad = [str(i) for i, j in zip(item_ids, idx) if j < 0]
            raise DataError(f"{what}: {len(bad)} unknown item id(s), e.g. {bad[0]!r}")
        return idx

    def ids_of(self, idx: np.ndarray) -> np.ndarray:
        """Item ids for an index array of any shape; -1 (padding) becomes None."""
        ids = self.item_ids
        out = np.empty(idx.shape, dtype=object)
        valid = idx >= 0
        out[valid] = ids[idx[valid]]
        out[~valid] = None
        return out

    def history_matrix(self, histories: Collection[Iterable[Any]], what: str = "history") -> sp.csr_matrix:
        """Binary (len(histories), n_items) rows from lists of item ids: the one fold-in input."""
        rows, cols = [], []
        for r, history in enumerate(histories):
            idx = self.items_to_index(list(history), what=f"{what} {r}")
            rows.extend([r] * len(idx))
            cols.extend(idx.tolist())
        hist = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(histories), self.n_items))
        hist.sum_duplicates()
        hist.data[:] = 1.0
        return hist

    # ---- ranking (index level) ---------------------------------------------------------------
    def topk_indices(
        self,
        user_idx: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K item indices and scores for known users, in batches.

        ``exclude`` holds one row per entry of ``user_idx``: items to leave out. ``candidates``
        restricts the ranking to those item indices.
        """
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        out_idx = np.full((len(user_idx), k), -1, dtype=np.int64)
        out_val = np.full((len(user_idx), k), -np.inf, dtype=np.float32)
        batch_size = score_batch_rows(batch_size, self.n_items if candidates is None else len(candidates))
        for start in range(0, len(user_idx), batch_size):
            sl = slice(start, start + batch_size)
            scores = self.score_users(user_idx[sl], candidates)
            out_idx[sl], out_val[sl] = rank_scores(scores, k, exclude[sl] if exclude is not None else None, candidates)
        return out_idx, out_val

    def topk_histories(
        self, history: sp.spmatrix, k: int, *, exclude_seen: bool = True, candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K item indices and scores for users given as history rows (the history itself excluded)."""
        history = sp.csr_matrix(history, dtype=np.float32)
        scores = self.score_histories(history, candidates)
        return rank_scores(scores, k, history if exclude_seen else None, candidates)

    def popular_topk(self, n: int, k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fallback list for ``n`` users the model knows nothing about: most-interacted items first,
        ties in catalogue order (the same list on the CLI, over HTTP and in the library)."""
        pool = np.arange(self.n_items) if candidates is None else np.asarray(candidates, dtype=np.int64)
        pop = np.asarray(self._fitted(self.popularity), dtype=np.float32)[pool]
        order = np.argsort(-pop, kind="stable")[:k]
        idx = np.full(k, -1, dtype=np.int64)
        val = np.full(k, -np.inf, dtype=np.float32)
        idx[: len(order)], val[: len(order)] = pool[order], pop[order]
        return np.tile(idx, (n, 1)), np.tile(val, (n, 1))

    # ---- public API (ids) --------------------------------------------------------------------
    def recommend(
        self,
        users: Iterable[Any],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Iterable[Any] | None = None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K item ids and scores for each user, best first.

        Returns two (len(users), k) arrays; a row is padded with None / -inf when fewer items remain.
        Users the model has not seen get the most popular items (``popular_topk``); ``known_users``
        tells which those are.
        """
        self._check_fitted()
        check_k(k)
        users = [str(u) for u in users]
        cand_idx = None if candidates is None else np.unique(self.items_to_index(list(candidates)))
        uidx = np.fromiter((self.user_index.get(u, -1) for u in users), dtype=np.int64, count=len(users))
        out_idx = np.full((len(users), k), -1, dtype=np.int64)
        out_val = np.full((len(users), k), -np.inf, dtype=np.float32)
        known = np.flatnonzero(uidx >= 0)
        if len(known):
            exclude = self._fitted(self.seen)[uidx[known]] if exclude_seen else None
            out_idx[known], out_val[known] = self.topk_indices(
                uidx[known], k, exclude=exclude, candidates=cand_idx, batch_size=batch_size
            )
        unknown = np.flatnonzero(uidx < 0)
        if len(unknown):
            out_idx[unknown], out_val[unknown] = self.popular_topk(len(unknown), k, cand_idx)
        return self.ids_of(out_idx), out_val

    def recommend_history(
        self, histories: Collection[Iterable[Any]], k: int = 10, exclude_seen: bool = True,
        candidates: Iterable[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fold in users the model has not seen, each given as a list of item ids, without a retrain."""
        self._check_fitted()
        check_k(k)
        hist = self.history_matrix(histories)
        cand_idx = None if candidates is None else np.unique(self.items_to_index(list(candidates)))
        idx, val = self.topk_histories(hist, k, exclude_seen=exclude_seen, candidates=cand_idx)
        return self.ids_of(idx), val

    def similar_items(self, item_ids: Iterable[Any], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The K items most similar to each given item (the item itself excluded)."""
        self._check_fitted()
        check_k(k)
        idx = self.items_to_index(list(item_ids), what="items")
        scores = np.array(self.similarity_rows(idx), dtype=np.float32)
        scores[np.arange(len(idx)), idx] = -np.inf
        top, val = topk_from_scores(scores, k)
        return self.ids_of(top), val

    # ---- catalogue updates -------------------------------------------------------------------
    def add_items(self, new_items: pd.DataFrame) -> int:
        """Make new items recommendable without a retrain; returns how many were added."""
        from avrec.data.io import clean_items

        self._check_fitted()
        if not self.capabilities.add_items:
            raise ConfigError(
                f"model {self.name!r} cannot score items without interactions; "
                "use a content-aware model (tfidf, content, hybrid) to add items without a retrain"
            )
        new_items = clean_items(new_items, Path("new items"))
        clash = new_items["item_id"].isin(self.item_index)
        if clash.any():
            raise DataError(f"new items: item_id {new_items['item_id'][clash].iloc[0]!r} is already in the catalogue")
        self._add_items(new_items)
        self.items = pd.concat([self.items, new_items], ignore_index=True).fillna("")
        n_new = len(new_items)
        seen = self._fitted(self.seen)
        self.seen = sp.csr_matrix(sp.hstack([seen, sp.csr_matrix((seen.shape[0], n_new))]), dtype=np.float32)
        self.popularity = np.r_[self.popularity, np.zeros(n_new, np.float32)]
        self._clear_caches()
        return n_new

    def set_interactions(self, seen: sp.spmatrix, new_user_ids: Iterable[Any] = ()) -> None:
        """Replace the training matrix (users × items) with ``seen``, appending ``new_user_ids`` as its last rows.

        Seen items are excluded from lists and popularity follows. New users need ``exact_fold_in``: other
        models keep per-user parameters that only a retrain gives a new user.
        """
        self._check_fitted()
        new_ids = np.asarray(list(new_user_ids), dtype=object)
        if len(new_ids) and not self.capabilities.exact_fold_in:
            raise ConfigError(f"model {self.name!r} needs a retrain to take new users")
        seen = sp.csr_matrix(seen, dtype=np.float32)
        if seen.shape != (len(self._fitted(self.user_ids)) + len(new_ids), self.n_items):
            raise DataError(f"set_interactions: a {seen.shape} matrix does not fit {len(new_ids)} new user(s)")
        self.user_ids = np.r_[np.asarray(self.user_ids, dtype=object), new_ids].astype(object)
        self.seen = seen
        self.popularity = np.asarray(seen.sum(axis=0)).ravel().astype(np.float32)
        self._clear_caches()

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays that make up the fitted model (saved as safetensors)."""
        return {}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:  # noqa: B027 (optional hook, no-op default)
        """Restore from the arrays written by ``_state``."""

    def _save_extra(self, folder: Path) -> None:  # noqa: B027 (optional hook, no-op default)
        """Write files beyond the arrays (for example an ANN index)."""

    def _load_extra(self, folder: Path) -> None:  # noqa: B027 (optional hook, no-op default)
        """Read what ``_save_extra`` wrote."""

    def save(self, folder: str | Path) -> Path:
        """Write the fitted model as JSON + Parquet + safetensors (no pickle)."""
        self._check_fitted()
        folder = Path(folder)
        if is_home(folder):
            raise DataError(f"{folder}: holds model versions (avrec update); save to a new folder, or to "
                            "one of its versions/ through `avrec update`")
        artifacts.write_folder(self, folder, self._state())
        self._save_extra(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Recommender:
        """Load any saved avrec model; the concrete class comes from ``config.json``. A versioned folder
        (:mod:`avrec.models.versions`) loads its current version."""
        folder = resolve_model_folder(folder)
        model = artifacts.new_model_for(Path(folder), cls)
        model.items, model.user_ids, model.seen, model.popularity = artifacts.read_catalog(Path(folder))
        model._clear_caches()
        model._load_state(artifacts.read_state(Path(folder)))  # a missing array is a DataError naming the file
        model._load_extra(Path(folder))
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
