"""``seqknn``: items that the same users consume close together in time.

EASE and item kNN read a history as a set. The order of a log carries signal of its own: a rating
session walks through related titles, a listening session stays in one scene, an episode follows the
one before. ``seqknn`` counts, for every pair of items, how often one user consumed them within
``window`` steps of each other (each pair weighs ``decay`` ** (distance - 1)), divides the counts by
(n_i · n_j) ** ``alpha`` (n = the items' user counts), keeps the ``neighbours`` strongest per item, and
scores a history by the sum of its items' rows. Given a validation part it picks the window there.
Needs timestamps: without them it does not apply (and the hybrid leaves it out).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import NotApplicable
from avrec.eval.validation import ValidationSet
from avrec.models.artifacts import csr_from_tensors, csr_to_tensors
from avrec.models.base import Capabilities, Recommender
from avrec.models.scale import Size, batched_ndcg, over_budget


@dataclass
class SeqKNNConfig:
    window: int = 10
    decay: float = 0.8
    alpha: float = 0.5
    neighbours: int = 500
    window_grid: list[int] = field(default_factory=lambda: [3, 10, 30])  # tried on a validation part


def sequence_similarity(dataset: Dataset, window: int, decay: float, alpha: float, neighbours: int) -> sp.csr_matrix:
    """The symmetric item × item matrix of decayed within-window co-consumption counts, normalised."""
    order = np.lexsort((dataset.timestamp, dataset.user_idx))
    users, items = dataset.user_idx[order], dataset.item_idx[order]
    rows, cols, vals = [], [], []
    for distance in range(1, window + 1):
        same = users[:-distance] == users[distance:]
        if not same.any():
            break
        rows.append(items[:-distance][same])
        cols.append(items[distance:][same])
        vals.append(np.full(int(same.sum()), decay ** (distance - 1), np.float32))
    n = dataset.n_items
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    counts = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    counts = counts + counts.T
    counts.setdiag(0)
    counts.eliminate_zeros()
    popularity = np.asarray((dataset.matrix(binary=True) > 0).sum(axis=0)).ravel().astype(np.float32)
    scale = sp.diags(1.0 / np.maximum(popularity, 1.0) ** alpha).astype(np.float32)
    return _top_per_row(sp.csr_matrix(scale @ counts @ scale, dtype=np.float32), neighbours)


def _top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (memory stays linear in the catalogue)."""
    lengths = np.diff(m.indptr)
    if k <= 0 or lengths.max(initial=0) <= k:
        return m
    keep = np.ones(m.nnz, dtype=bool)
    for r in np.flatnonzero(lengths > k):
        start, end = m.indptr[r], m.indptr[r + 1]
        drop = np.argsort(-m.data[start:end])[k:]
        keep[start + drop] = False
    kept_per_row = np.bincount(np.repeat(np.arange(m.shape[0]), lengths)[keep], minlength=m.shape[0])
    return sp.csr_matrix((m.data[keep], m.indices[keep], np.r_[0, np.cumsum(kept_per_row)]), shape=m.shape)


class SeqKNN(Recommender):
    name = "seqknn"
    CAPABILITIES = Capabilities(exact_fold_in=True)
    Config = SeqKNNConfig

    def fit_bytes(self, size: Size) -> float:
        """Planned peak of a fit: per event and window step the pair's row, column and value, concatenated,
        then CSR and its transpose; the kept neighbours (at most the pairs seen)."""
        window = max([self.config.window, *self.config.window_grid])
        kept = min(size.n_items * self.config.neighbours, 2 * size.n_interactions * window)
        return 40.0 * size.n_interactions * window + 8.0 * kept

    def _size_problem(self, size: Size) -> str | None:
        window = max([self.config.window, *self.config.window_grid])
        return over_budget(f"{size.n_interactions:,} events within a window of {window}", self.fit_bytes(size),
                           "lower seqknn window and window_grid, or use als")

    def _similarity(self, dataset: Dataset, window: int) -> sp.csr_matrix:
        c = self.config
        return sequence_similarity(dataset, window, c.decay, c.alpha, c.neighbours)

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        if not dataset.has_timestamps:
            raise NotApplicable("seqknn: the interactions have no timestamps, so there is no order to learn from")
        window = self.config.window
        if valid is not None and valid.n_interactions and valid_candidates is None:
            seen = dataset.matrix(binary=True)
            check = ValidationSet.from_matrices(valid.matrix(binary=True)[:, : seen.shape[1]], seen,
                                                max_users=3000, seed=0)
            if len(check):
                tried = {}
                for w in self.config.window_grid:  # scored in user batches: users × catalogue stays bounded
                    sim = self._similarity(dataset, w)

                    def scores(rows: np.ndarray, s: sp.csr_matrix = sim) -> np.ndarray:
                        return np.asarray((seen[check.users[rows]] @ s).toarray())

                    tried[w] = batched_ndcg(check, scores, seen.shape[1])
                    del sim
                window = max(tried, key=lambda w: (tried[w], -w))
                self.tuning = {"valid_ndcg@10": tried}
        self.config = replace(self.config, window=int(window))
        self.similarity = self._similarity(dataset, self.config.window)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        # the (history-sized) product first, then its columns: never a column slice of the item × item matrix
        s = sp.csr_matrix(sp.csr_matrix(history, dtype=np.float32) @ self.similarity)
        return np.asarray((s if item_idx is None else s[:, item_idx]).todense())

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_history(self._fitted(self.seen)[user_idx], item_idx)

    def _similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        return self.similarity[idx].toarray()

    def _state(self) -> dict[str, np.ndarray]:
        return csr_to_tensors("similarity", self.similarity)

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.similarity = csr_from_tensors("similarity", state)


__all__ = ["SeqKNN", "SeqKNNConfig", "sequence_similarity"]
