"""Synthetic datasets (avrec data synth) and the columnar Parquet loader."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from avrec.cli import main
from avrec.data.io import DataConfig, load_folder
from avrec.data.synth import SynthConfig, synthesize
from avrec.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "ds"
    synthesize(folder, SynthConfig(n_items=3000, n_users=400, n_interactions=30_000, seed=7, chunk_rows=4000))
    return folder


def test_synth_writes_the_folder_format_with_exact_sizes(synth_folder):
    items = pd.read_parquet(synth_folder / "items.parquet")
    inter = pd.read_parquet(synth_folder / "interactions.parquet")
    assert len(items) == 3000 and items["item_id"].is_unique
    assert len(inter) == 30_000 and inter["user_id"].nunique() == 400
    assert set(inter["item_id"]) <= set(items["item_id"])
    for col in ("title", "genres", "tags", "description", "media_type", "year"):
        assert (items[col] != "").all(), col
    assert ((items["artist"] != "") | (items["director"] != "")).all()
    assert (inter["plays"] >= 1).all()
    # timestamps increase within every user's history (written in chunks of users)
    assert inter.groupby("user_id", sort=False)["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()
    dataset = load_folder(synth_folder)
    assert (dataset.n_users, dataset.n_items, dataset.n_interactions) == (400, 3000, 30_000)


def test_synth_popularity_is_skewed_with_a_cold_tail(synth_folder):
    inter = pd.read_parquet(synth_folder / "interactions.parquet")
    counts = inter["item_id"].value_counts().to_numpy()
    top = counts[: len(counts) // 100].sum() / counts.sum()  # the top 1% of items with interactions
    assert top > 0.1
    assert inter["item_id"].nunique() < 3000  # some items have no interaction at all


def test_synth_text_carries_the_taste_signal(synth_folder):
    """Two items one user played share genres or tags far more often than two random items."""
    items = pd.read_parquet(synth_folder / "items.parquet").set_index("item_id")
    inter = pd.read_parquet(synth_folder / "interactions.parquet")
    words = {i: set(g.split("|")) | set(t.split("|")) for i, g, t in zip(items.index, items["genres"], items["tags"])}
    rng = np.random.default_rng(0)
    same_user = []
    for _, hist in list(inter.groupby("user_id")["item_id"])[:200]:
        h = hist.to_numpy()
        a, b = rng.choice(h, 2)
        same_user.append(len(words[a] & words[b]) > 0)
    ids = items.index.to_numpy()
    random_pairs = [len(words[a] & words[b]) > 0 for a, b in rng.choice(ids, (200, 2))]
    assert np.mean(same_user) > np.mean(random_pairs) + 0.2


def test_synth_is_seeded(tmp_path):
    cfg = SynthConfig(n_items=500, n_users=50, n_interactions=2000, seed=3, chunk_rows=300)
    synthesize(tmp_path / "a", cfg)
    synthesize(tmp_path / "b", cfg)
    synthesize(tmp_path / "c", SynthConfig(n_items=500, n_users=50, n_interactions=2000, seed=4))
    for name in ("items.parquet", "interactions.parquet"):
        a, b, c = (pd.read_parquet(tmp_path / d / name) for d in "abc")
        pd.testing.assert_frame_equal(a, b)
        assert not a.equals(c)


def test_synth_bad_sizes_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--interactions"):
        SynthConfig(n_items=10, n_users=100, n_interactions=50)
    with pytest.raises(ConfigError, match="--items"):
        SynthConfig(n_items=0, n_users=1, n_interactions=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        synthesize(tmp_path / "full", SynthConfig(n_items=10, n_users=2, n_interactions=5))


def test_cli_data_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--items", "200", "--users", "20", "--interactions", "400",
                 "--seed", "1", "--out", str(out)]) == 0
    assert "400 interactions" in capsys.readouterr().out
    assert main(["data", "synth", "--items", "200", "--users", "20", "--interactions", "10",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--interactions (10) must be at least --users (20)" in capsys.readouterr().err


@pytest.mark.parametrize("config", [
    DataConfig(),
    DataConfig(weighting="log"),
    DataConfig(rating_threshold=3, weighting="value", min_user_interactions=5, min_item_interactions=3),
    DataConfig(events=["play"]),
])
def test_columnar_parquet_loading_equals_the_string_path(synth_folder, tmp_path, config):
    """The same rows (with bad ones) as CSV and as Parquet give the same dataset and the same warnings."""
    inter = pd.read_parquet(synth_folder / "interactions.parquet").head(5000)
    inter["plays"] = inter["plays"].astype(float)
    inter.loc[3, "user_id"] = " "
    inter.loc[5, "item_id"] = "not-an-item"
    inter.loc[7, "plays"] = np.nan
    inter.loc[9, "plays"] = 0
    inter.loc[11, "user_id"] = " " + inter.loc[11, "user_id"]  # stripped like the CSV path strips
    inter["rating"] = np.where(np.arange(len(inter)) % 3 == 0, np.nan, np.arange(len(inter)) % 5 + 1.0)
    inter.loc[13, "event"] = "skip"
    for kind in ("csv", "pq"):
        (tmp_path / kind).mkdir()
        shutil.copy(synth_folder / "items.parquet", tmp_path / kind / "items.parquet")
    inter.to_csv(tmp_path / "csv" / "interactions.csv", index=False)
    inter.to_parquet(tmp_path / "pq" / "interactions.parquet", index=False)
    loaded, messages = [], []
    for kind in ("csv", "pq"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded.append(load_folder(tmp_path / kind, config, name="x"))
        messages.append([str(w.message).split(": ", 1)[1] for w in caught])
    a, b = loaded
    assert a.n_interactions > 0
    for name in ("user_ids", "user_idx", "item_idx", "weight", "timestamp"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert messages[0] == messages[1] and len(messages[1]) == 4


def test_columnar_loading_accepts_integer_ids(tmp_path):
    pd.DataFrame({"item_id": ["1", "2", "3"], "title": ["a", "b", "c"]}).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"user_id": [10, 10, 20], "item_id": [1, 3, 2]}).to_parquet(tmp_path / "interactions.parquet")
    d = load_folder(tmp_path)
    assert list(d.user_ids) == ["10", "20"] and d.item_idx.tolist() == [0, 2, 1]
