"""Columnar loading of a Parquet ``interactions`` table: Arrow arrays and integer codes, no Python object per row.

The string path of :mod:`avrec.data.io` turns every cell into a Python string, which costs gigabytes at
tens of millions of rows. Here ids are read as Arrow dictionaries (or integers) and become integer codes;
numbers stay numbers. The checks and filters are those of ``clean_interactions`` (same warnings, same
kept rows, users indexed in order of first appearance), so both paths give the same :class:`Dataset`.
Files whose columns do not have plain types (ids as strings or integers, numeric value columns) return
None and take the string path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avrec.data.dataset import Dataset
from avrec.errors import DataError, DataWarning

_VALUE_COLUMNS = ("rating", "plays", "weight", "timestamp")


def _plain_types(schema: Any) -> bool:
    import pyarrow as pa

    def is_id(t: Any) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t))

    if not all(is_id(schema.field(c).type) for c in ("user_id", "item_id")):
        return False
    for c in _VALUE_COLUMNS:
        if c in schema.names:
            t = schema.field(c).type
            numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
            if not (numeric or (c == "timestamp" and pa.types.is_timestamp(t))):
                return False
    return "event" not in schema.names or is_id(schema.field("event").type)


def _codes(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (-1 for a null or empty id) and the distinct stripped string values they index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if pa.types.is_integer(t) or (pa.types.is_dictionary(t) and pa.types.is_integer(t.value_type)):
        values = column.cast(t.value_type) if pa.types.is_dictionary(t) else column
        filled = pc.fill_null(values, 0).to_numpy()
        codes, uniques = pd.factorize(filled, sort=False)
        codes = np.where(pc.is_null(values).to_numpy(zero_copy_only=False), -1, codes)
        return codes.astype(np.int64), np.asarray(uniques).astype(str).astype(object)
    if not pa.types.is_dictionary(t):
        column = pc.dictionary_encode(column)
    column = column.unify_dictionaries() if column.num_chunks else column
    chunks = column.chunks
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, object)
    dictionary = pc.utf8_trim_whitespace(chunks[0].dictionary).to_numpy(zero_copy_only=False).astype(object)
    # stripping may make two values equal (" u1" and "u1"), and "" is no id
    remap, uniques = pd.factorize(dictionary, sort=False)
    empty = np.flatnonzero(uniques == "")
    remap = np.where(np.isin(remap, empty), -1, remap)
    idx = np.concatenate([pc.fill_null(c.indices, -1).to_numpy() for c in chunks]).astype(np.int64)
    codes = np.where(idx >= 0, remap[np.maximum(idx, 0)] if len(remap) else -1, -1)
    return codes, np.asarray(uniques, dtype=object)


def _numbers(column: Any, seconds: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Float values and a mask of null cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    null = pc.is_null(column).to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(column.type):
        values = pc.fill_null(column.cast(pa.timestamp("s", tz=column.type.tz)).cast(pa.int64()), 0).to_numpy()
        return values.astype(np.float64), null
    return pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy(), null


def read_interactions_parquet(path: Path, item_ids: pd.Series, config: Any, *, name: str,
                              items: pd.DataFrame, checksums: dict[str, str]) -> Dataset | None:
    """The dataset from a Parquet interactions file, or None when its column types need the string path."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    names = [str(n).strip() for n in schema.names]
    if names != list(schema.names) or "user_id" not in names or "item_id" not in names or not _plain_types(schema):
        return None
    wanted = [c for c in ("user_id", "item_id", *_VALUE_COLUMNS, "event") if c in names]
    try:
        table = pq.read_table(path, columns=wanted)
    except Exception as e:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    n = table.num_rows
    if n == 0:
        raise DataError(f"{path}: the file has a header but no interactions")
    keep = np.ones(n, dtype=bool)

    def drop(mask: np.ndarray, why: str) -> None:
        nonlocal keep
        mask = mask & keep
        if mask.any():
            first = int(np.flatnonzero(mask)[0]) + 2  # the string path's line numbers (header = line 1)
            warnings.warn(DataWarning(f"{path}: skipped {int(mask.sum())} row(s) {why} (first at line {first})"),
                          stacklevel=4)
            keep &= ~mask

    user_code, user_values = _codes(table.column("user_id"))
    item_code, item_values = _codes(table.column("item_id"))
    drop((user_code < 0) | (item_code < 0), "with an empty user_id or item_id")
    rating = None
    if "rating" in names:
        rating, null = _numbers(table.column("rating"))
        drop(~null & ~np.isfinite(rating), "with a non-numeric or NaN rating")
    value = None
    for col in ("plays", "weight"):
        if col in names:
            value, null = _numbers(table.column(col))
            drop(null | ~np.isfinite(value), f"with a non-numeric or NaN {col}")
            drop(np.nan_to_num(value, nan=1.0) <= 0, f"with {col} <= 0")
            break
    ts = np.full(n, -1, dtype=np.int64)
    if "timestamp" in names:
        t, null = _numbers(table.column("timestamp"))
        drop(~null & ~np.isfinite(t), "with a non-numeric timestamp")
        t = np.where(null | ~np.isfinite(t), -1, np.nan_to_num(t))
        drop(np.abs(t) >= 2.0**63, "with a timestamp out of range (beyond 64-bit seconds)")
        ts = np.where(np.abs(t) < 2.0**63, t, -1).astype(np.int64)
    catalogue = pd.Index(item_ids).get_indexer(item_values)  # distinct ids only
    item_idx = np.where(item_code >= 0, catalogue[np.maximum(item_code, 0)] if len(catalogue) else -1, -1)
    drop((item_code >= 0) & (item_idx < 0), "that name an item missing from items")
    if config.rating_threshold is not None and rating is not None:
        keep &= ~(np.nan_to_num(rating, nan=np.inf) < config.rating_threshold)
    if config.events is not None and "event" in names:
        ev_code, ev_values = _codes(table.column("event"))
        allowed = np.isin(ev_values.astype(str), list(config.events))
        keep &= (ev_code >= 0) & allowed[np.maximum(ev_code, 0)] if len(allowed) else np.zeros(n, bool)
    del table
    weight = interaction_weights(value, rating, n, config.weighting, drop)
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError(f"{path}: no interactions left after validation and filtering")
    users, items_i = user_code[rows], item_idx[rows].astype(np.int64)
    rows = rows[_min_count_mask(users, items_i, config)]
    users, items_i = user_code[rows], item_idx[rows]
    codes, first_seen = pd.factorize(users, sort=False)
    return Dataset(items=items, user_ids=user_values[first_seen], user_idx=codes, item_idx=items_i,
                   weight=weight[rows].astype(np.float32), timestamp=ts[rows], name=name, checksums=checksums)


def _min_count_mask(users: np.ndarray, items: np.ndarray, config: Any) -> np.ndarray:
    """Rows kept by the one-pass min_item then min_user filters (distinct partners counted)."""
    mask = np.ones(len(users), dtype=bool)
    for min_count, key, other in ((config.min_item_interactions, items, users),
                                  (config.min_user_interactions, users, items)):
        if min_count <= 1:
            continue
        k, o = key[mask], other[mask]
        pairs = np.unique(np.stack([k, o], axis=1), axis=0)
        distinct = np.bincount(pairs[:, 0], minlength=int(key.max()) + 1)
        sub = distinct[k] >= min_count
        idx = np.flatnonzero(mask)
        mask[idx[~sub]] = False
    if not mask.any():
        raise DataError("no interactions left after the min_user/min_item filters")
    return mask


def interaction_weights(value: np.ndarray | None, rating: np.ndarray | None, n: int, weighting: str,
                        drop: Callable[[np.ndarray, str], None]) -> np.ndarray:
    """Each interaction's weight under ``weighting`` (binary, log or raw), from ``value`` or else ``rating``;
    rows with a weight <= 0 or one float32 cannot hold go to ``drop`` (one warning naming the file each)."""
    if value is None:
        value = rating if (rating is not None and weighting != "binary") else np.ones(n)
    value = np.nan_to_num(value, nan=1.0)
    if weighting == "binary":
        weight = np.ones(n)
    elif weighting == "log":
        weight = 1.0 + np.log1p(np.maximum(value, 0))
    else:
        weight = value
    drop(weight <= 0, "with a weight <= 0")
    with np.errstate(over="ignore", under="ignore"):
        stored = weight.astype(np.float32)  # weights are stored as float32: 1e300 would be inf, 1e-50 zero
    drop(~np.isfinite(stored) | (stored <= 0), "with a weight float32 cannot hold (above 3.4e38 or below 1e-45)")
    return np.where(np.isfinite(stored) & (stored > 0), weight, 1.0)


__all__ = ["interaction_weights", "read_interactions_parquet"]

