"""hybrid, tfidf and the fusion helpers: the shared model suite plus behaviour specific to fusion."""

from __future__ import annotations

import atexit
import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest

from avrec.data.splits import cold_item_split, random_split
from avrec.eval.evaluate import evaluate_model
from avrec.eval.validation import ValidationSet
from avrec.models.blend import fuse, standardise, tune_weights
from avrec.models.registry import create_model
from avrec.models.base import Recommender
from avrec.testing import RecommenderSuite, make_structured_dataset

# One embedding cache for the whole module: each fit re-reads the vectors instead of re-encoding the catalogue.
CACHE = tempfile.mkdtemp(prefix="avrec-test-embeddings-")
atexit.register(shutil.rmtree, CACHE, True)
TINY = dict(max_steps=150, eval_every=25, dim=32, hidden=64, batch_users=32, use_lm=True, embedding_cache=CACHE,
            ease_l2=5.0, als_factors=8, als_regularization=0.5, als_alpha=5.0, internal_valid_share=0.15)


class TestTfidf(RecommenderSuite):
    def make_model(self):
        return create_model("tfidf", min_df=1)


class TestHybrid(RecommenderSuite):
    candidate_independent_scores = False  # fusion standardises over the ranked items

    def make_model(self):
        return create_model("hybrid", **TINY)


class TestHybridWithoutLM(RecommenderSuite):
    """The towers must also work from lexical and categorical features alone (use_lm=false)."""

    candidate_independent_scores = False

    def make_model(self):
        return create_model("hybrid", **(TINY | {"use_lm": False}))


def test_standardise_and_fuse():
    s = np.array([[1.0, 2.0, 3.0, np.nan]], dtype=np.float32)
    z = standardise(s)
    assert z[0, 3] == 0.0  # missing evidence = the row mean
    assert np.isclose(z[0, :3].mean(), 0.0, atol=1e-6) and np.isclose(z[0, :3].std(), 1.0, atol=1e-5)
    assert np.allclose(fuse([z, 2 * z], [1.0, 0.5]), 2 * z)


def test_tune_weights_finds_the_informative_component():
    rng = np.random.default_rng(0)
    import scipy.sparse as sp

    truth = sp.csr_matrix((rng.random((40, 30)) < 0.1).astype(np.float32))
    useful = standardise(truth.toarray() + 0.1 * rng.random((40, 30)))
    noise = standardise(rng.random((40, 30)))
    weights, score = tune_weights([noise, useful], ValidationSet(np.arange(40), truth, None))
    assert weights[1] > 0 and (weights[0] == 0 or weights[1] / max(weights[0], 1e-9) >= 2)
    assert score > 0.9


@pytest.fixture(scope="module")
def structured():
    return make_structured_dataset(seed=3)


def test_hybrid_tunes_weights_on_the_given_validation(structured):
    split = random_split(structured, seed=1)
    model = create_model("hybrid", **TINY).fit(split.train, valid=split.valid)
    assert len(model.warm_weights) == 1 + len(model.warm_components)
    assert model.report["valid_warm_ndcg@10"] > 0
    assert model.report["best_step"] >= TINY["eval_every"]


def test_hybrid_cold_protocol_uses_text(structured):
    split = cold_item_split(structured, cold_share=0.25, valid_share=0.15, seed=2)
    model = create_model("hybrid", **TINY).fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
    assert model.cold_weights and "tfidf" in model.cold_components
    assert model.cold_mask[split.test_candidates].all()
    ndcg = evaluate_model(model, split, 10)["ndcg@10"]
    pop = evaluate_model(create_model("pop").fit(split.train), split, 10, allow_cold_unaware=True)["ndcg@10"]
    assert ndcg > pop + 0.1  # popularity knows nothing about cold items; text does


def test_search_and_fold_in(structured):
    model = create_model("hybrid", **TINY).fit(structured)
    ids, scores = model.search("a starship crew in deep space fights aliens", k=5)
    assert sum(str(i).startswith("a") for i in ids) >= 4
    a_items = [i for i in model.item_ids if str(i).startswith("a")][:5]
    rec, _ = model.recommend_history([a_items], k=5)
    assert sum(str(i).startswith("a") for i in rec[0]) >= 4


def test_ann_path_matches_exact_ranking(structured):
    exact = create_model("hybrid", **TINY).fit(structured)
    ann = create_model("hybrid", **(TINY | {"ann_kind": "hnsw", "ann_candidates": 60})).fit(structured)
    assert ann.ann is not None and exact.ann is None
    users = list(structured.user_ids[:10])
    a, _ = exact.recommend(users, k=5)
    b, _ = ann.recommend(users, k=5)
    overlap = np.mean([len(set(x) & set(y)) / 5 for x, y in zip(a, b)])
    assert overlap >= 0.8


def test_add_items_survives_save_load(structured, tmp_path):
    model = create_model("hybrid", **TINY).fit(structured)
    new = pd.DataFrame({"item_id": ["a_new"], "title": ["Starship Nebula"], "genres": ["Sci-Fi"],
                        "overview": ["An astronaut crew flies a starship through a nebula in deep space."]})
    model.add_items(new)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert "a_new" in set(loaded.item_ids)
    users = list(structured.user_ids[:6])
    x, sx = model.recommend(users, k=10, candidates=[i for i in model.item_ids if str(i).startswith(("a_new", "a_cold", "b_cold"))])
    y, sy = loaded.recommend(users, k=10, candidates=[i for i in model.item_ids if str(i).startswith(("a_new", "a_cold", "b_cold"))])
    assert (x == y).all() and np.allclose(sx, sy, atol=1e-5)


class TestContent(RecommenderSuite):
    def make_model(self):
        return create_model("content", embedding_cache=CACHE)


def test_cli_add_items_makes_new_items_recommendable(structured, tmp_path, capsys):
    from avrec.cli import main
    from avrec.data.io import write_folder

    folder = write_folder(structured.items, structured.interactions_frame(), tmp_path / "data")
    assert main(["fit", str(folder), "--model", "tfidf", "--out", str(tmp_path / "m"), "--run-dir", str(tmp_path / "run")]) == 0
    pd.DataFrame({"item_id": ["a_brand_new"], "title": ["Starship Galaxy"], "genres": ["Sci-Fi"],
                  "overview": ["A starship crew explores a distant galaxy and fights an alien robot in deep space."]}
                 ).to_csv(tmp_path / "new.csv", index=False)
    assert main(["add-items", str(tmp_path / "m"), str(tmp_path / "new.csv")]) == 0
    assert "added 1 item" in capsys.readouterr().out
    model = Recommender.load(tmp_path / "m")
    a_user = next(u for u in structured.user_ids if model.seen[model.user_index[u]].indices.size
                  and str(model.item_ids[model.seen[model.user_index[u]].indices[0]]).startswith("a"))
    ids, _ = model.recommend([a_user], k=3, candidates=["a_brand_new", "b_cold", "a_cold"])
    assert "a_brand_new" in set(ids[0][:2])
    (tmp_path / "dup.csv").write_text("item_id,title\na_brand_new,again\n")
    assert main(["add-items", str(tmp_path / "m"), str(tmp_path / "dup.csv")]) == 2
    assert "already in the catalogue" in capsys.readouterr().err


# ---- defects found by a new user (issue 11) ------------------------------------------------------
def _thin_dataset(n_items: int, n_users: int, per_user: int, seed: int = 0, genres: bool = True):
    from avrec.data.dataset import build_dataset

    rng = np.random.default_rng(seed)
    items = {"item_id": [f"i{j}" for j in range(n_items)], "title": [f"Item {j} ({1950 + j % 70})" for j in range(n_items)]}
    if genres:
        items["genres"] = [("Drama|Comedy", "Action", "Jazz|Rock")[j % 3] for j in range(n_items)]
    rows = [(f"u{u}", f"i{j}", 1.0, 0) for u in range(n_users) for j in rng.choice(n_items, per_user, replace=False)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    return build_dataset(pd.DataFrame(items), inter, name="thin")


@pytest.fixture(scope="module")
def wide_hybrid():
    data = _thin_dataset(2000, 200, 15)
    return create_model("hybrid", use_lm=False, max_steps=10, eval_every=5, dim=16, hidden=32, als_factors=8,
                        als_iterations=2).fit(data)


@pytest.mark.parametrize("call", ["recommend", "recommend_history", "similar_items", "ease_candidates"])
def test_scoring_one_user_allocates_about_one_score_row(wide_hybrid, call):
    """Serving one request must not copy an items × items matrix (EASE columns once cost ~1 s per request)."""
    import tracemalloc

    m = wide_hybrid
    calls = {
        "recommend": lambda: m.recommend(["u1"], k=10),
        "recommend_history": lambda: m.recommend_history([["i1", "i2", "i3"]], k=10),
        "similar_items": lambda: m.similar_items(["i1"], k=10),
        "ease_candidates": lambda: m.components["ease"].recommend(["u1"], k=10, candidates=[f"i{j}" for j in range(1500)]),
    }
    calls[call]()  # caches (id maps, unit vectors) are built once, outside the measurement
    tracemalloc.start()
    calls[call]()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    row = m.n_items * 4
    assert peak < 200 * row, f"{call} allocated {peak / row:.0f} score rows"


def test_ease_column_selection_matches_full_scores(wide_hybrid):
    ease = wide_hybrid.components["ease"]
    users = np.arange(5)
    cols = np.array([3, 10, 999, 1500])
    full = ease.score_users(users, None)
    assert np.allclose(ease.score_users(users, cols), full[:, cols], atol=1e-6)
    # similar items: co-occurrence cosine over the training matrix (sparse; W + Wᵀ rows cost 34 ms a request)
    sims = ease.similarity_rows(np.array([7]))
    x = ease.seen.toarray()
    n = np.linalg.norm(x, axis=0)
    expect = (x[:, 7] @ x) / (max(n[7], 1e-12) * np.where(n > 0, n, 1))
    assert np.allclose(sims[0], expect, atol=1e-5)


def test_hybrid_fits_when_no_user_has_two_interactions():
    data = _thin_dataset(6, 6, 1)
    with pytest.warns(UserWarning, match="no user has two or more interactions"):
        model = create_model("hybrid", use_lm=False, max_steps=10, eval_every=5, dim=8, hidden=8).fit(data)
    ids, scores = model.recommend(["u0", "someone-new"], k=3)
    assert all(i is not None for i in ids[1]) and np.isfinite(scores).all()
    assert model.warm_weights[0] == 0.0  # untrained towers get no say


def test_hybrid_leaves_out_a_component_with_nothing_to_work_with():
    """Titles only (no genres or tags): kgpath has no entities and is left out instead of failing the fit."""
    data = _thin_dataset(60, 30, 6, genres=False)
    with pytest.warns(UserWarning, match="component 'kgpath' left out"):
        model = create_model("hybrid", use_lm=False, max_steps=10, eval_every=5, dim=8, hidden=8).fit(data)
    assert "kgpath" not in model.components and "tfidf" in model.cold_components
    assert "kgpath" in model.report["skipped_components"]
    ids, _ = model.recommend(["u0"], k=5)
    assert all(i is not None for i in ids[0])


# ---- nested component sections and their old flat keys (issue 13) -----------------------------------
def test_hybrid_config_nested_component_sections():
    from avrec.config import apply_overrides, parse_set_options

    m = create_model("hybrid", {"ease": {"l2": "250"}, "als": {"factors": "8", "iterations": 2}})
    assert (m.config.ease.l2, m.config.ease.max_items) == (250.0, 20000)  # the hybrid's own EASE default kept
    assert (m.config.als.factors, m.config.als.iterations, m.config.als.regularization) == (8, 2, 50.0)
    c = apply_overrides(m.config, parse_set_options(["kgpath.idf_power=0.5", "itemknn.neighbours=20"]))
    assert c.kgpath.idf_power == 0.5 and c.itemknn.neighbours == 20 and m.config.kgpath.idf_power == 1.0


def test_hybrid_config_old_alias_keys_still_work():
    from avrec.errors import ConfigError

    m = create_model("hybrid", ease_l2=5.0, ease_max_items=100, als_factors=8, als_regularization=0.5,
                     als_alpha=5.0, als_iterations=3)
    assert (m.config.ease.l2, m.config.ease.max_items) == (5.0, 100)
    assert (m.config.als.factors, m.config.als.regularization, m.config.als.alpha, m.config.als.iterations) == (8, 0.5, 5.0, 3)
    assert not hasattr(m.config, "ease_l2")
    with pytest.raises(ConfigError, match="ease_l2 is an old name of ease.l2; set only one"):
        create_model("hybrid", {"ease_l2": 1, "ease": {"l2": 2}})


def test_hybrid_config_unknown_nested_key_lists_the_valid_ones():
    from avrec.cli.settings import load_settings, resolve_settings
    from avrec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown setting 'models\.hybrid\.ease\.l3' for EASEConfig; valid: l2, max_items"):
        resolve_settings(load_settings(None, ["models.hybrid.ease.l3=1"]), ["hybrid"])
    with pytest.raises(ConfigError, match=r"models\.hybrid\.als is a section"):
        resolve_settings(load_settings(None, ["models.hybrid.als=3"]), ["hybrid"])
    settings = resolve_settings(load_settings(None, ["models.hybrid.ease_l2=250", "model.als.factors=16"]), ["hybrid"])
    assert settings.models["hybrid"].ease.l2 == 250.0 and settings.models["hybrid"].als.factors == 16


def test_hybrid_config_components_built_from_the_sections_and_old_saved_folder_loads(tmp_path):
    import json

    data = _thin_dataset(40, 30, 6)
    model = create_model("hybrid", use_lm=False, max_steps=10, eval_every=5, dim=8, hidden=8, seed=11,
                         ease={"l2": 42.0}, als={"factors": 4, "iterations": 2}).fit(data)
    assert model.components["ease"].config.l2 == 42.0 and model.components["ease"].config.max_items == 20000
    assert model.components["als"].config.factors == 4 and model.components["als"].config.seed == 11  # seed follows
    model.save(tmp_path / "m")
    # rewrite config.json as an older avrec wrote it: flat keys, plus a key this version no longer has
    meta_path = tmp_path / "m" / "config.json"
    meta = json.loads(meta_path.read_text())
    cfg = meta["config"]
    ease, als = cfg.pop("ease"), cfg.pop("als")
    cfg.update(ease_l2=ease["l2"], ease_max_items=ease["max_items"], als_factors=als["factors"],
               als_regularization=als["regularization"], als_alpha=als["alpha"], als_iterations=als["iterations"],
               long_gone_setting=1)
    cfg["kgpath"]["removed_in_a_later_version"] = True
    meta_path.write_text(json.dumps(meta))
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.config.ease.l2 == 42.0 and loaded.config.als.factors == 4 and loaded.config.als.iterations == 2
    ids, scores = model.recommend(["u0", "u1"], k=5)
    ids2, scores2 = loaded.recommend(["u0", "u1"], k=5)
    assert (ids == ids2).all() and np.allclose(scores, scores2, atol=1e-5)
