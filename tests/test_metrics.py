"""Ranking metrics against hand-computed values and a slow pure-Python reference, and the two evaluation paths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from avrec.data.dataset import build_dataset
from avrec.data.splits import cold_item_split, random_split
from avrec.eval.evaluate import evaluate_model, evaluate_recommendations
from avrec.eval.metrics import (
    hit_matrix,
    intra_list_diversity,
    item_coverage,
    novelty,
    per_user_metrics,
    ranking_metrics,
)
from avrec.errors import ConfigError, DataError
from avrec.models.ease import EASE
from avrec.models.itemknn import ItemKNN
from avrec.models.registry import create_model


def truth_matrix(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


L2 = math.log2


# ---- hand-computed cases ------------------------------------------------------------------------
TOPK = np.array([[0, 1, 2, 3], [4, 5, -1, -1], [6, 7, 8, 9]])
TRUTH = truth_matrix([[1, 3, 9], [5], []], n_items=10)


def test_hand_computed_at_4():
    m = per_user_metrics(TOPK, TRUTH, k=4)
    # user 0: hits at ranks 2 and 4 out of 3 relevant items
    assert m["recall"][0] == pytest.approx(2 / 3)
    assert m["precision"][0] == pytest.approx(2 / 4)
    assert m["hit"][0] == 1.0
    assert m["mrr"][0] == pytest.approx(1 / 2)
    dcg = 1 / L2(3) + 1 / L2(5)
    idcg = 1 + 1 / L2(3) + 1 / L2(4)  # min(|test|=3, K=4) = 3 ideal positions
    assert m["ndcg"][0] == pytest.approx(dcg / idcg)
    assert m["map"][0] == pytest.approx((1 / 2 + 2 / 4) / 3)
    # user 1: one relevant item at rank 2; the -1 padding never counts
    assert m["recall"][1] == pytest.approx(1.0)
    assert m["precision"][1] == pytest.approx(1 / 4)
    assert m["mrr"][1] == pytest.approx(1 / 2)
    assert m["ndcg"][1] == pytest.approx(1 / L2(3))
    assert m["map"][1] == pytest.approx(1 / 2)
    # user 2: nothing relevant, every metric 0 (no division by zero)
    for name, values in m.items():
        assert values[2] == 0.0, name


def test_hand_computed_k_smaller_than_relevant():
    m = per_user_metrics(TOPK, TRUTH, k=2)
    assert m["recall"][0] == pytest.approx(1 / 3)  # recall divides by |test|, not by K
    assert m["precision"][0] == pytest.approx(1 / 2)
    assert m["ndcg"][0] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))  # ideal over min(3, 2) = 2
    assert m["map"][0] == pytest.approx((1 / 2) / 2)  # RecBole: normalised by min(|test|, K)
    assert m["mrr"][0] == pytest.approx(1 / 2)


def test_perfect_ranking_scores_one():
    topk = np.array([[3, 1, 7, 0, 2]])
    truth = truth_matrix([[1, 3, 7]], 10)
    m = per_user_metrics(topk, truth, k=5)
    assert m["ndcg"][0] == pytest.approx(1.0)
    assert m["map"][0] == pytest.approx(1.0)
    assert m["recall"][0] == pytest.approx(1.0)
    assert m["precision"][0] == pytest.approx(3 / 5)


def test_padding_never_hits_the_last_item():
    # -1 would index the last column if it were not masked
    truth = truth_matrix([[9]], 10)
    hits = hit_matrix(np.array([[-1, -1, -1]]), truth)
    assert not hits.any()
    m = per_user_metrics(np.array([[-1, -1, 9]]), truth, k=3)
    assert m["mrr"][0] == pytest.approx(1 / 3)


def test_no_hits_all_zero():
    m = per_user_metrics(np.array([[0, 1], [2, 3]]), truth_matrix([[5], [6, 7]], 10), k=2)
    for values in m.values():
        assert np.all(values == 0)


def test_ranking_metrics_means_and_beyond_accuracy():
    out = ranking_metrics(TOPK, TRUTH, 4)
    per = per_user_metrics(TOPK, TRUTH, 4)
    for name, values in per.items():
        assert out[f"{name}@4"] == pytest.approx(values.mean())
    assert "coverage@4" not in out

    topk = np.array([[0, 1], [1, 2], [-1, -1]])
    assert item_coverage(topk, 10) == pytest.approx(3 / 10)
    pop = np.array([9.0, 4.0, 0.0, 1.0])
    n_users = 9
    expected = np.mean([-L2(10 / 10), -L2(5 / 10), -L2(5 / 10), -L2(1 / 10)])
    assert novelty(topk, pop, n_users) == pytest.approx(expected)
    assert novelty(np.array([[-1]]), pop, n_users) == 0.0


def test_intra_list_diversity_hand_computed():
    feats = sp.csr_matrix(np.array([[1, 0], [2, 0], [0, 1], [1, 1]], dtype=float))
    # list [0,1,2]: cos(0,1)=1, cos(0,2)=0, cos(1,2)=0 -> 1 - 1/3; list [0,3]: 1 - 1/sqrt2; [2]: skipped
    topk = np.array([[0, 1, 2], [0, 3, -1], [2, -1, -1]])
    expected = np.mean([1 - 1 / 3, 1 - 1 / math.sqrt(2)])
    assert intra_list_diversity(topk, feats) == pytest.approx(expected)
    out = ranking_metrics(topk, truth_matrix([[0], [3], [2]], 4), 3, n_candidates=4,
                          item_popularity=np.ones(4), n_train_users=3, item_features=feats)
    assert out["diversity@3"] == pytest.approx(expected)
    assert out["coverage@3"] == pytest.approx(1.0)


# ---- randomized cross-check against a pure-Python reference -------------------------------------
def reference_metrics(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user at a time (ranked may be shorter than k, -1 = padding)."""
    ranked = [i for i in ranked[:k]]
    rel = [1 if (i >= 0 and i in relevant) else 0 for i in ranked]
    n_rel = len(relevant)
    n_hits = sum(rel)
    dcg = sum(r / math.log2(pos + 2) for pos, r in enumerate(rel))
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(n_rel, k)))
    mrr = next((1 / (pos + 1) for pos, r in enumerate(rel) if r), 0.0)
    ap, found = 0.0, 0
    for pos, r in enumerate(rel):
        if r:
            found += 1
            ap += found / (pos + 1)
    return {
        "recall": n_hits / n_rel if n_rel else 0.0,
        "precision": n_hits / k,
        "hit": float(n_hits > 0),
        "mrr": mrr,
        "ndcg": dcg / idcg if idcg else 0.0,
        "map": ap / min(n_rel, k) if n_rel else 0.0,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 60, 30, 12
    topk = np.full((n_users, width), -1, dtype=np.int64)
    truth_rows = []
    for u in range(n_users):
        length = rng.integers(0, width + 1)
        topk[u, :length] = rng.choice(n_items, size=length, replace=False)
        truth_rows.append(sorted(rng.choice(n_items, size=rng.integers(0, 10), replace=False).tolist()))
    truth = truth_matrix(truth_rows, n_items)
    for k in (1, 5, 10, 12, 15):
        got = per_user_metrics(topk, truth, k)
        for u in range(n_users):
            ref = reference_metrics(topk[u].tolist(), set(truth_rows[u]), k)
            for name, value in ref.items():
                assert got[name][u] == pytest.approx(value, abs=1e-12), (name, k, u)


# ---- evaluate_model vs evaluate_recommendations ---------------------------------------------------
def small_dataset(seed: int = 0, n_users: int = 80, n_items: int = 60):
    rng = np.random.default_rng(seed)
    pop = rng.zipf(1.5, n_items).astype(float)
    p = pop / pop.sum()
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=rng.integers(6, 20), replace=False, p=p):
            rows.append((f"u{u}", f"i{i}", 1.0, 1_000 + len(rows)))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "genres": ["a|b" if i % 2 else "c" for i in range(n_items)]})
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    return build_dataset(items, inter, name="small")


def lists_frame(model, split, users, k):
    """Top-k lists as another library would hand them over: user_id, item_id, rank."""
    exclude = split.train.matrix(binary=True)[users] + split.valid.matrix(binary=True)[users]
    top, _ = model.topk_indices(users, k, exclude=exclude, candidates=split.candidates("test"))
    rows = [
        (split.train.user_ids[u], split.train.item_ids[i], r + 1)
        for u, row in zip(users, top)
        for r, i in enumerate(row)
        if i >= 0
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])


def test_evaluate_recommendations_equals_evaluate_model():
    split = random_split(small_dataset(), seed=5)
    model = EASE(l2=10.0).fit(split.train)
    expected = evaluate_model(model, split, k=[5, 10])
    users = np.flatnonzero(np.diff(split.test.matrix(binary=True).indptr) > 0)
    recs = lists_frame(model, split, users, 10)
    got = evaluate_recommendations(recs.sample(frac=1.0, random_state=0), split, k=[5, 10])  # order by rank, not row
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    assert expected["users"] == len(users)


def test_evaluate_recommendations_cleans_foreign_lists():
    """Seen (train/valid) items, duplicates and unknown ids are dropped before cutting to K."""
    split = random_split(small_dataset(seed=1), seed=3)
    model = ItemKNN().fit(split.train)
    users = np.flatnonzero(np.diff(split.test.matrix(binary=True).indptr) > 0)
    clean = lists_frame(model, split, users, 10)
    dirty = []
    seen = split.train.matrix(binary=True) + split.valid.matrix(binary=True)
    for u in users:
        uid = split.train.user_ids[u]
        own = clean[clean.user_id == uid].sort_values("rank").item_id.tolist()
        noise = [split.train.item_ids[i] for i in seen[u].indices[:3]] + ["no-such-item"]
        listed = noise + own[:2] + own[:1] + own[2:]  # seen items first, then a duplicate
        dirty += [(uid, item, r + 1) for r, item in enumerate(listed)]
    dirty = pd.DataFrame(dirty, columns=["user_id", "item_id", "rank"])
    assert evaluate_recommendations(dirty, split, k=10) == pytest.approx(evaluate_recommendations(clean, split, k=10))
    # a user missing from the lists scores zero rather than being dropped
    partial = clean[clean.user_id != split.train.user_ids[users[0]]]
    res = evaluate_recommendations(partial, split, k=10)
    assert res["users"] == len(users)
    assert res["hit@10"] <= evaluate_recommendations(clean, split, k=10)["hit@10"]


def test_cold_protocol_ranks_only_candidates():
    split = cold_item_split(small_dataset(seed=2), cold_share=0.2, valid_share=0.1, seed=4)
    cands = set(split.test_candidates.tolist())
    model = EASE(l2=10.0).fit(split.train)
    users = np.flatnonzero(np.diff(split.test.matrix(binary=True).indptr) > 0)
    top, _ = model.topk_indices(users, 10, candidates=split.test_candidates)
    assert set(top[top >= 0].tolist()) <= cands
    recs = lists_frame(model, split, users, 10)
    # non-candidate items in a foreign list are dropped, so both paths agree
    extra = pd.DataFrame({"user_id": recs.user_id.unique(), "item_id": split.train.item_ids[
        np.setdiff1d(np.arange(split.train.n_items), split.test_candidates)[0]], "rank": 0})
    got = evaluate_recommendations(pd.concat([extra, recs]), split, k=10)
    assert got == pytest.approx(evaluate_model(model, split, k=10, allow_cold_unaware=True))
    assert got["coverage@10"] <= 1.0


def test_validation_items_excluded_on_test_only():
    split = random_split(small_dataset(seed=3), seed=1)
    from avrec.eval.evaluate import _eval_inputs

    users, truth, exclude, _ = _eval_inputs(split, "test")
    valid = split.valid.matrix(binary=True)[users]
    assert (exclude.multiply(valid)).nnz == valid.nnz  # every validation item is excluded from test ranking
    users_v, truth_v, exclude_v, _ = _eval_inputs(split, "valid")
    assert exclude_v.multiply(split.valid.matrix(binary=True)[users_v]).nnz == 0
    assert truth_v.nnz == split.valid.n_interactions


# ---- issue 11: nothing to score, and models that cannot score cold items ---------------------------
def test_no_user_with_test_items_is_a_data_error():
    items = pd.DataFrame({"item_id": ["i1", "i2"]})
    inter = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "weight": 1.0, "timestamp": [1, 2]})
    split = random_split(build_dataset(items, inter, name="one"), seed=1)
    model = create_model("pop").fit(split.train)
    message = r"evaluate: no user has test items under the random split \(2 users, 2 interactions\); users need at least 3 items to be split"
    with pytest.raises(DataError, match=message):
        evaluate_model(model, split, k=10)
    with pytest.raises(DataError, match=message):
        evaluate_recommendations(pd.DataFrame({"user_id": ["u1"], "item_id": ["i2"], "rank": [1]}), split, k=10)
    with pytest.raises(DataError, match=r"no user has validation items under the random split"):
        evaluate_model(model, split, k=10, part="valid")


def test_cold_split_without_test_items_is_a_data_error():
    split = cold_item_split(small_dataset(seed=2, n_users=6, n_items=20), cold_share=0.01, valid_share=0.0, seed=4)
    assert len(split.test_candidates) == 0
    with pytest.raises(DataError, match=r"no user has test items under the cold_item split .*cold_share"):
        evaluate_model(create_model("tfidf").fit(split.train), split, k=10)


@pytest.mark.parametrize("name", ["pop", "itemknn", "ease", "als", "bpr"])
def test_cold_protocol_refuses_models_that_cannot_score_cold_items(name):
    split = cold_item_split(small_dataset(seed=2), cold_share=0.2, valid_share=0.1, seed=4)
    model = create_model(name).fit(split.train)
    assert model.capabilities.cold_items is False
    with pytest.raises(ConfigError, match=rf"{name} cannot score items without interactions.*cold_item"):
        evaluate_model(model, split, k=10)
    with pytest.raises(ConfigError, match="cannot score items without interactions"):
        evaluate_model(model, split, k=10, part="valid")
    # an explicit opt-in still scores it (benchmarks that show the tie-order reference)
    metrics = evaluate_model(model, split, k=10, allow_cold_unaware=True)
    assert 0 <= metrics["ndcg@10"] <= 1
    # the warm protocol is unaffected
    warm = random_split(small_dataset(seed=2), seed=4)
    assert 0 <= evaluate_model(create_model(name).fit(warm.train), warm, k=10)["ndcg@10"] <= 1


def test_cold_protocol_accepts_content_models():
    split = cold_item_split(small_dataset(seed=2), cold_share=0.2, valid_share=0.1, seed=4)
    model = create_model("tfidf").fit(split.train)
    assert model.capabilities.cold_items is True
    assert 0 <= evaluate_model(model, split, k=10)["ndcg@10"] <= 1
