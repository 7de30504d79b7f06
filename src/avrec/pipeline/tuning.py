"""Choosing the pipeline's blend weight and MMR λ on validation NDCG@10.

The retriever's lists and the cross-encoder's logits are computed once for a sample of validation
users; every (weight, λ) pair of the grids then only re-orders them. The weight is the best at the
largest λ (ties: the smaller weight, i.e. closer to the retriever's order); λ is then the most diverse
(smallest) setting within ``mmr_tolerance`` of the best NDCG@10 at that weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from avrec.pipeline.config import PipelineConfig
from avrec.pipeline.stages import Context, CrossEncoderRank, Retrieve, Stage, empty_lists, finish


def tune(
    config: PipelineConfig,
    retrieve: Retrieve,
    rank: CrossEncoderRank,
    rerank: Callable[[float], Sequence[Stage]],
    train,
    valid,
    valid_candidates: np.ndarray | None = None,
) -> dict[str, Any]:
    """The tuning report: chosen ``blend_weight`` and ``mmr_lambda``, their validation NDCG@10, that of
    the retriever's own order and the whole grid. ``rerank(λ)`` gives the re-ranking stages for a λ."""
    from avrec.finetune.ranker_training import list_ndcg

    cfg = config
    truth_all = valid.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    if cfg.tune_users and len(users) > cfg.tune_users:
        users = np.sort(np.random.default_rng(cfg.pairs.seed).choice(users, cfg.tune_users, replace=False))
    truth = truth_all[users]
    ctx = Context(k=cfg.n_candidates, user_idx=users, exclude=train.matrix(binary=True)[users],
                  candidates=valid_candidates)
    cands, rscores = retrieve.apply(ctx, *empty_lists(ctx.rows))
    logits = rank.logits(ctx, cands[:, : rank.depth])
    weights = [cfg.blend_weight] if cfg.blend_weight is not None else list(cfg.blend_grid)
    lambdas = [cfg.mmr_lambda] if cfg.mmr_lambda is not None else list(cfg.mmr_grid)
    table = []
    for w in weights:
        ranked = rank.order(cands, rscores, logits, w)
        for lam in lambdas:
            c, s = ranked
            for stage in rerank(lam):
                c, s = stage.apply(ctx, c, s)
            order, _ = finish(c, s, 10)
            table.append((float(w), float(lam), list_ndcg(order, truth, 10)))
    best = max(t[2] for t in table)
    # best weight at lambda = max; then the most diverse lambda within tolerance at that weight
    top_lam = max(lambdas)
    w_best = max((t for t in table if t[1] == top_lam), key=lambda t: (t[2], -t[0]))[0]
    at_w = [t for t in table if t[0] == w_best]
    ref = max(t[2] for t in at_w)
    ok = [t for t in at_w if t[2] >= ref * (1 - cfg.mmr_tolerance)]
    lam_best = min(t[1] for t in ok)
    retr = next((t[2] for t in table if t[0] == 0.0 and t[1] == top_lam), None)
    return {"users": len(users), "blend_weight": float(w_best), "mmr_lambda": float(lam_best),
            "valid_ndcg@10": float(next(t[2] for t in table if t[0] == w_best and t[1] == lam_best)),
            "valid_ndcg@10_retriever_order": retr, "best_grid_ndcg@10": best,
            "grid": [list(t) for t in table]}
