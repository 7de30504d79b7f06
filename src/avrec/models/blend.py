"""Score fusion: per-user standardised scores mixed with weights tuned on validation NDCG.

Scores of different models live on different scales; standardising each row over the ranked items
makes a weighted sum meaningful. Items a component cannot score (NaN, for example a CF model on an item
without interactions) get the row mean, i.e. "no evidence either way".
"""

from __future__ import annotations

import numpy as np

from avrec.eval.validation import ValidationSet


def standardise(scores: np.ndarray) -> np.ndarray:
    """Row-wise z-scores; NaN entries become 0 (the row mean)."""
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
) -> tuple[list[float], float]:
    """Weights that maximise validation NDCG@k, by coordinate ascent over ``grid`` from equal weights.

    ``components`` are standardised score matrices over ``check``'s users and items. Each pass tries every
    grid value for one weight at a time with the others fixed; it stops when a pass changes nothing.
    """
    n = len(components)
    weights = [1.0] * n
    best = check.ndcg(fuse(components, weights), k)
    if n == 1:
        return weights, best
    for _ in range(passes):
        changed = False
        for j in range(n):
            for value in grid:
                if value == weights[j]:
                    continue
                trial = weights.copy()
                trial[j] = value
                if not any(trial):
                    continue
                score = check.ndcg(fuse(components, trial), k)
                if score > best + 1e-6:
                    weights, best, changed = trial, score, True
        if not changed:
            break
    return weights, best
