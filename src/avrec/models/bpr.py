"""Bayesian Personalised Ranking matrix factorisation through the ``implicit`` package.

implicit's SGD BPR first sits at popularity level, then learns personal structure, then degrades as it
keeps training (on ml-latest-small valid NDCG@10 peaks near epoch 50 at lr 0.01 and falls by a fifth by
epoch 120; see benchmarks/results/baselines_tuning.md). So when ``fit`` gets a validation set, the model
checks validation NDCG@10 every ``eval_every`` epochs and keeps the best epoch's factors
(``early_stopping``); without one it trains ``iterations`` epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.eval.validation import ValidationSet
from avrec.models.base import Capabilities, Recommender
from avrec.models.scale import Size, over_budget
from avrec.training import EarlyStopping


@dataclass
class BPRConfig:
    factors: int = 64
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 60
    seed: int = 2026
    #: with a validation set, keep the epoch with the best validation NDCG@10 (stop after ``patience`` worse checks)
    early_stopping: bool = True
    eval_every: int = 10
    patience: int = 3
    #: validation users sampled for the early-stopping check (0: all)
    eval_users: int = 2000


class _EarlyStop(Exception):
    pass


class BPR(Recommender):
    name = "bpr"
    CAPABILITIES = Capabilities(item_vectors=True)
    Config = BPRConfig

    def _size_problem(self, size: Size) -> str | None:
        need = 2 * 12.0 * size.n_interactions + 3 * 4.0 * (size.n_users + size.n_items) * (self.config.factors + 1)
        return over_budget(f"{size.n_interactions:,} interactions with {self.config.factors} factors", need,
                           "lower bpr factors")

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        model = BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed, num_threads=1,
        )
        self.best_iteration = c.iterations
        callback = None
        if c.early_stopping and valid is not None and valid.n_interactions > 0:
            check = ValidationSet.from_matrices(valid.matrix(binary=True), self.seen, valid_candidates,
                                                c.eval_users, c.seed)
            stopper = EarlyStopping(patience=c.patience, min_delta=0.0)
            best: dict = {"factors": None}

            def callback(epoch: int, elapsed: float, correct: int, skipped: int) -> None:
                done = epoch + 1
                if done % max(c.eval_every, 1) and done != c.iterations:
                    return
                items = model.item_factors if check.candidates is None else model.item_factors[check.candidates]
                if stopper.update(check.ndcg(model.user_factors[check.users] @ items.T), done):
                    best["factors"] = (model.user_factors.copy(), model.item_factors.copy())
                if stopper.stopped:
                    raise _EarlyStop

        try:
            model.fit(self.seen, show_progress=False, callback=callback)
        except _EarlyStop:
            pass
        if callback is not None and best["factors"] is not None:
            user_factors, item_factors = best["factors"]
            self.best_iteration = stopper.best_step
            self.valid_ndcg = stopper.best_score
        else:
            user_factors, item_factors = model.user_factors, model.item_factors
        self.user_factors = np.asarray(user_factors, dtype=np.float32)
        self.item_factors = np.asarray(item_factors, dtype=np.float32)

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        items = self.item_factors if item_idx is None else self.item_factors[item_idx]
        return self.user_factors[user_idx] @ items.T

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        """Fold-in: a new user's vector is the mean of its items' factors (the bias column kept at 1)."""
        history = sp.csr_matrix(history, dtype=np.float32)
        counts = np.maximum(np.asarray(history.sum(axis=1)), 1)
        users = np.asarray(history @ self.item_factors) / counts
        users[:, -1] = 1.0  # implicit's BPR stores the item bias in the last factor, paired with a user 1
        items = self.item_factors if item_idx is None else self.item_factors[item_idx]
        return users @ items.T

    def _item_vectors(self) -> np.ndarray | None:
        return self.item_factors[:, :-1]

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
