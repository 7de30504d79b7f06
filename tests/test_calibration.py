"""Calibrated re-ranking and the popularity penalty (avrec.pipeline.calibration) on hand-made lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from avrec.eval.beyond import item_distributions, miscalibration, value_matrix
from avrec.pipeline.calibration import (
    Calibrate,
    PopularityPenalty,
    calibrated_list,
    genre_distributions,
    tune_strength,
)
from avrec.pipeline.stages import Context


def test_calibrated_list_trades_score_for_the_history_mix():
    # the user watches only genre A; item 0 (genre B) scores highest, items 1 and 2 are genre A
    dist = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    p = np.array([1.0, 0.0])
    cands, scores = np.array([0, 1, 2]), np.array([3.0, 2.0, 1.0])
    assert calibrated_list(cands, scores, p, dist, 2, lam=0.0).tolist() == [0, 1]  # λ = 0: by score
    assert calibrated_list(cands, scores, p, dist, 2, lam=0.9).tolist() == [1, 2]  # calibrated: A only
    assert calibrated_list(np.array([2, -1]), np.array([1.0, -np.inf]), p, dist[[2, 0]], 3, 0.5).tolist() == [2, -1, -1]


def test_calibrate_stage_lowers_miscalibration():
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(40)],
                          "genres": [["A", "B", "C", "A|B"][i % 4] for i in range(40)]})
    dist = genre_distributions(items)
    history = sp.csr_matrix((rng.random((12, 40)) < 0.15).astype(np.float32))
    cands = np.argsort(-rng.random((12, 40)), axis=1)[:, :30]
    scores = -np.arange(30, dtype=float)[None, :].repeat(12, axis=0)
    ctx = Context(10, user_idx=np.arange(12))
    before, _ = miscalibration(cands[:, :10], history, sp.csr_matrix(dist))
    stage = Calibrate(0.8, 30, dist, lambda c: history[c.user_idx])
    out, out_scores = stage.apply(ctx, cands, scores)
    after, _ = miscalibration(out[:, :10], history, sp.csr_matrix(dist))
    assert after < before
    assert all(set(out[r]) == set(cands[r]) for r in range(12))  # reordered, nothing added or lost
    assert (np.diff(out_scores, axis=1) <= 0).all()
    same, _ = Calibrate(0.0, 30, dist, lambda c: history[c.user_idx]).apply(ctx, cands, scores)
    assert (same == cands).all()
    values, _ = value_matrix(items, "genres")
    assert np.allclose(dist, item_distributions(values).toarray())


def test_popularity_penalty_by_hand():
    pop = np.array([1000.0, 0.0, 10.0])
    cands, scores = np.array([[0, 2, 1]]), np.array([[3.0, 2.0, 1.0]])
    ctx = Context(3, user_idx=np.array([0]))
    c, _ = PopularityPenalty(0.0, pop).apply(ctx, cands, scores)
    assert c.tolist() == [[0, 2, 1]]
    # z(s) = (1.22, 0, -1.22); z(log1p pop) ≈ (1.33, -0.25, -1.08); β = 1 → (-0.10, 0.25, -0.14)
    c, s = PopularityPenalty(1.0, pop).apply(ctx, cands, scores)
    assert c.tolist() == [[2, 0, 1]]
    assert s[0].tolist() == pytest.approx(sorted(s[0].tolist(), reverse=True))


def test_tune_strength_keeps_the_tolerance():
    ndcg = {0.0: 0.30, 0.1: 0.299, 0.3: 0.295, 0.5: 0.28, 0.9: 0.2}
    out = tune_strength(lambda v: ndcg[v], [0.1, 0.3, 0.5, 0.9], tolerance=0.02)
    assert out["chosen"] == 0.3 and out["baseline"] == 0.30  # 0.295 ≥ 0.98·0.30 = 0.294; 0.28 is not
    assert tune_strength(lambda v: ndcg[v], [0.5, 0.9], tolerance=0.0)["chosen"] == 0.0
