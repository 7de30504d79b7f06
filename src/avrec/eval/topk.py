"""Top-K selection over score rows: the one ranking primitive that evaluation, models and serving share.

Pure NumPy/SciPy, so every layer from evaluation up can use it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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


def rank_scores(
    scores: np.ndarray,
    k: int,
    exclude: sp.spmatrix | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K catalogue indices per row of ``scores``, leaving out ``exclude`` (users × catalogue).

    ``scores`` covers ``candidates`` (catalogue indices) when given, else the whole catalogue;
    non-finite scores rank last, excluded items never appear, and short rows are padded with -1.
    """
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
    return idx, val
