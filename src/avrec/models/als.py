"""Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) through the ``implicit`` package."""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import DataError
from avrec.models.base import Capabilities, Recommender
from avrec.models.scale import Size, over_budget

_controller: Any = None


def _single_threaded_blas() -> AbstractContextManager[Any]:
    """Limit BLAS to one thread while implicit runs its own parallel loops (its documented advice).

    One cached controller: ``threadpool_limits`` rescans the loaded libraries on every call (about 1 ms,
    which was most of a served fold-in), the controller's ``limit`` does not (about 0.01 ms).
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


#: fold-ins of at least this many users run implicit's solver on every core
PARALLEL_FOLD_IN = 64


@dataclass
class ALSConfig:
    factors: int = 128
    regularization: float = 50.0
    alpha: float = 10.0
    iterations: int = 15
    seed: int = 2026
    use_weights: bool = True


class ALS(Recommender):
    name = "als"
    CAPABILITIES = Capabilities(item_vectors=True)
    Config = ALSConfig

    user_factors: np.ndarray
    item_factors: np.ndarray
    _model: Any  # implicit's AlternatingLeastSquares: the fitted one, or rebuilt for fold-in after load

    def _size_problem(self, size: Size) -> str | None:
        # the user × item matrix and implicit's transposed copy (index + value each), factors and their updates
        need = 2 * 12.0 * size.n_interactions + 3 * 4.0 * (size.n_users + size.n_items) * self.config.factors
        return over_budget(f"{size.n_interactions:,} interactions with {self.config.factors} factors", need,
                           "lower als factors")

    def _implicit_model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        with _single_threaded_blas():  # implicit warns (and slows down) when BLAS runs its own threads
            return AlternatingLeastSquares(
                factors=c.factors, regularization=c.regularization, alpha=c.alpha,
                iterations=c.iterations, random_state=c.seed, num_threads=0,
            )

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        x = dataset.matrix(binary=not self.config.use_weights).astype(np.float32)
        model = self._implicit_model()
        with _single_threaded_blas():
            model.fit(x, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self._model = model

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        items = self.item_factors if item_idx is None else self.item_factors[item_idx]
        return self.user_factors[user_idx] @ items.T

    def _fold_in_model(self, rows: int) -> Any:
        """implicit's model over the current factors for a fold-in of ``rows`` users: on one thread below
        :data:`PARALLEL_FOLD_IN` rows (a served user's solve takes about 1 ms; implicit's OpenMP loop over
        all cores made it 8 ms on 2 busy cores), else on every core."""
        if getattr(self, "_model", None) is None:
            self._model = self._implicit_model()
            self._model.user_factors = self.user_factors
            self._model.item_factors = self.item_factors
        if rows >= PARALLEL_FOLD_IN:
            return self._model
        single = getattr(self, "_single_thread", None)
        if single is None or single[0] is not self._model:  # a shallow copy: the same factors, one thread
            one = copy.copy(self._model)
            one.num_threads = 1
            single = self._single_thread = (self._model, one)
        return single[1]

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        """Fold-in: one ALS least-squares step for each new user, with the item factors fixed."""
        history = sp.csr_matrix(history, dtype=np.float32)
        with _single_threaded_blas():
            users = self._fold_in_model(history.shape[0]).recalculate_user(np.arange(history.shape[0]), history)
        items = self.item_factors if item_idx is None else self.item_factors[item_idx]
        return np.atleast_2d(users) @ items.T

    def warm_refit(self, seen: sp.spmatrix, new_user_ids: Any = (), new_items: pd.DataFrame | None = None,
                   iterations: int = 3) -> None:
        """Continue ALS from the current factors on a grown training matrix (the cheap continual update).

        ``seen`` is users × items over the old users then ``new_user_ids``, and the old items then
        ``new_items`` (catalogue rows in the folder format). New users start from their fold-in, new items
        from zero; then ``iterations`` full sweeps run on the binary matrix (``seen`` keeps no weights).
        """
        self._check_fitted()
        new_ids = np.asarray(list(new_user_ids), dtype=object)
        n_new_items = 0 if new_items is None else len(new_items)
        shape = (len(self._fitted(self.user_ids)) + len(new_ids), self.n_items + n_new_items)
        seen = sp.csr_matrix(seen, dtype=np.float32)
        if seen.shape != shape:
            raise DataError(f"warm_refit: a {seen.shape} matrix does not fit {len(new_ids)} new user(s) and "
                            f"{n_new_items} new item(s) ({shape})")
        items = np.vstack([self.item_factors, np.zeros((n_new_items, self.item_factors.shape[1]), np.float32)])
        users = self.user_factors
        if len(new_ids):  # new users start from their fold-in over the old items
            fold = self._implicit_model()
            fold.user_factors, fold.item_factors = users, items
            with _single_threaded_blas():
                extra = fold.recalculate_user(np.arange(len(new_ids)), seen[len(users):])
            users = np.vstack([users, np.atleast_2d(extra)])
        model = self._implicit_model()
        model.iterations = max(1, int(iterations))
        model.user_factors, model.item_factors = users.astype(np.float32), items.astype(np.float32)
        with _single_threaded_blas():
            model.fit(seen, show_progress=False)
        if new_items is not None and n_new_items:
            self.items = pd.concat([self._fitted(self.items), new_items], ignore_index=True).fillna("")
        self.user_ids = np.r_[np.asarray(self.user_ids, dtype=object), new_ids].astype(object)
        self.seen = seen
        self.popularity = np.asarray(seen.sum(axis=0)).ravel().astype(np.float32)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self._model = None
        self._clear_caches()

    def _item_vectors(self) -> np.ndarray | None:
        return self.item_factors

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
        self._model = None
