"""Validation during training and tuning: which users, what to exclude, and NDCG@K of score rows.

One home for what early stopping (BPR, the hybrid's towers, the cross-encoder) and weight tuning
(the hybrid's fusion, the pipeline's blend and MMR) measure, so they all sample users the same way and
rank under the evaluation protocol's exclusions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from avrec.eval.metrics import per_user_metrics
from avrec.eval.topk import rank_scores


def sample_users(users: np.ndarray, max_users: int, seed: int) -> np.ndarray:
    """At most ``max_users`` of ``users`` (0: all), drawn without replacement with ``seed``, sorted."""
    users = np.asarray(users, dtype=np.int64)
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


@dataclass
class ValidationSet:
    """Validation users with their held-out items, their training items (excluded) and the candidates.

    ``users`` index the training matrix; ``truth`` and ``exclude`` have one row per entry of ``users``
    over the whole catalogue; ``candidates`` (catalogue indices) restricts ranking, as in the cold-item
    protocol. Score rows given to :meth:`ndcg` cover ``candidates`` when set, else the catalogue.
    """

    users: np.ndarray
    truth: sp.csr_matrix
    exclude: sp.csr_matrix | None
    candidates: np.ndarray | None = None

    @classmethod
    def from_matrices(cls, truth: sp.spmatrix, seen: sp.spmatrix | None, candidates: np.ndarray | None = None,
                      max_users: int = 0, seed: int = 0) -> ValidationSet:
        """Users with at least one held-out item in ``truth`` (users × catalogue), sampled to ``max_users``."""
        truth = sp.csr_matrix(truth)
        users = sample_users(np.flatnonzero(np.diff(truth.indptr) > 0), max_users, seed)
        exclude = None if seen is None else sp.csr_matrix(seen)[users]
        cands = None if candidates is None else np.asarray(candidates, dtype=np.int64)
        return cls(users, truth[users], exclude, cands)

    def __len__(self) -> int:
        return len(self.users)

    def ndcg(self, scores: np.ndarray, k: int = 10) -> float:
        """Mean NDCG@k of the rows of ``scores`` (0 when there are no users, as on tiny data)."""
        if len(self.users) == 0:
            return 0.0
        top, _ = rank_scores(scores, k, self.exclude, self.candidates)
        return float(per_user_metrics(top, self.truth, k)["ndcg"].mean())

    def ndcg_folds(self, scores: np.ndarray, k: int = 10, n_folds: int = 2, seed: int = 0) -> np.ndarray:
        """Mean NDCG@k on each of ``n_folds`` disjoint parts of this set, for tuning that must not chase noise.

        With candidates (cold items) the parts split the *items*, and each user ranks within each part: on a
        cold validation part a few popular items decide most of the NDCG, so a setting must help on items it
        was not lucky with. Without candidates the parts split the users.
        """
        if len(self.users) == 0:
            return np.zeros(n_folds)
        rng = np.random.default_rng(seed)
        out = []
        if self.candidates is None:
            fold_of = rng.permutation(len(self.users)) % n_folds
            per_user = per_user_metrics(rank_scores(scores, k, self.exclude, None)[0], self.truth, k)["ndcg"]
            return np.array([per_user[fold_of == f].mean() if (fold_of == f).any() else 0.0 for f in range(n_folds)])
        fold_of = rng.permutation(len(self.candidates)) % n_folds
        for f in range(n_folds):
            cols = np.flatnonzero(fold_of == f)
            cands = self.candidates[cols]
            rows = np.flatnonzero(np.diff(self.truth[:, cands].tocsr().indptr) > 0)
            if not len(rows):
                out.append(0.0)
                continue
            exclude = None if self.exclude is None else self.exclude[rows]
            top, _ = rank_scores(scores[rows][:, cols], k, exclude, cands)
            out.append(float(per_user_metrics(top, self.truth[rows], k)["ndcg"].mean()))
        return np.array(out)

    def ndcg_partitions(self, scores: np.ndarray, k: int = 10, partitions: int = 1, n_folds: int = 2) -> np.ndarray:
        """:meth:`ndcg_folds` of ``partitions`` independent random partitions (seeds 0, 1, ...), concatenated:
        a setting that must not lose on any of these folds has to hold on many splits of the data, not on
        one lucky split. ``partitions=1`` is exactly :meth:`ndcg_folds`."""
        return np.concatenate([self.ndcg_folds(scores, k, n_folds, seed) for seed in range(partitions)])
