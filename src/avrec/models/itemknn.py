"""Item-based kNN with cosine similarity (optionally shrunk), keeping the top neighbours per item."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.models.artifacts import csr_from_tensors, csr_to_tensors
from avrec.models.base import Capabilities, Recommender
from avrec.models.scale import Size, gb, over_budget

#: bytes per counted pair while fitting: the sparse product (index + value), its COO copy and the cosines
PAIR_BYTES = 24


def top_neighbours(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row of a sparse similarity matrix."""
    sim = sp.csr_matrix(sim)
    rows, cols, vals = [], [], []
    for r in range(sim.shape[0]):
        start, end = sim.indptr[r], sim.indptr[r + 1]
        if end == start:
            continue
        v = sim.data[start:end]
        c = sim.indices[start:end]
        if len(v) > k:
            keep = np.argpartition(-v, k - 1)[:k]
            v, c = v[keep], c[keep]
        rows.append(np.full(len(v), r))
        cols.append(c)
        vals.append(v)
    if not rows:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    coords = (np.concatenate(rows), np.concatenate(cols))
    return sp.csr_matrix((np.concatenate(vals), coords), shape=sim.shape, dtype=np.float32)


@dataclass
class ItemKNNConfig:
    neighbours: int = 100
    shrink: float = 10.0
    #: the most (user, item, item) co-occurrence triples (Σ over users of history length²) a fit may count
    max_pairs: float = 3e8


class ItemKNN(Recommender):
    name = "itemknn"
    CAPABILITIES = Capabilities(exact_fold_in=True)
    Config = ItemKNNConfig

    def _size_problem(self, size: Size) -> str | None:
        pairs, cap = size.pair_count(), self.config.max_pairs
        if pairs > cap:
            return (f"histories this long give up to {pairs:,.3g} item pairs to count (about "
                    f"{gb(pairs * PAIR_BYTES)} while fitting); the cap is max_pairs={cap:,.3g} "
                    f"({gb(cap * PAIR_BYTES)}); use als, seqknn or hybrid")
        return over_budget(f"{pairs:,.3g} item pairs", pairs * PAIR_BYTES, "use als, seqknn or hybrid")

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        x = sp.csc_matrix(self.seen, dtype=np.float32)
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        co = co.tocoo()
        denom = norms[co.row] * norms[co.col] + self.config.shrink
        sim = sp.csr_matrix((co.data / np.maximum(denom, 1e-9), (co.row, co.col)), shape=co.shape)
        # neighbours of item j (rows of sim.T) scored by a user's items: scores = X @ S with S[i, j] = sim(i, j)
        self.similarity = top_neighbours(sim, self.config.neighbours).T.tocsr()

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_history(self._fitted(self.seen)[user_idx], item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        # select columns of the (sparse, history-sized) product, never of the items × items similarity
        s = sp.csr_matrix(sp.csr_matrix(history, dtype=np.float32) @ self.similarity)
        return (s if item_idx is None else s[:, item_idx]).toarray()

    def _state(self) -> dict[str, np.ndarray]:
        return csr_to_tensors("similarity", self.similarity)

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.similarity = csr_from_tensors("similarity", state)
