"""Every-signal features (data.fields, models.field_features) and the models built on them: the
field-weighted ``tfidf`` (weights tuned on validation) and ``contentpop``; plus the shared coordinate search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avrec.data.dataset import Dataset
from avrec.data.fields import infer_fields, years_of
from avrec.data.splits import cold_item_split
from avrec.eval.evaluate import evaluate_model
from avrec.eval.validation import ValidationSet
from avrec.models.base import Recommender
from avrec.models.blend import standardise, tune_weights
from avrec.models.field_features import FieldVectorizer
from avrec.models.registry import create_model
from avrec.testing import RecommenderSuite, new_items_frame
from avrec.training import coordinate_search


def test_column_kinds_come_from_the_values():
    items = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(40)],
        "title": [f"Film number {i} (19{50 + i})" for i in range(40)],
        "genres": ["Drama|Crime", "Comedy"] * 20,
        "runtime": [str(80 + i) for i in range(40)],
        "release_date": [f"19{50 + i}-05-01" for i in range(40)],
        "studio_code": [f"X{i:04d}" for i in range(40)],
        "language": ["en", "fr", "de", "en"] * 10,
        "empty": [""] * 40,
    })
    kinds = {f.column: f.kind for f in infer_fields(items)}
    assert kinds == {"item_id": "id", "title": "text", "genres": "categorical", "runtime": "numeric",
                     "release_date": "year", "studio_code": "id", "language": "categorical", "empty": "id"}
    assert years_of(items, "release_date")[:2].tolist() == [1950.0, 1951.0]


def test_year_inside_titles_is_a_field_when_no_year_column_exists():
    items = pd.DataFrame({"item_id": ["1", "2", "3"], "title": ["Heat (1995)", "Alien (1979)", "Untitled"]})
    fields = infer_fields(items)
    assert ("title_year", "year") in [(f.column, f.kind) for f in fields]
    assert np.isnan(years_of(items, "title_year")[2]) and years_of(items, "title_year")[0] == 1995


def test_field_blocks_share_years_buckets_and_words_of_values():
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["One", "Two", "Three"],
                          "year": ["1994", "1993", "2011"], "tags": ["black metal|live", "metal", "jazz"]})
    vec = FieldVectorizer()
    blocks = vec.fit_transform(items)
    year, tags = blocks["year"].toarray(), blocks["tags"].toarray()
    assert year[0] @ year[1] > 0 and year[0] @ year[2] == 0  # 1994 and 1993 share a bucket, 2011 nothing
    assert tags[0] @ tags[1] > 0 and tags[0] @ tags[2] == 0  # "black metal" contains the word "metal"
    new = vec.transform(pd.DataFrame({"item_id": ["d"], "year": ["1992"]}))  # no title or tags column
    assert new["title"].nnz == 0 and new["tags"].nnz == 0 and new["year"].nnz > 0


def _year_driven_dataset(seed: int = 0) -> Dataset:
    """Users who watch one era; titles are noise and genres are shared by everyone: only the year tells."""
    rng = np.random.default_rng(seed)
    n_items, n_users = 240, 120
    years = np.where(np.arange(n_items) % 2 == 0, rng.integers(1950, 1960, n_items), rng.integers(2010, 2020, n_items))
    items = pd.DataFrame({"item_id": [f"m{i}" for i in range(n_items)],
                          "title": [" ".join(rng.choice(["red", "blue", "night", "day", "love", "war"], 2))
                                    for _ in range(n_items)],
                          "year": years.astype(str), "genres": ["Drama|Comedy"] * n_items})
    users, item_idx = [], []
    for u in range(n_users):
        era = u % 2
        pool = np.flatnonzero((np.arange(n_items) % 2) == era)
        for i in rng.choice(pool, 15, replace=False):
            users.append(u)
            item_idx.append(i)
    n = len(users)
    return Dataset(items, np.array([f"u{u}" for u in range(n_users)], dtype=object), np.array(users),
                   np.array(item_idx), np.ones(n, np.float32), np.full(n, -1))


def test_tfidf_tunes_field_weights_on_cold_validation_and_keeps_them(tmp_path):
    split = cold_item_split(_year_driven_dataset(), 0.2, 0.2, seed=1)
    model = create_model("tfidf").fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
    weights = model.config.field_weights
    assert weights["year"] > 0 and weights["year"] >= weights["title"]
    untuned = create_model("tfidf", tune=False, field_weights={"year": 0.0}).fit(split.train)
    assert evaluate_model(model, split)["ndcg@10"] > evaluate_model(untuned, split)["ndcg@10"] + 0.1
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert loaded.config.field_weights == weights
    a, _ = model.recommend(["u0", "u1"], k=5)
    b, _ = loaded.recommend(["u0", "u1"], k=5)
    assert (a == b).all()


def test_contentpop_predicts_popularity_of_items_without_interactions():
    data = _year_driven_dataset()
    # make the recent items popular: every user also watched one of the first 20 recent items
    extra_users = np.arange(120)
    recent = np.flatnonzero(np.arange(240) % 2 == 1)[:20]
    data = Dataset(data.items, data.user_ids, np.r_[data.user_idx, extra_users], np.r_[data.item_idx, recent[extra_users % 20]],
                   np.ones(len(data.user_idx) + 120, np.float32), np.full(len(data.user_idx) + 120, -1))
    split = cold_item_split(data, 0.2, 0.1, seed=3)
    model = create_model("contentpop").fit(split.train)
    cold = split.test_candidates
    prior = model.score_users(np.array([0]), cold)[0]
    is_recent = np.array([int(y) >= 2010 for y in data.items["year"].iloc[cold]])
    assert prior[is_recent].mean() > prior[~is_recent].mean()


class TestContentPopularity(RecommenderSuite):
    personalised = False  # one prior for everyone

    def make_model(self):
        return create_model("contentpop")


def test_coordinate_search_is_never_worse_than_its_best_start():
    def objective(p: dict[str, float]) -> float:
        return -((p["x"] - 2.0) ** 2) - (p["y"] - 0.5) ** 2

    params, best = coordinate_search(objective, [{"x": 0.0, "y": 0.0}, {"x": 4.0, "y": 4.0}],
                                     {"x": [0.0, 1.0, 2.0, 4.0], "y": [0.0, 0.5, 1.0]})
    assert params == {"x": 2.0, "y": 0.5} and best == 0.0


def test_fusion_falls_back_to_the_best_single_component():
    rng = np.random.default_rng(0)
    truth = np.zeros((50, 30), np.float32)
    truth[np.arange(50), rng.integers(0, 30, 50)] = 1
    import scipy.sparse as sp

    check = ValidationSet(np.arange(50), sp.csr_matrix(truth), None)
    good = standardise(truth + rng.normal(0, 0.3, truth.shape).astype(np.float32))
    noise = [standardise(rng.normal(size=truth.shape).astype(np.float32)) for _ in range(3)]
    weights, score = tune_weights([*noise, good], check)
    assert score >= check.ndcg(good) and weights[-1] > 0


def test_new_items_get_field_features_in_tfidf():
    data = _year_driven_dataset()
    model = create_model("tfidf").fit(data)
    new = new_items_frame()[["item_id", "title", "year"]]
    model.add_items(new)
    assert model.n_items == data.n_items + len(new)


@pytest.mark.parametrize("name", ["tfidf", "contentpop"])
def test_catalogue_without_features_is_not_applicable(name):
    from avrec.errors import NotApplicable

    items = pd.DataFrame({"item_id": ["a", "b", "c"]})
    data = Dataset(items, np.array(["u"], dtype=object), np.zeros(3), np.arange(3), np.ones(3, np.float32), np.full(3, -1))
    with pytest.raises(NotApplicable):
        create_model(name).fit(data)


def _sequence_dataset(with_time: bool = True) -> Dataset:
    """Two users walk a→b→c→d and a→b→e; the items seen next to each other are the similar ones."""
    items = pd.DataFrame({"item_id": list("abcde")})
    users = np.array([0, 0, 0, 0, 1, 1, 1])
    item_idx = np.array([0, 1, 2, 3, 0, 1, 4])
    ts = np.array([1, 2, 3, 4, 1, 2, 3]) if with_time else np.full(7, -1)
    return Dataset(items, np.array(["u0", "u1"], dtype=object), users, item_idx, np.ones(7, np.float32), ts)


def test_seqknn_links_items_consumed_next_to_each_other():
    from avrec.models.seqknn import sequence_similarity

    s = sequence_similarity(_sequence_dataset(), window=1, decay=0.5, alpha=0.0, neighbours=10).toarray()
    assert s[0, 1] == 2 and s[1, 0] == 2  # a→b twice
    assert s[1, 2] == 1 and s[0, 2] == 0  # b→c once; a and c are two steps apart
    s2 = sequence_similarity(_sequence_dataset(), window=2, decay=0.5, alpha=0.0, neighbours=10).toarray()
    assert s2[0, 2] == 0.5  # two steps apart weighs decay ** 1
    top1 = sequence_similarity(_sequence_dataset(), window=3, decay=0.5, alpha=0.0, neighbours=1)
    assert (np.diff(top1.indptr) <= 1).all()


def test_seqknn_needs_timestamps():
    from avrec.errors import NotApplicable

    with pytest.raises(NotApplicable, match="timestamps"):
        create_model("seqknn").fit(_sequence_dataset(with_time=False))


class TestSeqKNN(RecommenderSuite):
    def make_model(self):
        return create_model("seqknn", window=3)


def test_a_change_that_loses_on_one_fold_is_not_taken():
    # "x=1" gains a lot on fold 0 and loses a little on fold 1: its mean is higher, but it is luck on one part
    table = {0.0: np.array([0.30, 0.30]), 1.0: np.array([0.50, 0.28])}
    params, best = coordinate_search(lambda p: table[p["x"]], [{"x": 0.0}], {"x": [0.0, 1.0]})
    assert params == {"x": 0.0} and best == pytest.approx(0.30)


def test_cold_validation_folds_split_the_items():
    import scipy.sparse as sp

    truth = sp.csr_matrix(np.eye(4, 6, k=2, dtype=np.float32))  # user u's item is u + 2
    check = ValidationSet(np.arange(4), truth, None, candidates=np.arange(2, 6))
    perfect = np.eye(4, 4, dtype=np.float32)  # scores over the 4 candidates: each user's item first
    folds = check.ndcg_folds(perfect, n_folds=2)
    assert folds.shape == (2,) and np.allclose(folds, 1.0)
    assert (check.ndcg_folds(1.0 - perfect, n_folds=2) < 1.0).all()  # each user's item ranked last in its fold
