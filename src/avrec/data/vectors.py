"""Item vectors per modality: ``item_vectors/<modality>.parquet`` in a dataset folder, and where media files are.

A vector file holds ``item_id`` and one fixed-width vector per row, either as a list column ``vector`` or
as numeric columns ``v0 … v{d-1}`` (any names: every column but ``item_id``). Items the file leaves out
simply lack that modality. Checked on load: a missing ``item_id`` column, duplicate or unknown ids, a row
whose width differs, NaN or inf each give one :class:`DataError` naming the file, the row and the field.

The dataset folder a catalogue came from is recorded in ``items.attrs`` (see :func:`attach_folder`), so the
models, which see only the item frame, can read the folder's vector files and resolve relative media paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avrec.errors import DataError

#: Key of the dataset folder in ``DataFrame.attrs`` of a catalogue loaded from disk.
FOLDER_ATTR = "avrec.folder"
VECTORS_DIR = "item_vectors"
#: Columns that name a media file, per modality (``media_path`` counts where ``media_type`` matches).
MEDIA_COLUMNS = {"audio": ("audio_path",), "video": ("video_path",), "image": ("image_path", "poster_path")}
_MEDIA_TYPES = {"audio": {"audio", "music", "track", "song", "podcast"},
                "video": {"video", "clip", "movie", "film", "episode", "show", "tv"},
                "image": {"image", "poster", "thumbnail", "picture", "photo"}}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ModalityVectors:
    """One modality's vectors aligned with a catalogue: row ``i`` is item ``i`` where ``present[i]``."""

    modality: str
    matrix: np.ndarray  # float32 (n_items, dim); zero rows where absent
    present: np.ndarray  # bool (n_items,)
    source: str  # the file, or the extractor id

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def attach_folder(items: pd.DataFrame, folder: str | Path) -> pd.DataFrame:
    """Record the dataset folder of ``items`` (in place) and return it."""
    items.attrs[FOLDER_ATTR] = str(Path(folder).resolve())
    return items


def folder_of(items: pd.DataFrame) -> Path | None:
    """The dataset folder ``items`` was loaded from, if known."""
    value = items.attrs.get(FOLDER_ATTR)
    return Path(value) if value else None


def vector_files(folder: Path | None) -> dict[str, Path]:
    """``{modality: path}`` of the folder's ``item_vectors/*.parquet``."""
    if folder is None or not (folder / VECTORS_DIR).is_dir():
        return {}
    return {p.stem: p for p in sorted((folder / VECTORS_DIR).glob("*.parquet"))}


def _vector_matrix(df: pd.DataFrame, path: Path) -> np.ndarray:
    """The (rows, dim) float matrix of a vector table, checking widths and values row by row."""
    cols = [c for c in df.columns if c != "item_id"]
    if not cols:
        raise DataError(f"{path}: no vector columns (expected a list column 'vector' or columns v0..vN)")
    if len(cols) == 1 and df[cols[0]].dtype == object:
        field = cols[0]
        rows = df[field].tolist()
        widths = [-1 if r is None or np.ndim(r) != 1 else len(r) for r in rows]
        width = max(set(widths), key=widths.count) if rows else 0
        for i, w in enumerate(widths):
            if w != width:
                got = "no vector" if w < 0 else f"{w} values"
                raise DataError(f"{path}: row {i} (item_id {df['item_id'].iloc[i]!r}), field {field!r}: "
                                f"{got}, expected {width} like the other rows")
        try:
            matrix = np.asarray(np.stack([np.asarray(r, dtype=np.float64) for r in rows]) if rows
                                else np.zeros((0, 0)), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: field {field!r} holds values that are not numbers ({exc})") from None
        names = [f"{field}[{c}]" for c in range(width)]
    else:
        try:
            matrix = df[cols].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            bad = next(c for c in cols if not pd.api.types.is_numeric_dtype(df[c]))
            raise DataError(f"{path}: field {bad!r} is not numeric") from None
        names = cols
    bad_rows, bad_cols = np.nonzero(~np.isfinite(matrix))
    if len(bad_rows):
        r, c = int(bad_rows[0]), int(bad_cols[0])
        what = "NaN" if np.isnan(matrix[r, c]) else "inf"
        raise DataError(f"{path}: row {r} (item_id {df['item_id'].iloc[r]!r}), field {names[c]!r}: {what} "
                        f"({len(set(bad_rows.tolist()))} row(s) with NaN or inf in all)")
    return matrix.astype(np.float32)


def read_vector_file(path: Path, item_ids: np.ndarray | list[str], modality: str | None = None,
                     dim: int | None = None) -> ModalityVectors:
    """Read and check one ``item_vectors/<modality>.parquet`` against a catalogue's ``item_ids``."""
    path = Path(path)
    modality = modality or path.stem
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    if "item_id" not in df.columns:
        raise DataError(f"{path}: missing required column 'item_id' (found: {', '.join(map(str, df.columns))})")
    ids = df["item_id"].astype(str).str.strip()
    dup = ids.duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: row {r}, field 'item_id': duplicate item_id {ids.iloc[r]!r}")
    matrix = _vector_matrix(df, path)
    if dim is not None and matrix.shape[1] != dim:
        raise DataError(f"{path}: vectors have width {matrix.shape[1]}, expected {dim}")
    index = pd.Index([str(i) for i in item_ids])
    pos = index.get_indexer(pd.Index(ids))
    if (pos < 0).any():
        r = int(np.flatnonzero(pos < 0)[0])
        raise DataError(f"{path}: row {r}, field 'item_id': unknown item_id {ids.iloc[r]!r} (not in the catalogue; "
                        f"{int((pos < 0).sum())} unknown id(s) in all)")
    out = np.zeros((len(index), matrix.shape[1]), dtype=np.float32)
    present = np.zeros(len(index), dtype=bool)
    out[pos] = matrix
    present[pos] = True
    return ModalityVectors(modality, out, present, str(path))


def write_vector_file(path: str | Path, item_ids: list[str] | np.ndarray, matrix: np.ndarray) -> Path:
    """Write vectors in the ``item_vectors`` format (``item_id`` + list column ``vector``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.asarray(matrix, dtype=np.float32)
    pd.DataFrame({"item_id": [str(i) for i in item_ids], "vector": list(m)}).to_parquet(path, index=False)
    return path


def load_item_vectors(items: pd.DataFrame, folder: Path | None = None) -> dict[str, ModalityVectors]:
    """Every ``item_vectors/<modality>.parquet`` of the catalogue's folder, checked and aligned with ``items``."""
    folder = folder if folder is not None else folder_of(items)
    out = {}
    for modality, path in vector_files(folder).items():
        if not _NAME.match(modality):
            raise DataError(f"{path}: a modality name is letters, digits, '_', '-' or '.'")
        out[modality] = read_vector_file(path, items["item_id"].astype(str).to_numpy(), modality)
    return out


def media_paths(items: pd.DataFrame, modality: str, folder: Path | None = None) -> list[Path | None]:
    """Per item, the media file of ``modality`` (relative paths against the dataset folder), or None."""
    folder = folder if folder is not None else folder_of(items)
    n = len(items)
    chosen: list[str] = [""] * n
    for col in MEDIA_COLUMNS.get(modality, ()):
        if col in items.columns:
            vals = items[col].fillna("").astype(str).str.strip().tolist()
            chosen = [c or v for c, v in zip(chosen, vals)]
    if "media_path" in items.columns and "media_type" in items.columns:
        kinds = _MEDIA_TYPES.get(modality, {modality})
        types = items["media_type"].fillna("").astype(str).str.strip().str.lower().tolist()
        vals = items["media_path"].fillna("").astype(str).str.strip().tolist()
        chosen = [c or (v if t in kinds else "") for c, v, t in zip(chosen, vals, types)]
    out: list[Path | None] = []
    for value in chosen:
        if not value:
            out.append(None)
            continue
        p = Path(value.removeprefix("file://")).expanduser()
        if not p.is_absolute() and folder is not None:
            p = folder / p
        out.append(p)
    return out


#: Tags an audio tagger heard (``avrec embed --modality audio --heard-tags``): ``item_id``, ``heard_tags``.
HEARD_FILE = "heard_tags.csv"
HEARD_COLUMN = "heard_tags"


def merge_heard_tags(items: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """``items`` with the folder's ``heard_tags.csv`` as a ``heard_tags`` column (``|``-separated); unchanged
    when the folder has no such file. Unknown or duplicate ids are a :class:`DataError` naming the row."""
    path = Path(folder) / HEARD_FILE
    if not path.is_file():
        return items
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for a bad CSV
        raise DataError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from None
    for col in ("item_id", HEARD_COLUMN):
        if col not in df.columns:
            raise DataError(f"{path}: missing required column {col!r} (found: {', '.join(map(str, df.columns))})")
    ids = df["item_id"].str.strip()
    known = set(items["item_id"].astype(str))
    for r, i in enumerate(ids):
        if i not in known:
            raise DataError(f"{path}: row {r}, field 'item_id': unknown item_id {i!r} (not in the catalogue)")
    if ids.duplicated().any():
        r = int(np.flatnonzero(ids.duplicated().to_numpy())[0])
        raise DataError(f"{path}: row {r}, field 'item_id': duplicate item_id {ids.iloc[r]!r}")
    heard = dict(zip(ids, df[HEARD_COLUMN].str.strip()))
    out = items.copy()
    out[HEARD_COLUMN] = [heard.get(str(i), "") for i in items["item_id"]]
    return out


def has_media(items: pd.DataFrame, modality: str) -> bool:
    """True when some item names a media file of ``modality``."""
    return any(p is not None for p in media_paths(items, modality))


__all__ = ["FOLDER_ATTR", "HEARD_COLUMN", "HEARD_FILE", "MEDIA_COLUMNS", "ModalityVectors", "VECTORS_DIR",
           "attach_folder", "folder_of", "has_media", "load_item_vectors", "media_paths", "merge_heard_tags",
           "read_vector_file", "vector_files", "write_vector_file"]
