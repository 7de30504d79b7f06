"""Splits: seeded, disjoint, complete, with the documented per-method guarantees; save/load round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avrec.data.dataset import build_dataset
from avrec.data.splits import (
    Split,
    SplitConfig,
    cold_item_split,
    global_temporal_split,
    make_split,
    random_split,
    temporal_leave_one_out,
)
from avrec.errors import ConfigError, DataError
from avrec.eval.evaluate import evaluate_model
from avrec.models.itemknn import ItemKNN

METHODS = ("random", "temporal_loo", "global_temporal", "cold_item")


def generated(seed: int = 0, n_users: int = 120, n_items: int = 80, duplicates: int = 40, ties: bool = True):
    """Interactions with timestamps (many shared seconds when ``ties``) and some repeated (user, item) pairs."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, 30))
        for i in rng.choice(n_items, size=n, replace=False):
            t = int(rng.integers(0, 200)) * (60 if ties else 1) + (0 if ties else int(rng.integers(0, 10**6)) * 1000)
            rows.append((f"u{u}", f"i{i}", 1.0, 1_500_000_000 + t))
    for j in rng.choice(len(rows), size=duplicates, replace=False):
        u, i, w, t = rows[j]
        rows.append((u, i, 2.0, t + 5))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "title": [f"Item {i}" for i in range(n_items)],
                          "genres": ["" if i % 3 else "a|b" for i in range(n_items)]})
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    return build_dataset(items, inter, name="generated")


@pytest.fixture(scope="module")
def data():
    return generated()


def keys(ds) -> np.ndarray:
    return ds.user_idx.astype(np.int64) * ds.n_items + ds.item_idx


def split_frames(split: Split) -> list[pd.DataFrame]:
    return [getattr(split, p).interactions_frame().sort_values(["user_id", "item_id"]).reset_index(drop=True)
            for p in ("train", "valid", "test")]


def same_split(a: Split, b: Split) -> bool:
    return all(x.equals(y) for x, y in zip(split_frames(a), split_frames(b)))


@pytest.mark.parametrize("method", METHODS)
def test_disjoint_and_covering(data, method):
    split = make_split(data, SplitConfig(method=method, seed=7))
    parts = [keys(split.train), keys(split.valid), keys(split.test)]
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything), "a (user, item) pair is in two parts"
    assert set(everything.tolist()) == set(keys(data).tolist()), "a deduplicated interaction was lost"
    assert len(everything) == len(np.unique(keys(data)))
    for part in ("train", "valid", "test"):
        ds = getattr(split, part)
        assert ds.items is data.items or ds.items.equals(data.items)
        assert list(ds.user_ids) == list(data.user_ids)  # one catalogue and one user list for all parts
    assert len(split.valid.user_idx) > 0 and len(split.test.user_idx) > 0


def test_duplicates_collapse(data):
    split = random_split(data, seed=1)
    frame = pd.concat(split_frames(split))
    raw = data.interactions_frame()
    dup = raw[raw.duplicated(["user_id", "item_id"], keep=False)]
    assert len(dup) > 0
    u, i = dup.iloc[0][["user_id", "item_id"]]
    row = frame[(frame.user_id == u) & (frame.item_id == i)]
    assert len(row) == 1
    group = raw[(raw.user_id == u) & (raw.item_id == i)]
    assert row.weight.iloc[0] == pytest.approx(group.weight.sum())  # weights summed
    assert row.timestamp.iloc[0] == group.timestamp.max()  # latest time kept


@pytest.mark.parametrize("method", METHODS)
def test_seeded(data, method):
    a = make_split(data, SplitConfig(method=method, seed=11))
    b = make_split(data, SplitConfig(method=method, seed=11))
    assert same_split(a, b)
    if a.test_candidates is not None:
        np.testing.assert_array_equal(a.test_candidates, b.test_candidates)
    c = make_split(data, SplitConfig(method=method, seed=12))
    if method in ("random", "cold_item"):
        assert not same_split(a, c)
    elif method == "global_temporal":
        assert same_split(a, c)  # a pure time cut: the seed does not matter


def test_temporal_loo_seed_only_breaks_ties():
    distinct = generated(seed=3, ties=False)
    assert same_split(temporal_leave_one_out(distinct, seed=1), temporal_leave_one_out(distinct, seed=2))
    tied = generated(seed=3, ties=True)
    assert not same_split(temporal_leave_one_out(tied, seed=1), temporal_leave_one_out(tied, seed=2))


def test_random_ratios_per_user(ml_split, ml_small):
    n = {p: np.bincount(getattr(ml_split, p).user_idx, minlength=ml_small.n_users) for p in ("train", "valid", "test")}
    total = n["train"] + n["valid"] + n["test"]
    assert (total == np.bincount(ml_small.user_idx, minlength=ml_small.n_users)).all()
    # per user, the valid and test counts are 10% of the user's items rounded half up
    assert (np.abs(n["test"] - 0.1 * total) <= 0.5).all()
    assert (np.abs(n["valid"] - 0.1 * total) <= 0.5).all()
    share = {p: n[p].sum() / total.sum() for p in n}
    assert share["train"] == pytest.approx(0.8, abs=0.01)
    assert share["valid"] == pytest.approx(0.1, abs=0.01)
    assert share["test"] == pytest.approx(0.1, abs=0.01)


def test_random_small_users_stay_in_train(data):
    split = random_split(data, seed=4)
    held = np.bincount(np.r_[split.valid.user_idx, split.test.user_idx], minlength=data.n_users)
    distinct = np.bincount(split.train.user_idx, minlength=data.n_users) + held
    assert (distinct < 3).any() and (distinct >= 10).any()
    assert (held[distinct < 3] == 0).all()
    assert (held[distinct >= 10] >= 2).all()


def test_temporal_loo_latest_in_test(data):
    split = temporal_leave_one_out(data, seed=2)
    train, valid, test = split_frames(split)
    for uid, t in test.groupby("user_id"):
        assert len(t) == 1
        older = pd.concat([train[train.user_id == uid], valid[valid.user_id == uid]])
        assert len(older) >= 2
        assert t.timestamp.iloc[0] >= older.timestamp.max()
        v = valid[valid.user_id == uid]
        assert len(v) == 1 and v.timestamp.iloc[0] >= train[train.user_id == uid].timestamp.max()
    held = set(test.user_id)
    all_users = set(pd.concat([train, valid, test]).user_id)
    for uid in all_users - held:  # users with fewer than 3 items keep everything in train
        assert uid not in set(valid.user_id)


def test_temporal_methods_need_timestamps():
    items = pd.DataFrame({"item_id": ["a", "b", "c"]})
    inter = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["a", "b", "c"], "weight": 1.0, "timestamp": [-1, 5, 6]})
    ds = build_dataset(items, inter)
    for fn in (temporal_leave_one_out, global_temporal_split):
        with pytest.raises(DataError, match="timestamp"):
            fn(ds)


def test_global_temporal_time_cut(data):
    split = global_temporal_split(data)
    assert split.train.timestamp.max() < split.valid.timestamp.min()
    assert split.valid.timestamp.max() < split.test.timestamp.min()
    n = len(np.unique(keys(data)))
    assert split.train.n_interactions / n == pytest.approx(0.8, abs=0.05)
    assert split.test.n_interactions / n == pytest.approx(0.1, abs=0.05)


def test_global_temporal_time_cut_real(ml_small):
    split = global_temporal_split(ml_small)
    assert split.train.timestamp.max() < split.valid.timestamp.min() <= split.valid.timestamp.max() < split.test.timestamp.min()
    assert split.train.n_interactions / ml_small.n_interactions == pytest.approx(0.8, abs=0.01)


def test_cold_item(data):
    split = cold_item_split(data, cold_share=0.2, valid_share=0.1, seed=5)
    train_items = set(split.train.item_idx.tolist())
    test_c, valid_c = set(split.test_candidates.tolist()), set(split.valid_candidates.tolist())
    assert not (test_c & train_items) and not (valid_c & train_items), "a cold item has training interactions"
    assert not (test_c & valid_c)
    assert set(split.test.item_idx.tolist()) <= test_c
    assert set(split.valid.item_idx.tolist()) <= valid_c
    interacted = int((data.item_counts() > 0).sum())
    assert len(test_c) == round(0.2 * interacted)
    assert len(valid_c) == round(0.1 * interacted)
    assert split.protocol == "cold"
    assert split.candidates("test") is split.test_candidates
    assert random_split(data).protocol == "warm"


def test_split_config_validation(data):
    with pytest.raises(ConfigError, match="split.method"):
        SplitConfig(method="nope")
    with pytest.raises(ConfigError, match="ratios"):
        SplitConfig(ratios=(0.8, 0.1, 0.2))
    with pytest.raises(ConfigError, match="cold_share"):
        SplitConfig(cold_share=1.5)
    assert SplitConfig(ratios=[0.7, 0.15, 0.15]).ratios == (0.7, 0.15, 0.15)
    split = make_split(data, SplitConfig(ratios=(0.6, 0.2, 0.2), seed=3))
    n = len(np.unique(keys(data)))
    assert split.test.n_interactions / n == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ConfigError, match="part"):
        split.part("train")


@pytest.mark.parametrize("method", ["random", "cold_item"])
def test_save_load_round_trip(data, method, tmp_path):
    split = make_split(data, SplitConfig(method=method, seed=9))
    folder = split.save(tmp_path / "split")
    assert {p.name for p in folder.iterdir()} >= {"items.csv", "train.csv", "valid.csv", "test.csv", "meta.json"}
    loaded = Split.load(folder)
    assert (loaded.method, loaded.seed, loaded.protocol) == (split.method, split.seed, split.protocol)
    assert same_split(split, loaded)
    pd.testing.assert_frame_equal(loaded.train.items, split.train.items)
    assert list(loaded.train.user_ids) == list(split.train.user_ids)
    for part in ("train", "valid", "test"):  # index-level identity, not only the same id pairs
        a, b = getattr(split, part), getattr(loaded, part)
        assert (a.matrix() != b.matrix()).nnz == 0
    for name in ("valid", "test"):
        a, b = split.candidates(name), loaded.candidates(name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    model = ItemKNN().fit(split.train)
    # the files must reproduce the metrics exactly; whether item-kNN means anything on cold items is beside the point
    assert evaluate_model(model, loaded, allow_cold_unaware=True) == pytest.approx(
        evaluate_model(model, split, allow_cold_unaware=True))
