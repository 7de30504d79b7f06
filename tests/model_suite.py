"""The shared behaviour suite every avrec ``Recommender`` must pass (in the spirit of implicit's test mixin).

Adding a model takes three lines in a ``tests/test_*.py`` file::

    from model_suite import RecommenderSuite

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
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from avrec.data.dataset import Dataset, build_dataset
from avrec.data.splits import random_split
from avrec.errors import ConfigError, DataError
from avrec.eval.evaluate import evaluate_model
from avrec.eval.metrics import per_user_metrics
from avrec.models.base import Recommender

N_PER_GROUP = 24
USERS_PER_GROUP = 36
ITEMS_PER_USER = 10

GROUPS = {
    "a": {
        "genres": ["Sci-Fi", "Action", "Adventure"],
        "words": ["space", "galaxy", "robot", "starship", "alien", "planet", "laser", "orbit", "android",
                  "asteroid", "rocket", "cyborg", "nebula", "astronaut", "spaceship", "martian"],
        "sentence": "A {0} crew fights a {1} {2} on a distant {3}, far out in deep space among the stars.",
    },
    "b": {
        "genres": ["Romance", "Comedy", "Drama"],
        "words": ["love", "wedding", "romance", "kiss", "heart", "date", "marriage", "couple", "valentine",
                  "bride", "sweetheart", "honeymoon", "engagement", "flirt", "boyfriend", "girlfriend"],
        "sentence": "Two {0} lovers plan a {1} {2} and fall in love again after a {3} romance and a kiss.",
    },
}


def group_of(item_id: str) -> str:
    """'a' or 'b': every generated item id starts with its group letter."""
    return str(item_id)[0]


def _item_row(group: str, name: str, rng: np.random.Generator) -> dict:
    spec = GROUPS[group]
    w = rng.choice(spec["words"], size=6, replace=False)
    return {
        "item_id": name,
        "title": f"{w[0].title()} {w[1].title()}",
        "media_type": "movie",
        "genres": "|".join(rng.choice(spec["genres"], size=2, replace=False)),
        "tags": "|".join(w[2:5]),
        "overview": spec["sentence"].format(*w[:4]),
        "year": str(1990 + int(rng.integers(0, 30))),
    }


def new_items_frame(seed: int = 99) -> pd.DataFrame:
    """Two items that are not in the generated catalogue: 'a_new' (group-A text) and 'b_new'."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([_item_row("a", "a_new", rng), _item_row("b", "b_new", rng)])


def make_structured_dataset(seed: int = 0) -> Dataset:
    """Two groups of users with disjoint tastes, plus two catalogue items that nobody has seen."""
    rng = np.random.default_rng(seed)
    items = [_item_row(g, f"{g}{i:02d}", rng) for g in GROUPS for i in range(N_PER_GROUP)]
    items += [_item_row("a", "a_cold", rng), _item_row("b", "b_cold", rng)]
    p = 1.0 / np.arange(1, N_PER_GROUP + 1) ** 0.9
    p /= p.sum()
    rows, t = [], 1_600_000_000
    for g in GROUPS:
        for u in range(USERS_PER_GROUP):
            for i in rng.choice(N_PER_GROUP, size=ITEMS_PER_USER, replace=False, p=p):
                t += int(rng.integers(1, 100))
                rows.append((f"u{g}{u:02d}", f"{g}{i:02d}", 1.0, t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    return build_dataset(pd.DataFrame(items), inter, name="two-groups")


def random_ndcg(split, k: int = 10, repeats: int = 20, seed: int = 0) -> float:
    """Expected NDCG@k of a uniformly random ranking under the same exclusions as evaluate_model."""
    truth = split.test.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    exclude = (split.train.matrix(binary=True) + split.valid.matrix(binary=True)).tocsr()
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        scores = rng.random((len(users), split.train.n_items))
        for r, u in enumerate(users):
            scores[r, exclude[u].indices] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :k]
        values.append(per_user_metrics(top, truth[users], k)["ndcg"].mean())
    return float(np.mean(values))


def _looks_like_pickle(path: Path) -> bool:
    head = path.read_bytes()[:2]
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


class RecommenderSuite:
    """Mix-in of behaviour tests; subclass it and implement :meth:`make_model`."""

    personalised: ClassVar[bool] = True
    similar_items_follow_groups: ClassVar[bool] = True
    min_ndcg_gain: ClassVar[float] = 0.05
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
    def model(cls, data) -> Recommender:
        return cls().make_model().fit(data)

    @pytest.fixture(scope="class")
    @classmethod
    def users(cls, data) -> dict[str, list[str]]:
        return {g: [u for u in data.user_ids if u[1] == g] for g in GROUPS}

    # ---- fitting ----------------------------------------------------------------------------------
    def test_fit_sets_catalogue(self, model, data):
        assert isinstance(model, Recommender)
        assert model.n_items == data.n_items
        assert list(model.item_ids) == list(data.item_ids)
        assert list(model.user_ids) == list(data.user_ids)
        assert model.seen.shape == (data.n_users, data.n_items)
        assert model.popularity.shape == (data.n_items,)
        assert model.name and type(model).__name__ in repr(model)

    def test_fit_rejects_no_interactions(self, data):
        empty = data.subset(np.zeros(data.n_interactions, dtype=bool))
        with pytest.raises(DataError, match="no interactions"):
            self.make_model().fit(empty)

    def test_unfitted_model_says_so(self):
        with pytest.raises(ConfigError, match="not fitted"):
            self.make_model().recommend(["ua00"], k=3)

    # ---- recommend --------------------------------------------------------------------------------
    def test_recommend_shapes_and_dtypes(self, model, data, users):
        who = users["a"][:3] + users["b"][:2]
        ids, scores = model.recommend(who, k=5)
        assert ids.shape == (5, 5) and scores.shape == (5, 5)
        assert ids.dtype == object and scores.dtype == np.float32
        catalogue = set(data.item_ids)
        for row in ids:
            assert all(isinstance(i, str) and i in catalogue for i in row)
            assert len(set(row)) == len(row), "an item is recommended twice"

    def test_scores_sorted_best_first(self, model, users):
        ids, scores = model.recommend(users["a"] + users["b"], k=12)
        valid = ids != None  # noqa: E711 - object array comparison
        assert np.isfinite(scores[valid]).all()
        filled = np.where(valid, scores, -np.inf)
        assert (np.diff(filled, axis=1) <= 1e-6).all(), "scores are not in descending order"

    def test_excludes_seen_only_when_asked(self, model, data, users):
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

    def test_candidates(self, model, data, users):
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

    def test_pads_when_items_run_out(self, model, data, users):
        user = users["b"][0]
        k = data.n_items + 5
        ids, scores = model.recommend([user], k=k)
        n_left = data.n_items - len(set(data.history(user)))
        assert ids.shape == (1, k)
        assert sum(i is not None for i in ids[0]) == n_left
        assert all(i is None for i in ids[0, n_left:])
        assert np.isneginf(scores[0, n_left:]).all()

    @pytest.mark.parametrize("bad_k", [0, -3, 2.5])
    def test_k_validation(self, model, users, bad_k):
        with pytest.raises(ConfigError, match="k must"):
            model.recommend([users["a"][0]], k=bad_k)
        with pytest.raises(ConfigError, match="k must"):
            model.recommend_history([["a01"]], k=bad_k)
        with pytest.raises(ConfigError, match="k must"):
            model.similar_items(["a01"], k=bad_k)

    def test_unknown_users_get_a_fallback(self, model, users):
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

    # ---- fold-in and similar items ----------------------------------------------------------------
    def test_recommend_history(self, model, data):
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

    def test_similar_items(self, model):
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
    def test_follows_group_structure(self, model, users):
        for g, group_users in users.items():
            ids, _ = model.recommend(group_users, k=5)
            own = np.array([[group_of(i) == g for i in row] for row in ids]).mean()
            if self.personalised:
                assert own >= self.group_share, f"only {own:.0%} of group-{g} recommendations are group-{g}"
            else:
                assert 0 < own <= 1

    def test_beats_random_on_held_out_split(self, data):
        split = random_split(data, seed=0)
        model = self.make_model().fit(split.train, valid=split.valid)
        ndcg = evaluate_model(model, split, k=10)["ndcg@10"]
        baseline = random_ndcg(split)
        assert ndcg >= baseline + self.min_ndcg_gain, f"NDCG@10 {ndcg:.3f} vs random {baseline:.3f}"

    # ---- persistence ------------------------------------------------------------------------------
    def test_save_load_round_trip(self, model, users, tmp_path):
        folder = model.save(tmp_path / "model")
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".npy", ".npz")]
        assert not [p for p in files if p.suffix != ".safetensors" and _looks_like_pickle(p)]
        loaded = Recommender.load(folder)
        assert type(loaded) is type(model)
        if dataclasses.is_dataclass(model.config):
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

    def test_load_rejects_non_model_folder(self, tmp_path):
        with pytest.raises(DataError, match="not a model folder"):
            Recommender.load(tmp_path)

    # ---- determinism ------------------------------------------------------------------------------
    def test_deterministic(self, data, users):
        who = users["a"][:5] + users["b"][:5]
        first = self.make_model().fit(data)
        again = self.make_model().fit(data)
        ids1, sc1 = first.recommend(who, k=8)
        ids2, sc2 = again.recommend(who, k=8)
        np.testing.assert_allclose(sc1, sc2, rtol=1e-5, atol=1e-6)
        assert ids1.tolist() == ids2.tolist()
        config = first.config
        if dataclasses.is_dataclass(config) and "seed" in {f.name for f in dataclasses.fields(config)}:
            other = type(first)(dataclasses.replace(config, seed=config.seed + 1)).fit(data)
            _, sc3 = other.recommend(who, k=8)
            assert not np.allclose(sc1, sc3), "changing the seed changed nothing: is the seed used?"

    # ---- items without interactions --------------------------------------------------------------
    def test_items_without_interactions(self, model, users):
        ids, scores = model.recommend(users["a"] + users["b"], k=2, candidates=["a_cold", "b_cold"])
        assert (ids != None).all() and np.isfinite(scores).all()  # noqa: E711
        if model.capabilities.cold_items:
            n = len(users["a"])
            share_a = np.mean(ids[:n, 0] == "a_cold")
            share_b = np.mean(ids[n:, 0] == "b_cold")
            assert share_a >= self.group_share and share_b >= self.group_share, (share_a, share_b)

    def test_add_items(self, data, users, tmp_path):
        model = self.make_model().fit(data)
        n = model.n_items
        new = new_items_frame()
        if not model.capabilities.cold_items:
            with pytest.raises(ConfigError):
                model.add_items(new)
            assert model.n_items == n and "a_new" not in model.item_index
            return
        assert model.add_items(new) == 2
        assert model.n_items == n + 2 and list(model.item_ids[-2:]) == ["a_new", "b_new"]
        ids, _ = model.recommend_history([["a00", "a01", "a02"], ["b00", "b01", "b02"]], k=2,
                                         candidates=["a_new", "b_new"])
        assert ids[:, 0].tolist() == ["a_new", "b_new"]
        ids, _ = model.recommend(users["a"], k=1, candidates=["a_new", "b_new"])
        assert np.mean(ids[:, 0] == "a_new") >= self.group_share
        ids, _ = model.recommend(users["a"][:2], k=model.n_items)
        assert {"a_new", "b_new"} <= set(ids[0])
        with pytest.raises(DataError, match="already in the catalogue"):
            model.add_items(new.iloc[:1])
        loaded = Recommender.load(model.save(tmp_path / "grown"))
        assert loaded.n_items == n + 2
        a, _ = model.recommend_history([["a03"]], k=4, candidates=["a_new", "b_new", "a04"])
        b, _ = loaded.recommend_history([["a03"]], k=4, candidates=["a_new", "b_new", "a04"])
        assert a.tolist() == b.tolist()
