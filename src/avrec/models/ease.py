"""EASE (Steck, 2019): a closed-form item-item linear autoencoder, B = I - P / diag(P), P = (XᵀX + λI)⁻¹.

Strong on warm data and cheap for catalogues up to ~20k items (it holds a dense items × items matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from avrec.errors import ConfigError
from avrec.models.base import Recommender


@dataclass
class EASEConfig:
    l2: float = 500.0
    max_items: int = 30000


class EASE(Recommender):
    name = "ease"
    Config = EASEConfig

    def _fit(self, dataset, valid, valid_candidates) -> None:
        n = dataset.n_items
        if n > self.config.max_items:
            raise ConfigError(
                f"EASE needs a dense {n}×{n} matrix; raise ease max_items (now {self.config.max_items}) "
                "if you have the memory, or use als"
            )
        x = self.seen.astype(np.float64)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.config.l2
        p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        b = p / (-np.diag(p))
        b[np.diag_indices(n)] = 0.0
        self.weights = b.astype(np.float32)

    def _score(self, user_idx, item_idx):
        return self._score_history(self.seen[user_idx], item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx):
        w = self.weights if item_idx is None else self.weights[:, item_idx]
        return np.asarray(sp.csr_matrix(history, dtype=np.float32) @ w)

    def _item_vectors(self):
        return self.weights + self.weights.T

    def _state(self):
        return {"weights": self.weights}

    def _load_state(self, state):
        self.weights = state["weights"]
