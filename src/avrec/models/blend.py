"""Score fusion: per-user standardised scores mixed with weights tuned on validation NDCG.

Scores of different models live on different scales; standardising each row over the ranked items
makes a weighted sum meaningful. Items a component cannot score (NaN, for example a CF model on an item
without interactions) get the row mean, i.e. "no evidence either way".
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from avrec.eval.metrics import per_user_metrics
from avrec.models.base import topk_from_scores


def standardise(scores: np.ndarray) -> np.ndarray:
    """Row-wise z-scores; NaN entries become 0 (the row mean)."""
    s = np.asarray(scores, dtype=np.float32)
    mean = np.nanmean(s, axis=1, keepdims=True)
    std = np.nanstd(s, axis=1, keepdims=True)
    z = (s - mean) / np.where(std > 1e-12, std, 1.0)
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


def fuse(components: list[np.ndarray], weights: list[float]) -> np.ndarray:
    out = np.zeros_like(components[0], dtype=np.float32)
    for z, w in zip(components, weights):
        if w:
            out += np.float32(w) * z
    return out


def ndcg_of(scores: np.ndarray, exclude: sp.csr_matrix | None, truth: sp.csr_matrix, k: int = 10) -> float:
    s = scores.copy()
    if exclude is not None:
        r, c = exclude.nonzero()
        s[r, c] = -np.inf
    top, _ = topk_from_scores(s, k)
    return float(per_user_metrics(top, truth, k)["ndcg"].mean())


def tune_weights(
    components: list[np.ndarray],
    exclude: sp.csr_matrix | None,
    truth: sp.csr_matrix,
    grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    k: int = 10,
) -> tuple[list[float], float]:
    """Best weights on validation NDCG@k; the first component's weight is 1 (or 0 when the others win alone).

    ``components`` are standardised score matrices over the same users and items.
    """
    n = len(components)
    if n == 1:
        return [1.0], ndcg_of(components[0], exclude, truth, k)
    best_w, best = None, -1.0
    for first in (1.0, 0.0):
        for rest in itertools.product(grid, repeat=n - 1):
            if first == 0.0 and (sum(rest) == 0 or max(rest) != 1.0):
                continue  # without the first component only the direction matters: normalise to max 1
            w = [first, *rest]
            score = ndcg_of(fuse(components, w), exclude, truth, k)
            if score > best + 1e-9:
                best_w, best = w, score
    return best_w, best
