"""The shared behaviour suite (avrec.testing) for each collaborative-filtering baseline, plus
model-specific checks: EASE against its closed form, ItemKNN against a direct cosine computation.

To cover a new model, subclass ``RecommenderSuite`` and implement ``make_model`` (see avrec.testing.suite's
docstring); keep its configuration small so the whole file stays fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from avrec.models.registry import available_models, create_model, get_model_class
from avrec.testing import RecommenderSuite, make_structured_dataset


class TestPopularity(RecommenderSuite):
    personalised = False  # everyone gets the same (most popular unseen) items

    def make_model(self):
        return create_model("pop")


class TestItemKNN(RecommenderSuite):
    def make_model(self):
        return create_model("itemknn", neighbours=20)


class TestEASE(RecommenderSuite):
    def make_model(self):
        return create_model("ease", l2=5.0)


class TestALS(RecommenderSuite):
    def make_model(self):
        return create_model("als", factors=8, regularization=0.5, alpha=5.0, iterations=10)


class TestBPR(RecommenderSuite):
    def make_model(self):
        return create_model("bpr", factors=8, learning_rate=0.05, regularization=0.001, iterations=100)


def test_registry_names():
    assert {"pop", "itemknn", "ease", "als", "bpr"} <= set(available_models())
    for name in ("pop", "itemknn", "ease", "als", "bpr"):
        assert get_model_class(name).name == name


# ---- model-specific ground truth -------------------------------------------------------------------
def test_ease_matches_closed_form():
    """B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹ (Steck 2019), computed directly with numpy."""
    rng = np.random.default_rng(0)
    x = (rng.random((30, 12)) < 0.3).astype(np.float64)
    x[0, :] = 0
    x[0, :3] = 1
    lam = 3.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(np.diag(b), 0, atol=1e-12)
    from avrec.data.dataset import Dataset
    import pandas as pd

    rows, cols = np.nonzero(x)
    ds = Dataset(items=pd.DataFrame({"item_id": [f"i{i}" for i in range(12)]}), user_ids=[f"u{u}" for u in range(30)],
                 user_idx=rows, item_idx=cols, weight=np.ones(len(rows)), timestamp=np.full(len(rows), -1))
    model = create_model("ease", l2=lam).fit(ds)
    np.testing.assert_allclose(model.weights, b, rtol=1e-4, atol=1e-6)
    # the ranking is X·B with seen items removed
    ids, scores = model.recommend(["u0"], k=9)
    expected = x[0] @ b
    expected[x[0] > 0] = -np.inf
    order = np.argsort(-expected, kind="stable")[:9]
    np.testing.assert_allclose(scores[0], expected[order], rtol=1e-4, atol=1e-6)
    # B also solves the constrained least squares: the gradient vanishes off the diagonal
    grad = -(x.T @ (x - x @ b)) + lam * b
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(grad[off], 0, atol=1e-8)


def test_itemknn_matches_direct_cosine():
    data = make_structured_dataset(seed=3)
    shrink = 2.0
    model = create_model("itemknn", neighbours=1000, shrink=shrink).fit(data)
    x = data.matrix(binary=True).toarray().astype(np.float64)
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    sim = co / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(sim, 0)
    got = model.similarity.toarray()
    np.testing.assert_allclose(got, sim, rtol=1e-5, atol=1e-6)
    user = 5
    np.testing.assert_allclose(model.score_users(np.array([user]), None)[0], x[user] @ sim, rtol=1e-4, atol=1e-6)


def test_itemknn_keeps_top_neighbours():
    data = make_structured_dataset(seed=4)
    model = create_model("itemknn", neighbours=3).fit(data)
    per_item = np.diff(sp.csc_matrix(model.similarity).indptr)  # neighbours of item j are column j
    assert per_item.max() <= 3


def test_als_fold_in_is_the_exact_least_squares_step():
    """Fold-in solves (YᵀCᵤY + λI) xᵤ = YᵀCᵤpᵤ with the item factors fixed.

    implicit's confidence convention: Cᵤᵢ = α·rᵤᵢ on observed pairs and 1 elsewhere (not 1 + α·r), so
    α = 1 on binary data gives positives no extra weight at all.
    """
    data = make_structured_dataset(seed=5)
    alpha, lam = 5.0, 0.5
    model = create_model("als", factors=8, regularization=lam, alpha=alpha, iterations=10).fit(data)
    y = model.item_factors.astype(np.float64)
    hist = model.seen[:3].toarray().astype(np.float64)
    folded = model.score_histories(sp.csr_matrix(hist), None)
    for u in range(3):
        c = np.where(hist[u] > 0, alpha * hist[u], 1.0)  # implicit: confidence = α·r on observed pairs
        p = (hist[u] > 0).astype(np.float64)
        a = y.T @ (c[:, None] * y) + lam * np.eye(y.shape[1])
        x = np.linalg.solve(a, y.T @ (c * p))
        np.testing.assert_allclose(folded[u], y @ x, rtol=1e-3, atol=1e-4)
    # and it lands close to the trained user factors: the same users rank the same top items
    direct = model.score_users(np.arange(3), None)
    for u in range(3):
        assert len(set(np.argsort(-folded[u])[:5]) & set(np.argsort(-direct[u])[:5])) >= 4
    # a big batch (solved on every core) gives each user what a fold-in of that user alone (one thread) gives
    from avrec.models.als import PARALLEL_FOLD_IN

    rows = min(PARALLEL_FOLD_IN, data.n_users)
    batch = model.score_histories(model.seen[:rows], None)
    one_by_one = np.vstack([model.score_histories(model.seen[u:u + 1], None) for u in range(rows)])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["als", "bpr"])
def test_factor_shapes(name):
    data = make_structured_dataset(seed=6)
    model = create_model(name, factors=8, iterations=5).fit(data)
    assert model.user_factors.shape[0] == data.n_users
    assert model.item_factors.shape[0] == data.n_items


def test_bpr_early_stopping_keeps_best_validation_epoch():
    """With a validation set, BPR keeps the checked epoch with the best validation NDCG@10, and its
    monitor agrees exactly with evaluate_model on the validation part."""
    from avrec.data.splits import random_split
    from avrec.eval.evaluate import evaluate_model

    split = random_split(make_structured_dataset(seed=7), seed=1)
    model = create_model("bpr", factors=8, learning_rate=0.05, iterations=60, eval_every=5, patience=100)
    model.fit(split.train, valid=split.valid)
    assert model.best_iteration % 5 == 0 and 5 <= model.best_iteration <= 60
    assert model.valid_ndcg == pytest.approx(evaluate_model(model, split, k=10, part="valid")["ndcg@10"], abs=1e-6)
    plain = create_model("bpr", factors=8, learning_rate=0.05, iterations=60, early_stopping=False)
    plain.fit(split.train, valid=split.valid)
    assert plain.best_iteration == 60
    assert evaluate_model(plain, split, k=10, part="valid")["ndcg@10"] <= model.valid_ndcg + 1e-6
