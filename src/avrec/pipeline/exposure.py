"""Tuning the exposure stages for serving: :func:`tune_exposure` picks the popularity penalty β and then the
calibration λ (with that β in place) on a validation part, each the largest value whose validation NDCG@10
(of β alone, then of β and λ together) stays within ``tolerance`` of the unchanged lists.

The model is one fitted on the split's train part; its validation lists are the top ``depth`` items
(training items excluded) of every user with validation items. ``avrec tune-rerank`` writes the result as
the ``[serve.rerank]`` table that ``avrec serve`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.pipeline.calibration import Calibrate, PopularityPenalty, genre_distributions, tune_strength
from avrec.pipeline.stages import Context

BETAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def validation_lists(model: Any, split: Any, depth: int) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix,
                                                                  np.ndarray, np.ndarray]:
    """(users, their validation rows, their training rows, top-``depth`` candidates, scores)."""
    truth = split.valid.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    train = split.train.matrix(binary=True)
    cands, scores = model.topk_indices(users, depth, exclude=train[users])
    return users, truth[users], train[users], cands, np.asarray(scores, dtype=np.float64)


def _measure(stages: Sequence[Any], lists: tuple, dist: sp.csr_matrix, tail: np.ndarray, k: int = 10) -> dict:
    from avrec.eval.beyond import exposure_counts, gini_index, long_tail_share, miscalibration
    from avrec.eval.metrics import per_user_metrics

    users, truth, history, cands, scores = lists
    ctx = Context(k, history=history)
    c, s = cands, scores
    for stage in stages:
        c, s = stage.apply(ctx, c, s)
    top = c[:, :k]
    kl, _ = miscalibration(top, history, dist)
    return {"ndcg@10": float(per_user_metrics(top, truth, k)["ndcg"].mean()), "tail@10": long_tail_share(top, tail),
            "gini@10": gini_index(exposure_counts(top, len(tail))), "miscal@10": float(kl)}


def tune_exposure(model: Any, split: Any, field: str = "genres", depth: int = 200, tolerance: float = 0.02,
                  betas: Sequence[float] = BETAS, lambdas: Sequence[float] = LAMBDAS) -> dict[str, Any]:
    """β, then λ, tuned on ``split.valid`` for ``model`` (fitted on ``split.train``); with the validation
    metrics of the unchanged lists, of β alone and of both (``{"chosen": {...}, "valid": {...}, ...}``)."""
    from avrec.eval.beyond import long_tail_mask

    items = split.train.items
    dist = genre_distributions(items, field)
    dist_sparse = sp.csr_matrix(dist)
    popularity = split.train.item_counts()
    tail = long_tail_mask(popularity, 0.8)
    lists = validation_lists(model, split, depth)

    def penalty(beta: float) -> list[Any]:
        return [PopularityPenalty(beta, popularity)] if beta > 0 else []

    def calibrate(lam: float) -> list[Any]:
        return [Calibrate(lam, depth, dist, lambda ctx: ctx.history)] if lam > 0 else []

    beta = tune_strength(lambda b: _measure(penalty(b), lists, dist_sparse, tail)["ndcg@10"], betas, tolerance)
    b = beta["chosen"]
    # λ on top of β, held to the same floor: within ``tolerance`` of the *unchanged* lists, not of β's
    floor = (1 - tolerance) * beta["baseline"]
    lam_scores = {0.0: beta["scores"][b]}
    lam_scores |= {float(v): _measure(penalty(b) + calibrate(float(v)), lists, dist_sparse, tail)["ndcg@10"]
                   for v in sorted(set(lambdas)) if v > 0}
    lam = max(v for v, score in lam_scores.items() if score >= floor or v == 0.0)
    chosen = {"popularity_penalty": b, "calibration_lambda": lam, "calibration_field": field, "depth": depth}
    return {"chosen": chosen, "tolerance": tolerance, "valid_users": int(len(lists[0])),
            "valid": {"none": _measure([], lists, dist_sparse, tail),
                      "penalty": _measure(penalty(b), lists, dist_sparse, tail),
                      "both": _measure(penalty(b) + calibrate(lam), lists, dist_sparse, tail)},
            "penalty_scores": beta["scores"], "calibration_scores": lam_scores}


def rerank_toml(result: dict[str, Any], source: str) -> str:
    """The ``[serve.rerank]`` table of a :func:`tune_exposure` result, with a comment saying where it came from."""
    c, v = result["chosen"], result["valid"]
    return (f"# tuned by avrec tune-rerank on {source}: the largest settings whose validation NDCG@10 stays\n"
            f"# within {result['tolerance']:.0%} of the unchanged lists ({result['valid_users']} validation users)\n"
            f"# validation NDCG@10 {v['none']['ndcg@10']:.4f} -> {v['both']['ndcg@10']:.4f}, long-tail share "
            f"{v['none']['tail@10']:.4f} -> {v['both']['tail@10']:.4f}, miscalibration "
            f"{v['none']['miscal@10']:.3f} -> {v['both']['miscal@10']:.3f}\n"
            "[serve.rerank]\n"
            f"popularity_penalty = {c['popularity_penalty']}\n"
            f"calibration_lambda = {c['calibration_lambda']}\n"
            f"calibration_field = \"{c['calibration_field']}\"\n"
            f"depth = {c['depth']}\n")
