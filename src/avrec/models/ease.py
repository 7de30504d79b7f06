"""EASE (Steck, 2019): a closed-form item-item linear autoencoder, B = I - P / diag(P), P = (XᵀX + λI)⁻¹.

Strong on warm data and cheap for catalogues up to ~20k items (it holds a dense items × items matrix).
Similar items are by co-occurrence cosine (the base default): cosine over rows of W + Wᵀ cost ~34 ms a
request on 9.7k items, too slow to serve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError
from avrec.models.base import Capabilities, Recommender
from avrec.models.scale import Size, gb, over_budget


@dataclass
class EASEConfig:
    l2: float = 500.0
    max_items: int = 30000


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive-definite matrix through Cholesky (about half the work of LU)."""
    lapack = scipy.linalg.get_lapack_funcs(("potrf", "potri"), (a,))
    factor, info = lapack[0](a, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        return scipy.linalg.inv(a)
    inv, info = lapack[1](factor, lower=False, overwrite_c=True)
    if info != 0:
        return scipy.linalg.inv(a)
    upper = np.triu(inv)
    return upper + np.triu(inv, 1).T


class EASE(Recommender):
    name = "ease"
    CAPABILITIES = Capabilities(exact_fold_in=True)
    Config = EASEConfig

    weights: np.ndarray  # (n_items, n_items), set by _fit / _load_state

    def _size_problem(self, size: Size) -> str | None:
        n, cap = size.n_items, self.config.max_items
        fitting = 3 * 4 * n * n  # the Gram matrix, its inverse and the weights, float32
        if n > cap:
            return (f"{n:,} items need a dense {n:,}×{n:,} item×item matrix ({gb(4 * n * n)}, about {gb(fitting)} "
                    f"while fitting, {n**3 / 3e12:,.3g} Tflop to invert); the cap is max_items={cap:,} "
                    f"({gb(12 * cap * cap)}); use als or hybrid")
        return over_budget(f"{n:,} items (a dense item×item matrix, three copies while fitting)", fitting,
                           "use als or hybrid")

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        # Items without interactions have B = 0, so the inverse is only needed over the active ones.
        active = np.flatnonzero(self._fitted(self.popularity) > 0)
        n = len(active)
        if n > self.config.max_items:
            raise ConfigError(
                f"EASE needs a dense {n}×{n} matrix; raise ease max_items (now {self.config.max_items}) "
                "if you have the memory, or use als"
            )
        x = sp.csc_matrix(self.seen, dtype=np.float32)[:, active]
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.config.l2
        p = _spd_inverse(gram)
        b = p / (-np.diag(p))
        b[np.diag_indices(n)] = 0.0
        weights = np.zeros((dataset.n_items, dataset.n_items), dtype=np.float32)
        weights[np.ix_(active, active)] = b
        self.weights = weights

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_history(self._fitted(self.seen)[user_idx], item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        # sparse history @ dense weights reads only the history's rows; the columns are selected from the
        # (users × items) product, never from the items × items matrix, which would copy it on every call
        scores = np.asarray(sp.csr_matrix(history, dtype=np.float32) @ self.weights)
        return scores if item_idx is None else scores[:, item_idx]

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = state["weights"]
