"""The shared behaviour suite every avrec ``Recommender`` must pass (in the spirit of implicit's test mixin).

Adding a model (yours too: a plug-in package can run it) takes three lines in a ``test_*.py`` file::

    from avrec.testing import RecommenderSuite

    class TestHybrid(RecommenderSuite):
        def make_model(self):
            return create_model("hybrid", max_steps=200)   # small and fast, but able to learn the groups

The suite fits ``make_model()`` on a tiny generated catalogue with obvious structure: two user groups
with disjoint tastes (space sci-fi vs. romance), Zipf-like popularity inside each group, item text that
says which group an item belongs to, and two catalogue items ("a_cold", "b_cold") with matching text but
no interactions. Class attributes tune what is asserted (flags, never skips):

- ``personalised`` (True): recommendations follow the user's history, so group-A users get group-A
  items and fold-in works; set False for a model that ignores the user (popularity).
- ``similar_items_follow_groups`` (True): ``similar_items`` of an A item are mostly A items.
- ``min_ndcg_gain`` (0.05): how far NDCG@10 on a held-out split must beat a random ranking.
- ``capabilities.cold_items`` comes from the model: True → items without interactions must be ranked by
  their text (a_cold above b_cold for group A) and ``add_items`` must work; False → ``add_items`` must
  raise ConfigError and leave the model unchanged.

Everything here uses only the public ``Recommender`` API plus ``topk_indices``/``evaluate_model``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pytest

from avrec.data.dataset import Dataset
from avrec.data.splits import random_split
from avrec.errors import ConfigError, DataError
from avrec.eval.evaluate import evaluate_model
from avrec.models.base import Recommender
from avrec.testing.data import GROUPS, group_of, make_structured_dataset, new_items_frame, random_ndcg

#: the user ids of each group ("a", "b")
Users = dict[str, list[str]]


def _looks_like_pickle(path: Path) -> bool:
    head = path.read_bytes()[:2]
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


class RecommenderSuite:
    """Mix-in of behaviour tests; subclass it and implement :meth:`make_model`."""

    personalised: ClassVar[bool] = True
    similar_items_follow_groups: ClassVar[bool] = True
    min_ndcg_gain: ClassVar[float] = 0.05
    #: False for models that standardise scores over the items being ranked (hybrid fusion): their
    #: score for an item then depends on which other items are scored with it
    candidate_independent_scores: ClassVar[bool] = True
    #: share of a group's users/items for which group-following checks must hold
    group_share: ClassVar[float] = 0.8

    def make_model(self) -> Recommender:
        """A fresh, unfitted model with a configuration small enough for this tiny data."""
        raise NotImplementedError

    # ---- fixtures (fitted once per test class) ----------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def data(cls) -> Dataset:
        return make_structured_dataset()

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, data: Dataset) -> Recommender:
        return cls().make_model().fit(data)

    @pytest.fixture(scope="class")
    @classmethod
    def users(cls, data: Dataset) -> Users:
        return {g: [u for u in data.user_ids if u[1] == g] for g in GROUPS}

    # ---- fitting ----------------------------------------------------------------------------------
    def test_fit_sets_catalogue(self, model: Recommender, data: Dataset) -> None:
        assert isinstance(model, Recommender)
        assert model.n_items == data.n_items
        assert list(model.item_ids) == list(data.item_ids)
        assert model.user_ids is not None and model.seen is not None and model.popularity is not None
        assert list(model.user_ids) == list(data.user_ids)
        assert model.seen.shape == (data.n_users, data.n_items)
        assert model.popularity.shape == (data.n_items,)
        assert model.name and type(model).__name__ in repr(model)

    def test_fit_rejects_no_interactions(self, data: Dataset) -> None:
        empty = data.subset(np.zeros(data.n_interactions, dtype=bool))
        with pytest.raises(DataError, match="no interactions"):
            self.make_model().fit(empty)

    def test_unfitted_model_says_so(self) -> None:
        with pytest.raises(ConfigError, match="not fitted"):
            self.make_model().recommend(["ua00"], k=3)

    # ---- recommend --------------------------------------------------------------------------------
    def test_recommend_shapes_and_dtypes(self, model: Recommender, data: Dataset, users: Users) -> None:
        who = users["a"][:3] + users["b"][:2]
        ids, scores = model.recommend(who, k=5)
        assert ids.shape == (5, 5) and scores.shape == (5, 5)
        assert ids.dtype == object and scores.dtype == np.float32
        catalogue = set(data.item_ids)
        for row in ids:
            assert all(isinstance(i, str) and i in catalogue for i in row)
            assert len(set(row)) == len(row), "an item is recommended twice"

    def test_scores_sorted_best_first(self, model: Recommender, users: Users) -> None:
        ids, scores = model.recommend(users["a"] + users["b"], k=12)
        valid = ids != None  # noqa: E711 - object array comparison
        assert np.isfinite(scores[valid]).all()
        filled = np.where(valid, scores, -np.inf)
        assert (np.diff(filled, axis=1) <= 1e-6).all(), "scores are not in descending order"

    def test_excludes_seen_only_when_asked(self, model: Recommender, data: Dataset, users: Users) -> None:
        user = users["a"][0]
        seen = set(data.history(user))
        n = data.n_items
        ids, scores = model.recommend([user], k=n)
        listed = [i for i in ids[0] if i is not None]
        assert not seen & set(listed)
        assert set(listed) == set(data.item_ids) - seen  # every other item is still rankable
        assert np.isneginf(scores[0, len(listed):]).all()
        ids, _ = model.recommend([user], k=n, exclude_seen=False)
        assert set(ids[0]) == set(data.item_ids)

    def test_candidates(self, model: Recommender, data: Dataset, users: Users) -> None:
        user = users["a"][1]
        seen = data.history(user)[:2]
        unseen = [i for i in data.item_ids if i not in set(data.history(user))]
        cands = seen + unseen[:2] + ["b05", "b05"]  # duplicates are harmless
        ids, scores = model.recommend([user], k=6, candidates=cands)
        listed = [i for i in ids[0] if i is not None]
        assert set(listed) == (set(cands) - set(seen))
        assert ids[0, len(listed):].tolist() == [None] * (6 - len(listed))
        ids, _ = model.recommend([user], k=6, exclude_seen=False, candidates=cands)
        assert set(i for i in ids[0] if i is not None) == set(cands)
        with pytest.raises(DataError, match="unknown item"):
            model.recommend([user], k=3, candidates=["a01", "no-such-item"])

    def test_pads_when_items_run_out(self, model: Recommender, data: Dataset, users: Users) -> None:
        user = users["b"][0]
        k = data.n_items + 5
        ids, scores = model.recommend([user], k=k)
        n_left = data.n_items - len(set(data.history(user)))
        assert ids.shape == (1, k)
        assert sum(i is not None for i in ids[0]) == n_left
        assert all(i is None for i in ids[0, n_left:])
        assert np.isneginf(scores[0, n_left:]).all()

    @pytest.mark.parametrize("bad_k", [0, -3, 2.5])
    def test_k_validation(self, model: Recommender, users: Users, bad_k: Any) -> None:
        with pytest.raises(ConfigError, match="k must"):
            model.recommend([users["a"][0]], k=bad_k)
        with pytest.raises(ConfigError, match="k must"):
            model.recommend_history([["a01"]], k=bad_k)
        with pytest.raises(ConfigError, match="k must"):
            model.similar_items(["a01"], k=bad_k)

    def test_unknown_users_get_a_fallback(self, model: Recommender, users: Users) -> None:
        known = users["a"][2]
        ids, scores = model.recommend(["ghost-user", known, "another-ghost"], k=5)
        assert list(model.known_users(["ghost-user", known])) == [False, True]
        for row in (0, 2):
            assert all(i is not None for i in ids[row])
            assert np.isfinite(scores[row]).all()
            assert (np.diff(scores[row]) <= 1e-6).all()
        alone_ids, alone_scores = model.recommend([known], k=5)
        assert ids[1].tolist() == alone_ids[0].tolist()  # rows do not influence each other
        np.testing.assert_allclose(scores[1], alone_scores[0], rtol=1e-5, atol=1e-6)

    def test_unknown_users_get_the_most_popular_items(self, model: Recommender, data: Dataset) -> None:
        """The library's fallback is popularity, most-interacted first, for every model (not catalogue order)."""
        k = 6
        ids, scores = model.recommend(["ghost-user"], k=k)
        pop = np.asarray(model.popularity)
        got = pop[model.items_to_index(list(ids[0]))]
        assert np.allclose(np.sort(got)[::-1], np.sort(pop)[::-1][:k]), (ids[0], got)
        assert (np.diff(got) <= 0).all(), "the fallback is not in popularity order"
        cands = ["a00", "b00", "a20", "b21", "a_cold"]
        ids, _ = model.recommend(["ghost-user"], k=3, candidates=cands)
        by_pop = sorted(cands, key=lambda i: -pop[model.item_index[i]])
        assert set(ids[0]) == set(by_pop[:3]) or pop[model.items_to_index(list(ids[0]))].min() >= np.sort(
            pop[model.items_to_index(cands)])[::-1][2]

    # ---- the public scoring contract --------------------------------------------------------------
    def test_public_scores_match_rankings_and_column_choices(self, model: Recommender, data: Dataset) -> None:
        users = np.arange(4)
        full = model.score_users(users)
        assert full.shape == (4, data.n_items) and full.dtype == np.float32
        cols = np.array([0, 5, data.n_items - 1])
        hist = model.history_matrix([["a00", "a01"], []])
        folded = model.score_histories(hist)
        assert folded.shape == (2, data.n_items)
        some, some_folded = model.score_users(users, cols), model.score_histories(hist, cols)
        assert some.shape == (4, 3) and some_folded.shape == (2, 3)
        if self.candidate_independent_scores:
            np.testing.assert_allclose(some, full[:, cols], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(some_folded, folded[:, cols], rtol=1e-4, atol=1e-5)
        rows = model.similarity_rows(np.array([1, 2]))
        assert rows.shape == (2, data.n_items)

    def test_capabilities_are_honest(self, model: Recommender, data: Dataset) -> None:
        caps = model.capabilities
        if caps.exact_fold_in:  # a user is their history: folding in a training row reproduces their scores
            users = np.arange(3)
            assert model.seen is not None
            np.testing.assert_allclose(model.score_histories(model.seen[users]), model.score_users(users),
                                       rtol=1e-4, atol=1e-5)
        vectors = model.item_vectors()
        if caps.item_vectors:
            assert vectors is not None and vectors.shape[0] == data.n_items
            assert model.item_vector_dim() == vectors.shape[1]
        else:
            assert vectors is None and model.item_vector_dim() is None
        if caps.text_queries:
            q = cast(Any, model).encode_query("a starship crew in deep space")  # not in the base contract
            assert vectors is not None and q.shape == (vectors.shape[1],)
        if caps.add_items:
            assert caps.cold_items, "a model that adds items must be able to score them"

    # ---- fold-in and similar items ----------------------------------------------------------------
    def test_recommend_history(self, model: Recommender, data: Dataset) -> None:
        hist_a = ["a00", "a01", "a02", "a05", "a07"]
        hist_b = ["b00", "b01", "b03", "b04", "b06"]
        ids, scores = model.recommend_history([hist_a, hist_b, []], k=5)
        assert ids.shape == (3, 5) and scores.dtype == np.float32
        assert not set(ids[0]) & set(hist_a) and not set(ids[1]) & set(hist_b)
        assert all(i is not None for i in ids[2]), "an empty history still gets recommendations"
        if self.personalised:
            assert sum(group_of(i) == "a" for i in ids[0]) >= 4, ids[0]
            assert sum(group_of(i) == "b" for i in ids[1]) >= 4, ids[1]
        ids, _ = model.recommend_history([hist_a], k=data.n_items, exclude_seen=False)
        assert set(hist_a) <= set(ids[0])
        ids, _ = model.recommend_history([hist_a], k=3, candidates=["b00", "a10", "a11"])
        assert set(ids[0]) == {"b00", "a10", "a11"}
        with pytest.raises(DataError, match="history 0"):
            model.recommend_history([["no-such-item"]], k=3)

    def test_similar_items(self, model: Recommender) -> None:
        query = ["a01", "a04", "b02", "b03"]
        ids, scores = model.similar_items(query, k=5)
        assert ids.shape == (4, 5) and scores.shape == (4, 5)
        for q, row in zip(query, ids):
            assert q not in set(row), "an item is listed as similar to itself"
            if self.similar_items_follow_groups:
                assert sum(group_of(i) == group_of(q) for i in row if i is not None) >= 4, (q, row)
        with pytest.raises(DataError):
            model.similar_items(["no-such-item"], k=3)

    # ---- quality on the structured data -----------------------------------------------------------
    def test_follows_group_structure(self, model: Recommender, users: Users) -> None:
        for g, group_users in users.items():
            ids, _ = model.recommend(group_users, k=5)
            own = np.array([[group_of(i) == g for i in row] for row in ids]).mean()
            if self.personalised:
                assert own >= self.group_share, f"only {own:.0%} of group-{g} recommendations are group-{g}"
            else:
                assert 0 < own <= 1

    def test_beats_random_on_held_out_split(self, data: Dataset) -> None:
        split = random_split(data, seed=0)
        model = self.make_model().fit(split.train, valid=split.valid)
        ndcg = evaluate_model(model, split, k=10)["ndcg@10"]
        baseline = random_ndcg(split)
        assert ndcg >= baseline + self.min_ndcg_gain, f"NDCG@10 {ndcg:.3f} vs random {baseline:.3f}"

    # ---- persistence ------------------------------------------------------------------------------
    def test_save_load_round_trip(self, model: Recommender, users: Users, tmp_path: Path) -> None:
        folder = model.save(tmp_path / "model")
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".npy", ".npz")]
        assert not [p for p in files if p.suffix != ".safetensors" and _looks_like_pickle(p)]
        loaded = Recommender.load(folder)
        assert type(loaded) is type(model)
        if dataclasses.is_dataclass(model.config) and not isinstance(model.config, type):
            assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
        who = users["a"][:4] + users["b"][:4] + ["ghost-user"]
        for call in (
            lambda m: m.recommend(who, k=7),
            lambda m: m.recommend(who[:3], k=4, candidates=["a01", "a02", "b01", "a_cold", "b_cold"]),
            lambda m: m.recommend_history([["a00", "a03"], ["b01"]], k=6),
            lambda m: m.similar_items(["a02", "b07"], k=5),
        ):
            (ids_a, sc_a), (ids_b, sc_b) = call(model), call(loaded)
            assert ids_a.tolist() == ids_b.tolist()
            np.testing.assert_allclose(sc_a, sc_b, rtol=1e-5, atol=1e-6)
        assert type(model).load(folder).n_items == model.n_items

    def test_load_rejects_non_model_folder(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="not a model folder"):
            Recommender.load(tmp_path)

    # ---- determinism ------------------------------------------------------------------------------
    def test_deterministic(self, data: Dataset, users: Users) -> None:
        who = users["a"][:5] + users["b"][:5]
        first = self.make_model().fit(data)
        again = self.make_model().fit(data)
        ids1, sc1 = first.recommend(who, k=8)
        ids2, sc2 = again.recommend(who, k=8)
        np.testing.assert_allclose(sc1, sc2, rtol=1e-5, atol=1e-6)
        assert ids1.tolist() == ids2.tolist()
        config = first.config
        if (dataclasses.is_dataclass(config) and not isinstance(config, type)
                and "seed" in {f.name for f in dataclasses.fields(config)}):
            other = type(first)(dataclasses.replace(config, seed=first.config.seed + 1)).fit(data)
            _, sc3 = other.recommend(who, k=8)
            assert not np.allclose(sc1, sc3), "changing the seed changed nothing: is the seed used?"

    # ---- items without interactions --------------------------------------------------------------
    def test_items_without_interactions(self, model: Recommender, users: Users) -> None:
        ids, scores = model.recommend(users["a"] + users["b"], k=2, candidates=["a_cold", "b_cold"])
        assert (ids != None).all() and np.isfinite(scores).all()  # noqa: E711
        if model.capabilities.cold_items and not self.personalised:  # one prior: the same order for everyone
            assert (ids[:, 0] == ids[0, 0]).all()
        elif model.capabilities.cold_items:
            n = len(users["a"])
            share_a = np.mean(ids[:n, 0] == "a_cold")
            share_b = np.mean(ids[n:, 0] == "b_cold")
            assert share_a >= self.group_share and share_b >= self.group_share, (share_a, share_b)

    def test_add_items(self, data: Dataset, users: Users, tmp_path: Path) -> None:
        model = self.make_model().fit(data)
        n = model.n_items
        new = new_items_frame()
        if not model.capabilities.add_items:
            with pytest.raises(ConfigError):
                model.add_items(new)
            assert model.n_items == n and "a_new" not in model.item_index
            return
        assert model.add_items(new) == 2
        assert model.n_items == n + 2 and list(model.item_ids[-2:]) == ["a_new", "b_new"]
        ids, _ = model.recommend_history([["a00", "a01", "a02"], ["b00", "b01", "b02"]], k=2,
                                         candidates=["a_new", "b_new"])
        if self.personalised:
            assert ids[:, 0].tolist() == ["a_new", "b_new"]
            ids, _ = model.recommend(users["a"], k=1, candidates=["a_new", "b_new"])
            assert np.mean(ids[:, 0] == "a_new") >= self.group_share
        else:
            assert ids[0, 0] == ids[1, 0] and set(ids[0]) == {"a_new", "b_new"}
        ids, _ = model.recommend(users["a"][:2], k=model.n_items)
        assert {"a_new", "b_new"} <= set(ids[0])
        with pytest.raises(DataError, match="already in the catalogue"):
            model.add_items(new.iloc[:1])
        loaded = Recommender.load(model.save(tmp_path / "grown"))
        assert loaded.n_items == n + 2
        a, _ = model.recommend_history([["a03"]], k=4, candidates=["a_new", "b_new", "a04"])
        b, _ = loaded.recommend_history([["a03"]], k=4, candidates=["a_new", "b_new", "a04"])
        assert a.tolist() == b.tolist()
