"""Bayesian Personalised Ranking matrix factorisation through the ``implicit`` package."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from avrec.models.base import Recommender


@dataclass
class BPRConfig:
    factors: int = 64
    learning_rate: float = 0.05
    regularization: float = 0.002
    iterations: int = 200
    seed: int = 2026


class BPR(Recommender):
    name = "bpr"
    Config = BPRConfig

    def _fit(self, dataset, valid, valid_candidates) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        model = BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed, num_threads=1,
        )
        model.fit(self.seen, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _score(self, user_idx, item_idx):
        items = self.item_factors if item_idx is None else self.item_factors[item_idx]
        return self.user_factors[user_idx] @ items.T

    def _score_history(self, history, item_idx):
        """Fold-in: a new user's vector is the mean of its items' factors (the bias column kept at 1)."""
        history = sp.csr_matrix(history, dtype=np.float32)
        counts = np.maximum(np.asarray(history.sum(axis=1)), 1)
        users = np.asarray(history @ self.item_factors) / counts
        users[:, -1] = 1.0  # implicit's BPR stores the item bias in the last factor, paired with a user 1
        items = self.item_factors if item_idx is None else self.item_factors[item_idx]
        return users @ items.T

    def _item_vectors(self):
        return self.item_factors[:, :-1]

    def _state(self):
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state):
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
