"""Score fusion: per-user standardised scores mixed with weights tuned on validation NDCG.

Scores of different models live on different scales; standardising each row over the ranked items
makes a weighted sum meaningful. Items a component cannot score (NaN, for example a CF model on an item
without interactions) get the row mean, i.e. "no evidence either way".

Two scalings (``SCALINGS``): ``z`` (row z-scores) keeps how far ahead a component's top items are;
``rank`` (Gaussian rank scores: each item's rank in the row mapped through the normal quantile, ties
sharing their mean rank) keeps only the order, so one component with a heavy tail (a few items scored
far above the rest) cannot take over the fused top of the list. The hybrid puts its towers' row on
``rank`` in the cold fusion (``cold_rank``): their tail on items without interactions is the least
trustworthy, while the sparse components' few high scores are their signal.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from avrec.eval.validation import ValidationSet
from avrec.training import coordinate_search

SCALINGS = ("z", "rank")


def standardise(scores: np.ndarray, scaling: str = "z") -> np.ndarray:
    """Row-wise z-scores (or Gaussian rank scores, ``scaling="rank"``); NaN entries become 0 (the row mean)."""
    if scaling == "rank":
        return rank_scores_normal(scores)
    s = np.asarray(scores, dtype=np.float32)
    if s.size == 0:
        return s.copy()
    if np.isnan(s).any():
        mean = np.nanmean(s, axis=1, keepdims=True)
        std = np.nanstd(s, axis=1, keepdims=True)
    else:  # the common case (a warm request); the NaN-aware reductions cost several times more
        mean = s.mean(axis=1, keepdims=True)
        std = s.std(axis=1, keepdims=True)
    z = (s - mean) / np.where(std > 1e-12, std, 1.0)
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


def rank_scores_normal(scores: np.ndarray) -> np.ndarray:
    """Row-wise Gaussian rank scores: ``Φ⁻¹((rank - ½) / n)`` over the row's finite entries (ties share
    their mean rank, so a constant row is all 0); NaN entries become 0."""
    s = np.asarray(scores, dtype=np.float64)
    out = np.zeros(s.shape, dtype=np.float32)
    if s.size == 0:
        return out
    finite = np.isfinite(s)
    if finite.all():
        out[:] = ndtri((rankdata(s, axis=1) - 0.5) / s.shape[1])
        return out
    for row in range(s.shape[0]):  # rare: rows with entries a component could not score
        cols = np.flatnonzero(finite[row])
        if len(cols):
            out[row, cols] = ndtri((rankdata(s[row, cols]) - 0.5) / len(cols))
    return out


def fuse(components: list[np.ndarray], weights: list[float]) -> np.ndarray:
    out = np.zeros_like(components[0], dtype=np.float32)
    for z, w in zip(components, weights):
        if w:
            out += np.float32(w) * z
    return out


def tune_weights(
    components: list[np.ndarray],
    check: ValidationSet,
    grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    k: int = 10,
    passes: int = 3,
    partitions: int = 1,
) -> tuple[list[float], float]:
    """Weights that maximise validation NDCG@k, by coordinate ascent over ``grid``.

    ``components`` are standardised score matrices over ``check``'s users and items. The search starts
    from the best of equal weights and each component alone, so the fused list is never worse on
    validation than the best single component (it falls back to that component when nothing beats it).
    A change must help on both halves of the validation data (``ValidationSet.ndcg_folds``), and on
    each of ``partitions`` independent random halvings, so the weights do not chase the luck of a few
    items (on a cold list a handful of popular items decide most of the NDCG).
    """
    n = len(components)
    if n == 1:
        return [1.0], check.ndcg(components[0], k)
    names = [str(j) for j in range(n)]
    starts = [dict.fromkeys(names, 1.0)] + [{m: float(m == name) for m in names} for name in names]
    params, best = coordinate_search(
        lambda w: check.ndcg_partitions(fuse(components, [w[m] for m in names]), k, partitions), starts,
        dict.fromkeys(names, grid), passes=passes, allowed=lambda w: any(w.values()),
    )
    return [params[m] for m in names], best
