"""Property tests (hypothesis, issue 15) for the loaders, the splits and the metrics.

- Any table of ids and values (weird ids, NaN, empty strings, duplicates, negative or huge ratings, unicode,
  missing columns), written as CSV or Parquet, either loads through ``load_folder`` / ``read_table`` or is
  refused with one :class:`DataError` that names the file: never another exception.
- Every split keeps each (deduplicated) interaction exactly once and keeps its own contract.
- Every accuracy metric stays within [0, 1] and equals a naive Python implementation written here.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avrec.data.dataset import Dataset
from avrec.data.io import DataConfig, load_folder, read_table
from avrec.data.splits import cold_item_split, global_temporal_split, random_split, temporal_leave_one_out
from avrec.errors import DataError, DataWarning
from avrec.eval.metrics import per_user_metrics, ranking_metrics

EXAMPLES = int(os.environ.get("AVREC_PROPERTY_EXAMPLES", "60"))  # more for a longer hunt
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ---- tables of ids and values ------------------------------------------------------------------------------
WEIRD_IDS = st.one_of(
    st.sampled_from(["1", "01", " 1", "1 ", "", " ", "nan", "NaN", "None", "null", "-1", "1e3", "1.0",
                     "a,b", 'q"uote', "new\nline", "tab\there", "é", "日本", "🎵", "\u200b", "x" * 200]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "abc", "5", "4.5", "1e400", "-0", "0x10", "½"]),
)
OPTIONAL_INTERACTION_COLUMNS = ("rating", "timestamp", "plays", "weight", "event")


@st.composite
def dataset_tables(draw) -> tuple[pd.DataFrame, pd.DataFrame]:
    # ids as text, or as integers (a Parquet file then has int64 id columns, as many exports do)
    ids = st.integers(-(2**63), 2**63 - 1) if draw(st.integers(0, 3)) == 0 else WEIRD_IDS
    items = draw(st.lists(ids, min_size=0, max_size=8))
    n = draw(st.integers(min_value=0, max_value=20))
    pool = items + draw(st.lists(ids, max_size=3))  # some ids the catalogue lacks
    inter: dict[str, list] = {
        "user_id": draw(st.lists(ids, min_size=n, max_size=n)),
        "item_id": [draw(st.sampled_from(pool)) if pool else "" for _ in range(n)],
    }
    for col in draw(st.lists(st.sampled_from(OPTIONAL_INTERACTION_COLUMNS), unique=True, max_size=3)):
        inter[col] = draw(st.lists(VALUES, min_size=n, max_size=n))
    item_frame = pd.DataFrame({"item_id": items, "title": [f"t{i}" for i in range(len(items))]})
    inter_frame = pd.DataFrame(inter)
    for frame in (item_frame, inter_frame):  # a required column may be missing, or an extra one appear
        if len(frame.columns) and draw(st.integers(0, 9)) == 0:
            del frame[draw(st.sampled_from(list(frame.columns)))]
        if draw(st.integers(0, 9)) == 0:
            frame["extra ünïcode"] = [draw(VALUES) for _ in range(len(frame))]
    return item_frame, inter_frame


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame = frame.copy()
        for c in frame.columns:  # mixed Python objects: as a real producer would, one type per column
            values = frame[c].tolist()
            if values and (all(isinstance(v, float) for v in values)
                           or all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 for v in values)):
                continue
            frame[c] = [str(v) for v in values]
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _check_loaded(ds: Dataset) -> None:
    assert ds.n_interactions > 0 and ds.n_items > 0
    assert (ds.item_idx >= 0).all() and (ds.item_idx < ds.n_items).all()
    assert (ds.user_idx >= 0).all() and (ds.user_idx < ds.n_users).all()
    assert np.isfinite(ds.weight).all() and (ds.weight > 0).all()
    ids = ds.items["item_id"].astype(str)
    assert ids.is_unique and (ids != "").all()
    assert all(str(u).strip() == str(u) and str(u) for u in ds.user_ids)


@SETTINGS
@given(tables=dataset_tables(), formats=st.tuples(st.sampled_from(["csv", "parquet"]),
                                                  st.sampled_from(["csv", "parquet"])),
       config=st.sampled_from([DataConfig(), DataConfig(weighting="value"), DataConfig(weighting="log"),
                               DataConfig(rating_threshold=3.5), DataConfig(events=["play", "like"])]))
def test_any_table_loads_or_is_one_clear_error(tables, formats, config):
    items, inter = tables
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        item_path, inter_path = folder / f"items.{formats[0]}", folder / f"interactions.{formats[1]}"
        _write(items, item_path)
        _write(inter, inter_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            try:
                ds = load_folder(folder, config)
            except DataError as e:
                message = str(e)
                assert "\n" not in message.strip() or "line" in message, message
                assert "items" in message or "interactions" in message, message  # it names the file
                return
        _check_loaded(ds)


@SETTINGS
@given(rows=st.lists(st.lists(VALUES.map(str), min_size=1, max_size=4), max_size=8),
       header=st.lists(WEIRD_IDS, min_size=1, max_size=4), suffix=st.sampled_from([".csv", ".tsv"]))
def test_read_table_reads_any_text_table_or_names_the_file(rows, header, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    text = sep.join(header) + "\n" + "\n".join(sep.join(r) for r in rows) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            df = read_table(path)
        except DataError as e:
            assert str(path) in str(e), str(e)
            return
        assert all(isinstance(c, str) for c in df.columns)
        assert all(isinstance(v, str) for c in df.columns for v in df[c].tolist())


@given(raw=st.binary(max_size=200))
@SETTINGS
def test_read_table_on_bytes_never_crashes(raw):
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("t.csv", "t.parquet", "t.csv.gz"):
            path = Path(tmp) / name
            path.write_bytes(raw)
            try:
                read_table(path)
            except DataError as e:
                assert str(path) in str(e), str(e)


# ---- splits ------------------------------------------------------------------------------------------------
@st.composite
def datasets(draw) -> Dataset:
    n_items = draw(st.integers(2, 12))
    n_users = draw(st.integers(1, 10))
    n = draw(st.integers(1, 80))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    codes, uniques = pd.factorize(np.asarray([f"u{u}" for u in users], dtype=object))
    return Dataset(items=pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]}),
                   user_ids=np.asarray(uniques, dtype=object), user_idx=codes.astype(np.int32),
                   item_idx=np.asarray(items, dtype=np.int32), weight=np.ones(n, dtype=np.float32),
                   timestamp=np.asarray(ts, dtype=np.int64), name="prop")


def _pairs(ds: Dataset) -> list[tuple[str, str, int]]:
    return [(str(ds.user_ids[u]), str(ds.item_ids[i]), int(t))
            for u, i, t in zip(ds.user_idx, ds.item_idx, ds.timestamp)]


def _deduped(ds: Dataset) -> dict[tuple[str, str], int]:
    """The (user, item) pairs a split must keep once each, with the latest timestamp of each."""
    out: dict[tuple[str, str], int] = {}
    for u, i, t in _pairs(ds):
        out[(u, i)] = max(t, out.get((u, i), t))
    return out


def _check_partition(ds: Dataset, split) -> dict[str, list[tuple[str, str, int]]]:
    parts = {name: _pairs(getattr(split, name)) for name in ("train", "valid", "test")}
    every = [(u, i) for p in parts.values() for u, i, _ in p]
    assert len(every) == len(set(every)), "an interaction landed twice"
    assert set(every) == set(_deduped(ds)), "an interaction was lost or invented"
    for p in parts.values():
        for u, i, t in p:
            assert _deduped(ds)[(u, i)] == t
    for name in ("train", "valid", "test"):
        assert getattr(split, name).n_items == ds.n_items  # one shared catalogue
    return parts


@SETTINGS
@given(ds=datasets(), seed=st.integers(0, 2**32 - 1),
       ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0), (0.6, 0.0, 0.4)]))
def test_random_split_keeps_each_interaction_once(ds, seed, ratios):
    parts = _check_partition(ds, random_split(ds, ratios, seed))
    per_user: dict[str, int] = {}
    for u, _ in _deduped(ds):
        per_user[u] = per_user.get(u, 0) + 1
    for name in ("valid", "test"):
        assert all(per_user[u] >= 3 for u, _, _ in parts[name])  # users with < 3 items stay in train
    if ratios[2] == 0:
        assert not parts["test"]


@SETTINGS
@given(ds=datasets(), seed=st.integers(0, 2**32 - 1))
def test_temporal_loo_holds_out_each_users_latest(ds, seed):
    parts = _check_partition(ds, temporal_leave_one_out(ds, seed))
    history: dict[str, list[int]] = {}
    for (u, _), t in _deduped(ds).items():
        history.setdefault(u, []).append(t)
    test_users = [u for u, _, _ in parts["test"]]
    assert len(test_users) == len(set(test_users))  # one test item per user
    assert set(test_users) == {u for u, ts in history.items() if len(ts) >= 3}
    for u, _, t in parts["test"]:
        assert t == max(history[u])
    for u, _, t in parts["valid"]:
        assert t <= max(history[u])
        assert all(t2 <= t for uu, _, t2 in parts["train"] if uu == u)


@SETTINGS
@given(ds=datasets(), ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.3, 0.2)]))
def test_global_temporal_split_cuts_time_once(ds, ratios):
    try:
        split = global_temporal_split(ds, ratios)
    except DataError as e:
        assert "distinct values" in str(e)
        return
    parts = _check_partition(ds, split)
    assert parts["test"]
    newest_train = max((t for _, _, t in parts["train"]), default=-1)
    for name in ("valid", "test"):
        assert all(t > newest_train for _, _, t in parts[name])
    if parts["valid"]:
        assert all(t > max(t for _, _, t in parts["valid"]) for _, _, t in parts["test"])


@SETTINGS
@given(ds=datasets(), seed=st.integers(0, 2**32 - 1),
       shares=st.sampled_from([(0.2, 0.1), (0.5, 0.0), (0.3, 0.3)]))
def test_cold_item_split_holds_out_whole_items(ds, seed, shares):
    split = cold_item_split(ds, *shares, seed=seed)
    parts = _check_partition(ds, split)
    train_items = {i for _, i, _ in parts["train"]}
    test_cands = {ds.item_ids[i] for i in split.test_candidates}
    valid_cands = {ds.item_ids[i] for i in split.valid_candidates}
    assert not test_cands & valid_cands and not (test_cands | valid_cands) & train_items
    assert {i for _, i, _ in parts["test"]} == test_cands
    assert {i for _, i, _ in parts["valid"]} == valid_cands


# ---- metrics -----------------------------------------------------------------------------------------------
def naive(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook binary-relevance metrics at k for one list (-1 is padding)."""
    top = [i for i in ranked[:k]]
    rel = [1 if i >= 0 and i in relevant else 0 for i in top]
    hits = sum(rel)
    ideal = min(len(relevant), k)
    dcg = sum(r / math.log2(pos + 2) for pos, r in enumerate(rel))
    idcg = sum(1 / math.log2(pos + 2) for pos in range(ideal))
    ap, seen = 0.0, 0
    for pos, r in enumerate(rel):
        if r:
            seen += 1
            ap += seen / (pos + 1)
    first = next((pos for pos, r in enumerate(rel) if r), None)
    return {
        "recall": hits / len(relevant) if relevant else 0.0,
        "precision": hits / k,
        "hit": 1.0 if hits else 0.0,
        "mrr": 1.0 / (first + 1) if first is not None else 0.0,
        "ndcg": dcg / idcg if idcg > 0 else 0.0,
        "map": ap / ideal if ideal else 0.0,
    }


@st.composite
def ranked_lists(draw) -> tuple[np.ndarray, sp.csr_matrix, int]:
    n_items = draw(st.integers(1, 30))
    n_users = draw(st.integers(1, 8))
    width = draw(st.integers(0, 12))
    k = draw(st.integers(1, 15))
    rows, truth = [], np.zeros((n_users, n_items), dtype=np.float32)
    for u in range(n_users):
        ranked = draw(st.lists(st.integers(0, n_items - 1), unique=True, max_size=min(width, n_items)))
        rows.append(ranked + [-1] * (width - len(ranked)))  # padded with -1 when fewer items were ranked
        for i in draw(st.sets(st.integers(0, n_items - 1), max_size=n_items)):
            truth[u, i] = 1.0
    return np.asarray(rows, dtype=np.int64).reshape(n_users, width), sp.csr_matrix(truth), k


@SETTINGS
@given(case=ranked_lists())
def test_metrics_are_in_unit_range_and_match_a_naive_implementation(case):
    topk, truth, k = case
    got = per_user_metrics(topk, truth, k)
    for u in range(topk.shape[0]):
        relevant = set(truth[u].indices.tolist())
        expected = naive(topk[u].tolist(), relevant, k)
        for name, value in expected.items():
            assert 0.0 <= got[name][u] <= 1.0 + 1e-12, (name, got[name][u])
            assert got[name][u] == pytest.approx(value, abs=1e-9), (name, u, topk[u], relevant, k)
    means = ranking_metrics(topk, truth, k)
    for name in expected:
        assert means[f"{name}@{k}"] == pytest.approx(float(np.mean(got[name])), abs=1e-12)
