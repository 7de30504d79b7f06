"""Re-ranking stages for exposure and calibration: :class:`Calibrate` (Steck 2018) and
:class:`PopularityPenalty` (propensity-style popularity debiasing), plus :func:`tune_strength`, which
picks the strongest setting whose validation NDCG@10 stays within a tolerance of the unchanged lists.

Calibrated re-ranking (Steck, "Calibrated recommendations", RecSys 2018): greedily build each list ``L``
maximising ``(1 − λ)·Σ_{i∈L} s(i) − λ·C_KL(p, q(L))``, with ``p`` the genre mix of the user's history,
``q(L)`` the mix of the list (:func:`avrec.eval.beyond.kl_miscalibration`, smoothed by α) and ``s`` the
retriever's scores min-max scaled to [0, 1] within the candidate list. λ = 0 keeps the order.

Popularity penalty: ``s'(i) = z(s)(i) − β·z(log(1 + pop(i)))``, both standardised over the candidate
list: the log form of inverse-propensity rescoring ``s / pop^β``. β = 0 keeps the order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.eval.beyond import item_distributions, user_mix, value_matrix
from avrec.pipeline.stages import Context, standardise


def _kl_rows(p: np.ndarray, q: np.ndarray, alpha: float) -> np.ndarray:
    """C_KL(p, q̃) for one p against many q rows (q̃ = (1 − α)·q + α·p)."""
    q_tilde = (1 - alpha) * q + alpha * p[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p[None, :] > 0, p[None, :] * np.log(p[None, :] / np.where(q_tilde > 0, q_tilde, 1.0)), 0.0)
    return terms.sum(axis=1)


def calibrated_list(cands: np.ndarray, scores: np.ndarray, p: np.ndarray, dist: np.ndarray, k: int, lam: float,
                    alpha: float = 0.01) -> np.ndarray:
    """Steck's greedy calibrated selection of up to ``k`` of ``cands`` (one list; -1 padded), given the
    user's mix ``p`` and the candidates' item mixes ``dist`` (one row per entry of ``cands``)."""
    ok = cands >= 0
    items, s, d = cands[ok], np.asarray(scores, dtype=np.float64)[ok], dist[ok]
    out = np.full(k, -1, dtype=np.int64)
    if not len(items):
        return out
    finite = np.isfinite(s)
    lo, hi = (s[finite].min(), s[finite].max()) if finite.any() else (0.0, 1.0)
    rel = np.where(finite, (s - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
    alive = np.ones(len(items), dtype=bool)
    mix_sum = np.zeros(dist.shape[1])
    rel_sum, n = 0.0, 0
    while n < min(k, len(items)):
        q = (mix_sum[None, :] + d) / (n + 1)  # the list's mix if each candidate were added (uniform weights)
        objective = (1 - lam) * (rel_sum + rel) - lam * _kl_rows(p, q, alpha)
        objective[~alive] = -np.inf
        j = int(np.argmax(objective))
        out[n], alive[j] = items[j], False
        mix_sum += d[j]
        rel_sum += rel[j]
        n += 1
    return out


def _reorder(candidates: np.ndarray, scores: np.ndarray, picks: np.ndarray,
             width: int) -> tuple[np.ndarray, np.ndarray]:
    """Lists that start with ``picks`` (in order, scored from the top down) followed by the rest."""
    out_c = np.full(candidates.shape, -1, dtype=np.int64)
    out_s = np.full(candidates.shape, -np.inf)
    for r in range(len(candidates)):
        head = [int(i) for i in picks[r] if i >= 0]
        used = set(head)
        rest = [int(i) for i in candidates[r] if i >= 0 and int(i) not in used]
        row = (head + rest)[:width]
        out_c[r, : len(row)] = row
        out_s[r, : len(row)] = -np.arange(len(row), dtype=np.float64)  # rank order: later stages keep it
    return out_c, out_s


@dataclass
class Calibrate:
    """Steck's calibrated re-ranking of the first ``depth`` entries of each list into the top ``ctx.k``.

    ``item_dist``: p(g | i) per catalogue item (dense, items × genres; :func:`genre_distributions`);
    ``history_rows(ctx)``: the users' history rows (users × items) for ``ctx``. Scores after this stage
    are rank-ordered (0, −1, −2, …).
    """

    lam: float
    depth: int
    item_dist: np.ndarray
    history_rows: Callable[[Context], sp.csr_matrix]
    alpha: float = 0.01

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.lam <= 0 or candidates.shape[1] == 0:
            return candidates, scores
        rows = sp.csr_matrix(self.history_rows(ctx), dtype=np.float64)
        rows.data[:] = 1.0
        p, has = user_mix(rows, sp.csr_matrix(self.item_dist))
        head = candidates[:, : self.depth]
        picks = np.full((len(candidates), ctx.k), -1, dtype=np.int64)
        for r in range(len(candidates)):
            if not has[r]:  # nothing to calibrate to: keep the order
                picks[r, : min(ctx.k, head.shape[1])] = head[r, : ctx.k]
                continue
            d = self.item_dist[np.maximum(head[r], 0)]
            picks[r] = calibrated_list(head[r], scores[r, : head.shape[1]], p[r], d, ctx.k, self.lam, self.alpha)
        return _reorder(candidates, scores, picks, candidates.shape[1])


@dataclass
class PopularityPenalty:
    """Rescore each list by ``z(score) − beta·z(log(1 + popularity))`` and sort (β = 0: unchanged)."""

    beta: float
    popularity: np.ndarray

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.beta <= 0 or candidates.shape[1] == 0:
            return candidates, scores
        valid = (candidates >= 0) & np.isfinite(scores)
        logpop = np.log1p(np.asarray(self.popularity, dtype=np.float64)[np.maximum(candidates, 0)])
        new = standardise(scores, valid) - self.beta * standardise(logpop, valid)
        new = np.where(candidates >= 0, new, -np.inf)
        order = np.argsort(-new, axis=1, kind="stable")
        return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(new, order, axis=1)


def genre_distributions(items: Any, column: str = "genres") -> np.ndarray:
    """Dense p(g | i) over ``column``'s values (items without a value: a zero row)."""
    values, _ = value_matrix(items, column)
    return np.asarray(item_distributions(values).toarray(), dtype=np.float64)


def tune_strength(evaluate: Callable[[float], float], grid: Sequence[float], tolerance: float = 0.02
                  ) -> dict[str, Any]:
    """The largest value of ``grid`` (sorted ascending; 0 = off) whose ``evaluate(value)`` (validation
    NDCG@10) is at least ``(1 − tolerance)`` times that of 0, with every value's score."""
    values = sorted(set([0.0, *map(float, grid)]))
    scores = {v: float(evaluate(v)) for v in values}
    floor = (1 - tolerance) * scores[0.0]
    chosen = max(v for v in values if scores[v] >= floor)
    return {"chosen": chosen, "baseline": scores[0.0], "tolerance": tolerance, "scores": scores}
