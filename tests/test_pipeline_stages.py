"""The pipeline's parts without a cross-encoder: the Stage protocol, each stage on small lists, score rows,
and the entry-point registration of ``pipeline`` (and of plug-in models)."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import pytest

from avrec.models import registry
from avrec.models.registry import create_model
from avrec.pipeline import (
    MMR,
    Context,
    CrossEncoderRank,
    Dedupe,
    Filters,
    Pipeline,
    Retrieve,
    Stage,
    raise_picks,
    run_stages,
)
from avrec.pipeline.rerank import dedupe_keys
from avrec.pipeline.stages import compact, empty_lists, finish
from avrec.testing import make_structured_dataset

ITEMS = pd.DataFrame({
    "item_id": ["i0", "i1", "i2", "i3", "i4", "i5"],
    "title": ["Alien", "alien!", "Heat", "Heat", "Up", ""],
    "year": ["1979", "1979", "1995", "1986", "2009", ""],
    "media_type": ["movie", "movie", "podcast", "movie", "podcast", "movie"],
})


@pytest.fixture(scope="module")
def ease():
    return create_model("ease").fit(make_structured_dataset())


def test_every_stage_follows_the_protocol(ease):
    filters = Filters(ITEMS)
    stages = [Retrieve(ease, 5, filters), CrossEncoderRank(None, 0.0, 5), MMR(0.5, 5, lambda: None),
              Dedupe(np.arange(6)), filters]
    assert all(isinstance(s, Stage) for s in stages)


def test_filters_allow_list_blocked_ids_and_guard():
    f = Filters(ITEMS, media_types=["Podcast "], blocked_items=["i4"])
    assert f.allowed(None).tolist() == [2]
    assert Filters(ITEMS).allowed(None) is None and Filters(ITEMS).allowed(np.array([3])).tolist() == [3]
    assert Filters(ITEMS, blocked_items=["i0"]).allowed(np.array([0, 1, 5])).tolist() == [1, 5]
    # as a stage it drops what a later stage brought in, keeping the order and moving padding to the end
    cands = np.array([[4, 2, 0, -1], [2, 2, -1, -1]])
    scores = np.array([[3.0, 2.0, 1.0, -np.inf], [5.0, 4.0, -np.inf, -np.inf]])
    c, s = f.apply(Context(k=3, user_idx=np.arange(2)), cands, scores)
    assert c.tolist() == [[2, -1, -1, -1], [2, 2, -1, -1]] and s[0, 0] == 2.0 and np.isneginf(s[0, 1:]).all()


def test_dedupe_moves_repeats_below_distinct_items():
    keys = dedupe_keys(ITEMS, ["title", "year"])
    assert keys[0] == keys[1] and keys[2] != keys[3] and keys[5] == "i5"  # no text: keyed on its id
    assert (dedupe_keys(ITEMS, ["no_such_field"]) == ITEMS["item_id"].to_numpy()).all()
    c, s = Dedupe(keys).apply(Context(k=4, user_idx=np.arange(1)), np.array([[0, 1, 2, 3]]),
                              np.array([[4.0, 3.0, 2.0, 1.0]]))
    assert c.tolist() == [[0, 2, 3, 1]] and s.tolist() == [[4.0, 2.0, 1.0, 0.0]]


def test_rank_order_at_weight_zero_is_the_retriever_order_and_the_tail_stays_below():
    rank = CrossEncoderRank(None, 0.0, 3)
    cands = np.array([[5, 4, 3, 2, 1], [7, 8, -1, -1, -1]])
    rscores = np.array([[9.0, 8.0, 7.0, 6.0, 1.0], [2.0, 1.0, -np.inf, -np.inf, -np.inf]], dtype=np.float32)
    c, s = rank.apply(Context(k=5, user_idx=np.arange(2)), cands, rscores)
    assert (c == cands).all()
    assert (np.diff(s[0]) < 0).all() and s[0, 3] < s[0, :3].min()
    assert np.isneginf(s[1, 2:]).all()
    # a blend of two orders: the logits reverse the head at weight 1
    c1, _ = rank.order(cands, rscores, np.array([[1.0, 2.0, 3.0], [0.0, 5.0, -np.inf]]), 1.0)
    assert c1[0].tolist() == [3, 4, 5, 2, 1] and c1[1, :2].tolist() == [8, 7]


def test_mmr_reorders_only_the_head():
    vecs = np.array([[1, 0], [1, 0.01], [0, 1], [0.7, 0.7], [1, 0]], dtype=np.float32)
    cands, scores = np.array([[0, 1, 2, 3, 4]]), np.array([[3.0, 2.9, 1.0, 0.5, -2.0]])
    ctx = Context(k=5, user_idx=np.arange(1))
    assert MMR(1.0, 4, lambda: vecs).apply(ctx, cands, scores)[0].tolist() == [[0, 1, 2, 3, 4]]
    c, s = MMR(0.3, 4, lambda: vecs).apply(ctx, cands, scores)
    assert c[0, :2].tolist() == [0, 2] and c[0, 4] == 4 and (np.diff(s[0]) <= 0).all()


def test_run_stages_and_finish(ease):
    seen = ease.seen[:3]
    ctx = Context(k=4, user_idx=np.arange(3), exclude=seen)
    ids, vals = run_stages([Retrieve(ease, 6)], ctx)
    ref_ids, ref_vals = ease.topk_indices(np.arange(3), 6, exclude=seen)
    assert (ids == ref_ids[:, :4]).all() and np.allclose(vals, ref_vals[:, :4]) and vals.dtype == np.float32
    # fold-in goes through score_histories; an empty allow-list gives padded lists
    hist = ease.history_matrix([["a00", "a01"]])
    h_ids, _ = run_stages([Retrieve(ease, 6)], Context(k=3, history=hist, exclude=hist))
    assert (h_ids == ease.topk_histories(hist, 3)[0]).all()
    none, _ = run_stages([Retrieve(ease, 6, Filters(ease.items, media_types=["vinyl"]))], ctx)
    assert (none == -1).all()
    i, v = finish(*empty_lists(2, 1), 3)
    assert i.shape == (2, 3) and np.isneginf(v).all()
    c, _ = compact(np.array([[1, 2, 3]]), np.zeros((1, 3)), np.array([[True, False, True]]))
    assert c.tolist() == [[1, 3, -1]]


def test_raise_picks_reproduces_the_list_then_the_base_order():
    base = np.array([[0.1, 0.5, 0.3, 0.9, 0.2]], dtype=np.float32)
    out = raise_picks(base, np.array([[2, 4, -1]]), None)
    assert np.argsort(-out[0]).tolist() == [2, 4, 3, 1, 0]
    cols = np.array([1, 2, 4])
    out = raise_picks(base[:, cols], np.array([[4, 0]]), cols)  # item 0 is not a column: ignored
    assert np.argsort(-out[0]).tolist() == [2, 0, 1]


def test_pipeline_is_an_entry_point_plugin():
    assert "pipeline" in registry.plugin_models()
    assert registry.plugin_models()["pipeline"] == "avrec.pipeline.model:Pipeline"
    assert registry.get_model_class("pipeline") is Pipeline
    assert registry.default_retriever() == "hybrid"


def test_third_party_models_register_through_the_entry_point_group(monkeypatch):
    fake = importlib.metadata.EntryPoint(name="mine", value="avrec.models.pop:Popularity",
                                         group=registry.ENTRY_POINT_GROUP)
    calls = []

    def entry_points(group):
        calls.append(group)
        return [fake, importlib.metadata.EntryPoint(name="ease", value="nowhere:Nothing", group=group)]

    monkeypatch.setattr(registry, "_plugins", None)
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert "mine" in registry.available_models() and registry.get_model_class("mine").name == "pop"
    assert registry.get_model_class("ease").name == "ease"  # a plug-in never shadows a built-in
    registry.available_models()
    assert calls == [registry.ENTRY_POINT_GROUP]  # read once, cached
    monkeypatch.setattr(registry, "_plugins", None)

