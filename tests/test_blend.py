"""Fusion scalings and the multi-partition weight rule (avrec.models.blend, ValidationSet.ndcg_partitions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from avrec.data.splits import cold_item_split
from avrec.errors import ConfigError
from avrec.eval.validation import ValidationSet
from avrec.models.base import Recommender
from avrec.models.blend import fuse, rank_scores_normal, standardise, tune_weights
from avrec.models.registry import create_model
from avrec.testing import make_structured_dataset


def test_rank_scores_keep_only_the_order():
    row = np.array([[0.1, 5.0, 0.3, 0.2]], dtype=np.float32)
    outlier = row.copy()
    outlier[0, 1] = 1e6  # the same order with a far heavier tail
    r = rank_scores_normal(row)
    assert np.array_equal(np.argsort(r[0]), np.argsort(row[0]))
    assert np.allclose(r, rank_scores_normal(outlier))
    assert np.isclose(r.mean(), 0.0, atol=1e-6)  # symmetric around the median
    assert np.allclose(standardise(row, "rank"), r)


def test_rank_scores_ties_constant_rows_and_missing_entries():
    r = rank_scores_normal(np.array([[2.0, 2.0, 1.0, 3.0], [7.0, 7.0, 7.0, 7.0]]))
    assert r[0, 0] == r[0, 1] and r[0, 2] < r[0, 0] < r[0, 3]  # ties share their mean rank
    assert np.allclose(r[1], 0.0)  # a constant row says nothing about any item
    m = rank_scores_normal(np.array([[np.nan, 1.0, 3.0, 2.0]]))
    assert m[0, 0] == 0.0 and m[0, 1] < m[0, 3] < m[0, 2]
    assert np.allclose(m[0, 1:], rank_scores_normal(np.array([[1.0, 3.0, 2.0]]))[0])


def test_a_heavy_tail_takes_over_z_fusion_but_not_rank_fusion():
    # B ranks the items in the right order (0 first); A agrees, except that it puts item 99 far above all
    b = np.arange(100, 0, -1, dtype=np.float64)[None, :]
    a = b.copy()
    a[0, 99] = 1e4
    z_fused = fuse([standardise(a), standardise(b)], [1.0, 1.0])
    rank_fused = fuse([standardise(a, "rank"), standardise(b, "rank")], [1.0, 1.0])
    assert int(np.argmax(z_fused)) == 99  # A's tail alone decides the z-fused top
    assert int(np.argmax(rank_fused)) == 0  # with ranks, the item both put near the top wins


def test_ndcg_partitions():
    rng = np.random.default_rng(0)
    truth = sp.csr_matrix((rng.random((30, 12)) < 0.2).astype(np.float32))
    check = ValidationSet.from_matrices(truth, None)
    scores = rng.random((len(check), 12)).astype(np.float32)
    assert np.allclose(check.ndcg_partitions(scores, 10, 1), check.ndcg_folds(scores, 10))
    many = check.ndcg_partitions(scores, 10, 3)
    slow = np.concatenate([check.ndcg_folds(scores, 10, 2, seed) for seed in range(3)])
    assert many.shape == (6,) and np.allclose(many, slow)
    cold = ValidationSet.from_matrices(truth, None, candidates=np.arange(4, 12))
    assert cold.ndcg_partitions(scores[:, 4:], 10, 2).shape == (4,)


def test_tune_weights_with_partitions_still_finds_the_informative_component():
    rng = np.random.default_rng(1)
    truth = sp.csr_matrix((rng.random((60, 30)) < 0.1).astype(np.float32))
    useful = standardise(truth.toarray() + 0.1 * rng.random((60, 30)))
    noise = standardise(rng.random((60, 30)))
    weights, score = tune_weights([noise, useful], ValidationSet(np.arange(60), truth, None), partitions=5)
    assert weights[1] > 0 and weights[0] <= weights[1] / 2 and score > 0.8  # users without truth score 0


@pytest.mark.parametrize("key,value", [("cold_rank", ["softmax"]), ("warm_rank", ["tfidf"]), ("cold_partitions", 0)])
def test_hybrid_refuses_bad_fusion_settings(key, value):
    with pytest.raises(ConfigError, match=f"models.hybrid.{key}"):
        create_model("hybrid", **{key: value})


def test_hybrid_keeps_the_scaling_its_weights_were_tuned_under(tmp_path):
    data = make_structured_dataset(seed=5)
    split = cold_item_split(data, cold_share=0.25, valid_share=0.15, seed=1)
    model = create_model("hybrid", max_steps=40, eval_every=20, dim=16, hidden=32, use_lm=False,
                         cold_rank=["towers", "tfidf"]).fit(split.train, valid=split.valid,
                                                            valid_candidates=split.valid_candidates)
    assert (model.warm_rank, model.cold_rank) == ([], ["towers", "tfidf"])
    users = list(split.test.user_ids[:5])
    cands = list(split.train.item_ids[split.test_candidates])
    before = model.recommend(users, k=5, candidates=cands)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.cold_rank == ["towers", "tfidf"]
    after = loaded.recommend(users, k=5, candidates=cands)
    assert np.array_equal(before[0], after[0]) and np.allclose(before[1], after[1], atol=1e-5)
    meta_path = tmp_path / "m" / "hybrid.json"
    meta = json.loads(meta_path.read_text())
    del meta["warm_rank"], meta["cold_rank"]
    meta_path.write_text(json.dumps(meta))  # a folder saved before the setting existed: tuned on z-scores
    assert Recommender.load(tmp_path / "m").cold_rank == []


def test_ranked_components_change_the_cold_fusion_inputs():
    data = make_structured_dataset(seed=6)
    split = cold_item_split(data, cold_share=0.25, valid_share=0.15, seed=2)
    model = create_model("hybrid", max_steps=40, eval_every=20, dim=16, hidden=32, use_lm=False)
    model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
    users, items = np.arange(6), np.asarray(split.test_candidates)
    z = model._components_z(users, None, items, ["tfidf"], ranked=())
    r = model._components_z(users, None, items, ["tfidf"], ranked=["towers"])
    assert np.allclose(r[0], rank_scores_normal(z[0]), atol=1e-5)  # the towers' row on ranks
    assert np.allclose(r[1], z[1])  # tfidf left on z-scores
