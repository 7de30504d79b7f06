"""Read a dataset folder (``items.csv`` + ``interactions.csv``, or Parquet) into a :class:`Dataset`.

Every problem with the input becomes either one :class:`DataError` that names the file, row or field,
or one :class:`DataWarning` that says how many rows were skipped and why.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from avrec.data.dataset import Dataset, build_dataset
from avrec.errors import DataError, DataWarning

ITEM_REQUIRED = ("item_id",)
INTERACTION_REQUIRED = ("user_id", "item_id")
WEIGHT_COLUMNS = ("plays", "weight")


@dataclass
class DataConfig:
    """How raw interactions become positives.

    ``rating_threshold``: keep only rows with rating >= threshold (rows without a rating are kept).
    ``events``: keep only these event types (None keeps all).
    ``weighting``: "binary" (every positive weighs 1), "value" (plays/weight/rating as given) or
    "log" (1 + log1p(value), the usual damping for play counts).
    ``min_user_interactions`` / ``min_item_interactions``: drop rarer users/items (one pass).
    """

    rating_threshold: float | None = None
    events: list[str] | None = None
    weighting: str = "binary"
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    enrich: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.weighting not in ("binary", "value", "log"):
            raise DataError(f"data.weighting must be binary, value or log, not {self.weighting!r}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_table(folder: Path, stem: str) -> Path:
    """``folder/stem`` as .csv, .parquet, .csv.gz or .tsv (the first that exists); a DataError when none does."""
    for ext in (".csv", ".parquet", ".csv.gz", ".tsv"):
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    raise DataError(f"{folder}: no {stem}.csv or {stem}.parquet in the dataset folder")


def _line_of_offset(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file as strings, turning parser failures into one-line DataErrors.

    Rows with more fields than the header and rows with fewer (which pandas would silently pad or
    shift) are errors that name the line.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = _line_of_offset(raw, e.start)
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from None
    sep = "\t" if path.suffix == ".tsv" or path.name.endswith(".tsv.gz") else ","
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(
                io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False, index_col=False
            )
        except pd.errors.ParserError as e:
            raise DataError(f"{path}: {_short_parser_message(e)}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: the file is empty") from None
    header = [str(c) for c in df.columns]
    if any(_MANGLED.fullmatch(c) for c in header):
        # pandas renames a repeated column "x" to "x.1": read the header row as data to see the real names.
        first = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            header=None, nrows=1, index_col=False)
        header = [str(c) for c in first.iloc[0].tolist()]
    _check_unique_columns(path, header)
    df.columns = [str(c).strip() for c in df.columns]
    n = len(df.columns)
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        # index_col=False makes pandas drop extra trailing fields with only a warning: find the line.
        too_many = _ragged_rows(text, sep, n, path, too_many=True)
        raise DataError(_ragged_message(path, too_many or [0], n, "more"))
    # Rows with too few fields come back padded with "" in the last column: only then scan the text.
    if n > 1 and len(df) and (df.iloc[:, -1] == "").any():
        too_few = _ragged_rows(text, sep, n, path)
        if too_few:
            raise DataError(_ragged_message(path, too_few, n, "fewer"))
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    except Exception as e:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    _check_unique_columns(path, names)
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if len(df.columns) == 0:
        raise DataError(f"{path}: the file is empty")
    for c in df.columns:  # datetime timestamps become unix seconds, as in the CSV format
        if pd.api.types.is_datetime64_any_dtype(df[c]):
            values = df[c]
            if getattr(values.dt, "tz", None) is not None:
                values = values.dt.tz_convert("UTC").dt.tz_localize(None)
            seconds = (values - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
            df[c] = seconds.astype("Int64").astype(object).where(values.notna(), "")
    df = df.astype(object).where(df.notna(), "").astype(str)
    df.columns = [str(c).strip() for c in df.columns]
    return df


#: A column name as pandas writes a repeated one ("title.1"); only then is the header read again.
_MANGLED = re.compile(r".+\.\d+")


def _check_unique_columns(path: Path, names: list[str]) -> None:
    """A DataError for a column named more than once (names compared with surrounding spaces stripped)."""
    where: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        where.setdefault(str(name).strip(), []).append(position)
    for name, positions in where.items():
        if len(positions) > 1:
            times = "twice" if len(positions) == 2 else f"{len(positions)} times"
            columns = ", ".join(map(str, positions[:-1])) + f" and {positions[-1]}"
            raise DataError(f"{path}: column {name!r} appears {times} in the header (columns {columns}); "
                            "rename or remove the extra one")


def _ragged_message(path: Path, lines: list[int], n_columns: int, what: str) -> str:
    where = f"line {lines[0]}" if lines[0] else "a row"
    more = f" ({len(lines)} such lines)" if len(lines) > 1 else ""
    return f"{path}: {where} has {what} fields than the header's {n_columns}{more}"


_EXPECTED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _short_parser_message(e: Exception) -> str:
    msg = str(e).strip().splitlines()[-1]
    m = _EXPECTED.search(msg)
    if m:
        return f"line {m.group(2)} has {m.group(3)} fields, more than the header's {m.group(1)}"
    return "malformed CSV: " + msg.replace("Error tokenizing data. C error: ", "")


def _ragged_rows(text: str, sep: str, n_columns: int, path: Path, too_many: bool = False) -> list[int]:
    """Line numbers of rows with too few (or, with ``too_many``, too many) fields.

    Only called when the pandas parse hints at such rows, so big clean files are not scanned twice.
    A carriage return inside an unquoted field (which pandas takes for a line break, splitting the row)
    is a DataError naming its line.
    """
    if n_columns <= 1 and not too_many:
        return []
    import csv

    if "\r" in text and "\n" not in text:  # old Mac line endings: every CR ends a line
        text = text.replace("\r", "\n")
    bad = []
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if (len(row) > n_columns) if too_many else (len(row) < n_columns):
                bad.append(reader.line_num)
    except csv.Error as e:
        if "new-line character" in str(e):
            raise DataError(
                f"{path}: line {reader.line_num} has a bare carriage return (\\r) inside an unquoted field; "
                "quote the field or remove the character"
            ) from None
        raise DataError(f"{path}: line {reader.line_num} is malformed CSV ({e})") from None
    return bad


def _require_columns(df: pd.DataFrame, required: tuple[str, ...], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing required column {missing[0]!r} (found: {', '.join(map(str, df.columns)) or 'none'})"
        )


def clean_items(df: pd.DataFrame, path: Path | str = "items") -> pd.DataFrame:
    """Validate an item frame: required id, unique ids, strings everywhere."""
    path = Path(path)
    _require_columns(df, ITEM_REQUIRED, path)
    df = df.copy()
    for c in df.columns:
        df[c] = df[c].fillna("").astype(str).str.strip()
    empty = df["item_id"] == ""
    if empty.any():
        warnings.warn(DataWarning(f"{path}: skipped {int(empty.sum())} row(s) with an empty item_id"), stacklevel=2)
        df = df[~empty]
    dup = df["item_id"].duplicated(keep=False)
    if dup.any():
        first = df.loc[dup, "item_id"].iloc[0]
        rows = (df.index[df["item_id"] == first].to_numpy() + 2).tolist()[:3]  # + header, 1-based
        raise DataError(
            f"{path}: duplicate item_id {first!r} (data rows at lines {', '.join(map(str, rows))}); "
            f"{int(df['item_id'].duplicated().sum())} duplicate id(s) in all"
        )
    if len(df) == 0:
        raise DataError(f"{path}: no items")
    return df.reset_index(drop=True)


def _numeric(series: pd.Series, name: str, path: Path) -> tuple[pd.Series, np.ndarray]:
    """Parse a numeric column; returns values and a mask of rows that are not usable numbers."""
    raw = series.astype(str).str.strip()
    values = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
    bad = values.isna().to_numpy() | ~np.isfinite(values.fillna(0).to_numpy(dtype=float))
    return values, bad


def clean_interactions(
    df: pd.DataFrame, item_ids: pd.Series | set[str], config: DataConfig, path: Path | str = "interactions"
) -> pd.DataFrame:
    """Validate and filter an interaction frame; returns user_id, item_id, weight, timestamp (+ rating, event)."""
    path = Path(path)
    _require_columns(df, INTERACTION_REQUIRED, path)
    if len(df) == 0:
        raise DataError(f"{path}: the file has a header but no interactions")
    df = df.copy()
    df["user_id"] = df["user_id"].astype(str).str.strip()
    df["item_id"] = df["item_id"].astype(str).str.strip()
    keep = np.ones(len(df), dtype=bool)
    line = np.arange(len(df)) + 2  # header is line 1

    def drop(mask: np.ndarray, why: str) -> None:
        nonlocal keep
        mask = mask & keep
        if mask.any():
            warnings.warn(
                DataWarning(f"{path}: skipped {int(mask.sum())} row(s) {why} (first at line {line[mask][0]})"),
                stacklevel=3,
            )
            keep &= ~mask

    drop(((df["user_id"] == "") | (df["item_id"] == "")).to_numpy(), "with an empty user_id or item_id")

    rating: np.ndarray | None = None
    if "rating" in df.columns:
        parsed, bad = _numeric(df["rating"], "rating", path)
        has_text = (df["rating"].astype(str).str.strip() != "").to_numpy()
        drop(bad & has_text, "with a non-numeric or NaN rating")
        rating = parsed.to_numpy(dtype=float)

    value: np.ndarray | None = None
    for col in WEIGHT_COLUMNS:
        if col in df.columns:
            parsed, bad = _numeric(df[col], col, path)
            drop(bad, f"with a non-numeric or NaN {col}")
            value = parsed.to_numpy(dtype=float)
            drop(np.nan_to_num(value, nan=1.0) <= 0, f"with {col} <= 0")
            break

    ts = np.full(len(df), -1, dtype=np.int64)
    if "timestamp" in df.columns:
        parsed, bad = _numeric(df["timestamp"], "timestamp", path)
        has_text = (df["timestamp"].astype(str).str.strip() != "").to_numpy()
        drop(bad & has_text, "with a non-numeric timestamp")
        t = np.nan_to_num(parsed.to_numpy(dtype=float), nan=-1, posinf=-1, neginf=-1)
        drop(np.abs(t) >= 2.0**63, "with a timestamp out of range (beyond 64-bit seconds)")
        ts = np.where(np.abs(t) < 2.0**63, t, -1).astype(np.int64)

    known = df["item_id"].isin(item_ids).to_numpy()
    drop(~known, "that name an item missing from items")

    if config.rating_threshold is not None and rating is not None:
        below = np.nan_to_num(rating, nan=np.inf) < config.rating_threshold
        keep &= ~below
    if config.events is not None and "event" in df.columns:
        keep &= df["event"].astype(str).str.strip().isin(config.events).to_numpy()

    from avrec.data.columnar import interaction_weights

    weight = interaction_weights(value, rating, len(df), config.weighting, drop)

    out = pd.DataFrame(
        {"user_id": df["user_id"], "item_id": df["item_id"], "weight": weight.astype(np.float32), "timestamp": ts}
    )
    if rating is not None:
        out["rating"] = rating
    if "event" in df.columns:
        out["event"] = df["event"].astype(str)
    out = out[keep].reset_index(drop=True)
    if len(out) == 0:
        raise DataError(f"{path}: no interactions left after validation and filtering")
    return _min_counts(out, config)


def _min_counts(df: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    if config.min_item_interactions > 1:
        counts = df.groupby("item_id")["user_id"].transform("nunique")
        df = df[counts >= config.min_item_interactions]
    if config.min_user_interactions > 1:
        counts = df.groupby("user_id")["item_id"].transform("nunique")
        df = df[counts >= config.min_user_interactions]
    if len(df) == 0:
        raise DataError("no interactions left after the min_user/min_item filters")
    return df.reset_index(drop=True)


def load_folder(folder: str | Path, config: DataConfig | None = None, name: str | None = None) -> Dataset:
    """Load a dataset folder in the avrec format (see README: "Dataset folder format")."""
    folder = Path(folder)
    config = config or DataConfig()
    if not folder.is_dir():
        raise DataError(f"{folder}: not a dataset folder (no such directory)")
    items_path = find_table(folder, "items")
    inter_path = find_table(folder, "interactions")
    from avrec.data.vectors import HEARD_FILE, attach_folder, load_item_vectors, merge_heard_tags

    items = merge_heard_tags(clean_items(read_table(items_path), items_path), folder)  # heard_tags.csv, if any
    tables = [items_path, inter_path] + ([folder / HEARD_FILE] if (folder / HEARD_FILE).is_file() else [])
    checksums = {p.name: sha256_file(p) for p in tables}
    name = name or folder.resolve().name
    dataset = None
    if inter_path.suffix == ".parquet":  # columnar: integer codes, no Python string per row
        from avrec.data.columnar import read_interactions_parquet

        dataset = read_interactions_parquet(inter_path, items["item_id"], config, name=name, items=items,
                                            checksums=checksums)
    if dataset is None:
        inter = clean_interactions(read_table(inter_path), set(items["item_id"]), config, inter_path)
        dataset = build_dataset(items, inter, name=name, checksums=checksums)

    load_item_vectors(attach_folder(dataset.items, folder))  # item_vectors/*.parquet: checked up front
    return dataset


def write_folder(dataset_items: pd.DataFrame, interactions: pd.DataFrame, folder: str | Path) -> Path:
    """Write frames in the dataset folder format (used by converters and tests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dataset_items.to_csv(folder / "items.csv", index=False)
    interactions.to_csv(folder / "interactions.csv", index=False)
    return folder
