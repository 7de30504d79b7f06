"""The retrieve → rank → re-rank pipeline: the shared model suite plus re-rank behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from finetune_helpers import tiny_bert_dir

from avrec.data.splits import random_split
from avrec.errors import ConfigError
from avrec.eval.evaluate import evaluate_model, item_feature_matrix
from avrec.eval.metrics import intra_list_diversity
from avrec.models.registry import available_models, create_model
from avrec.pipeline import Pipeline, mmr_select
from avrec.testing import RecommenderSuite, make_structured_dataset

RETRIEVER = "hybrid" if "hybrid" in available_models() else "ease"
RETRIEVER_CONFIG = {"max_steps": 150, "use_lm": False} if RETRIEVER == "hybrid" else {}


def small_pipeline(**overrides) -> Pipeline:
    """A pipeline with a tiny cross-encoder that trains in seconds."""
    settings = dict(
        retriever=RETRIEVER,
        retriever_config=dict(RETRIEVER_CONFIG),
        n_candidates=20,
        ranker={"model": tiny_bert_dir(), "max_length": 48, "user_max_tokens": 16, "finetune": "full"},
        pairs={"positives_per_user": 2, "hard_negatives": 2, "random_negatives": 1},
        train={"batch_size": 16, "lr": 1e-3, "max_steps": 12, "log_every": 0},
        eval_users=40,
        tune_users=40,
    )
    settings.update(overrides)
    return create_model("pipeline", **settings)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class TestPipeline(RecommenderSuite):
    #: a pipeline's score rows raise its picks among the items being scored, so they depend on that set
    candidate_independent_scores = False

    def make_model(self):
        return small_pipeline()


@pytest.fixture(scope="module")
def fitted():
    data = make_structured_dataset()
    split = random_split(data, seed=0)
    model = small_pipeline(mmr_lambda=1.0).fit(split.train, valid=split.valid)
    return data, split, model


def test_registered_and_follows_retriever():
    assert "pipeline" in available_models()
    assert small_pipeline(retriever="ease").capabilities.cold_items is False
    with pytest.raises(ConfigError, match="another pipeline"):
        create_model("pipeline", retriever="pipeline")


def test_blend_weight_is_tuned_on_validation(fitted):
    _, split, model = fitted
    tuning = model.fit_report["tuning"]
    assert 0.0 <= model.blend_weight_ <= 1.0
    assert model.blend_weight_ in model.config.blend_grid
    # the chosen weight is at least as good on validation as the retriever's own order
    assert tuning["valid_ndcg@10"] >= tuning["valid_ndcg@10_retriever_order"] - 1e-12
    assert "ranker" in model.fit_report and model.fit_report["ranker"]["steps"] == 12


def test_weight_zero_reproduces_retriever(fitted):
    _, split, model = fitted
    users = np.arange(10)
    model.blend_weight_, model.mmr_lambda_ = 0.0, 1.0
    ours, _ = model.topk_indices(users, 10, exclude=split.train.matrix(binary=True)[users])
    theirs, _ = model.retriever.topk_indices(users, 10, exclude=split.train.matrix(binary=True)[users])
    assert (ours == theirs).all()


def test_mmr_increases_diversity(fitted):
    data, split, model = fitted
    feats = item_feature_matrix(split.train)
    users = np.arange(split.train.n_users)
    exclude = split.train.matrix(binary=True)
    model.mmr_lambda_ = 1.0
    plain, _ = model.topk_indices(users, 10, exclude=exclude)
    model.mmr_lambda_ = 0.3
    diverse, _ = model.topk_indices(users, 10, exclude=exclude)
    assert intra_list_diversity(diverse, feats) > intra_list_diversity(plain, feats)
    # MMR only reorders the retrieved candidates: same pool, different lists
    assert not (plain == diverse).all()


def test_mmr_select_unit():
    cands = np.array([0, 1, 2, 3])
    rel = np.array([3.0, 2.9, 1.0, 0.5])
    vecs = np.array([[1, 0], [1, 0.01], [0, 1], [0.7, 0.7]], dtype=np.float32)
    plain, _ = mmr_select(cands, rel, vecs, 3, 1.0)
    diverse, _ = mmr_select(cands, rel, vecs, 3, 0.3)
    assert plain.tolist() == [0, 1, 2]
    assert diverse.tolist()[:2] == [0, 2]  # the near-copy of item 0 is passed over


def test_filters_and_blocked_items(fitted):
    data, split, model = fitted
    users = list(split.train.user_ids[:6])
    blocked = ["a00", "a01", "a02", "b00", "b01"]
    model.config.blocked_items = blocked
    try:
        ids, _ = model.recommend(users, k=15)
        assert not set(ids.ravel()) & set(blocked)
        hist_ids, _ = model.recommend_history([["a03", "a04"]], k=10)
        assert not set(hist_ids.ravel()) & set(blocked)
    finally:
        model.config.blocked_items = []
    model.items.loc[model.items["item_id"].str.startswith("b"), "media_type"] = "podcast"
    model.config.media_types = ["podcast"]
    try:
        ids, _ = model.recommend(users, k=5)
        listed = [i for i in ids.ravel() if i is not None]
        assert listed and all(i.startswith("b") for i in listed)
    finally:
        model.config.media_types = []
        model.items["media_type"] = "movie"


def test_duplicates_are_moved_down(fitted):
    data, split, model = fitted
    user = split.train.user_ids[0]
    ids, _ = model.recommend([user], k=6)
    first, second = ids[0, 0], ids[0, 1]
    items = model.items
    old = items.loc[items["item_id"] == second, ["title", "year"]].copy()
    items.loc[items["item_id"] == second, ["title", "year"]] = items.loc[items["item_id"] == first, ["title", "year"]].values
    model.reset_caches()  # titles edited in place
    try:
        again, _ = model.recommend([user], k=6)
        assert again[0, 0] == first and second not in set(again[0, :5])
    finally:
        items.loc[items["item_id"] == second, ["title", "year"]] = old.values
        model.reset_caches()


def test_pipeline_not_worse_than_retriever_on_validation_choice(fitted):
    _, split, model = fitted
    pipe = evaluate_model(model, split, k=10)["ndcg@10"]
    assert 0.0 <= pipe <= 1.0


def test_explain_stage_gives_grounded_evidence_for_every_item(fitted):
    from avrec.explain import check_explanation, recommend_explained

    data, split, model = fitted
    users = [str(u) for u in split.train.user_ids[:3]] + ["never-seen"]
    ids, scores, explanations = recommend_explained(model, users, k=4)
    assert explanations[-1] == [None] * 4  # an unknown user has no history to cite
    for user, row, expl_row in zip(users[:3], ids[:3], explanations[:3]):
        for item, expl in zip(row, expl_row):
            assert expl["user_id"] == user and expl["item_id"] == item and expl["text"]
            assert check_explanation(expl, model) == []  # every piece of evidence holds in the data


def test_stages_in_order_and_an_extra_stage_runs_before_the_filters(fitted):
    from avrec.pipeline import MMR, CrossEncoderRank, Dedupe, Filters, Retrieve

    data, split, model = fitted
    kinds = [type(s) for s in model.stages()]
    assert kinds == [Retrieve, CrossEncoderRank, MMR, Dedupe, Filters]

    class Inject:  # a stand-in for an exploration policy that brings in a blocked item
        def apply(self, ctx, candidates, scores):
            c = np.array(candidates, copy=True)
            c[:, 0] = model.item_index["a00"]
            return c, scores

    users = np.arange(4)
    model.extra_stages = [Inject()]
    model.config.blocked_items = ["a00"]
    try:
        ids, vals = model.topk_indices(users, 8)
        assert model.item_index["a00"] not in set(ids.ravel()) and (np.diff(vals, axis=1) <= 0).all()
        model.config.blocked_items = []
        ids, _ = model.topk_indices(users, 8)
        assert (ids[:, 0] == model.item_index["a00"]).all()
    finally:
        model.extra_stages, model.config.blocked_items = [], []


def test_fold_in_and_score_rows_follow_the_pipeline(fitted):
    data, split, model = fitted
    histories = [["a03", "a04", "a10"], ["b01", "b02"]]
    hist = model.history_matrix(histories)
    w, lam = model.blend_weight_, model.mmr_lambda_
    try:
        model.blend_weight_, model.mmr_lambda_ = 0.0, 0.7  # views of the history do not matter at weight 0
        ids, _ = model.recommend_history(histories, k=8)
        idx, _ = model.topk_histories(hist, 8)
        assert (model.ids_of(idx) == ids).all()
        # score rows: the pipeline's top N (seen items included) on top, in list order; the retriever below
        users = np.arange(3)
        rows = model.score_users(users)
        picks, _ = model.topk_indices(users, model.config.n_candidates)
        n = model.config.n_candidates
        assert (np.argsort(-rows, axis=1, kind="stable")[:, :n] == picks).all()
        base = model.retriever.score_users(users)
        rest = np.argsort(-rows, axis=1, kind="stable")[:, n:]
        assert all((np.diff(base[r, rest[r]]) <= 0).all() for r in range(len(users)))
        h_rows = model.score_histories(hist)
        h_picks, _ = model.topk_histories(hist, n, exclude_seen=False)
        assert (np.argsort(-h_rows, axis=1, kind="stable")[:, :n] == h_picks).all()
    finally:
        model.blend_weight_, model.mmr_lambda_ = w, lam
