"""``ml-1m``: MovieLens 1M, 1,000,209 ratings, 6,040 users, 3,706 movies (``::``-separated, latin-1)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from avrec.data.dataset import Dataset
from avrec.data.io import DataConfig
from avrec.data.sources.base import Frames, load_copy, need_file
from avrec.data.sources.download import GROUPLENS, Source, locate
from avrec.data.sources.movielens import movielens_items
from avrec.errors import DataError

NAME = "ml-1m"
SOURCE = Source(f"{GROUPLENS}/movielens/ml-1m.zip", "ratings.dat", local_names=("ml-1m",))
CHECKSUM_FILES = ("movies.dat", "ratings.dat")


def _read_double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    """Read a MovieLens 1M ``::``-separated latin-1 file (titles may contain single colons)."""
    text = path.read_bytes().decode("latin-1")
    rows = [line.split("::", len(names) - 1) for line in text.splitlines() if line.strip()]
    bad = next((n for n, r in enumerate(rows, start=1) if len(r) != len(names)), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad} does not have {len(names)} '::'-separated fields")
    return pd.DataFrame(rows, columns=names)


def read_frames(folder: str | Path) -> Frames:
    """MovieLens 1M (``movies.dat``, ``ratings.dat``; ``::``-separated, latin-1) as items and ratings."""
    folder = Path(folder)
    movies = _read_double_colon(need_file(folder, "movies.dat"), ["movieId", "title", "genres"])
    items = movielens_items(movies, None, None)
    raw = need_file(folder, "ratings.dat").read_bytes().replace(b"::", b"\t")
    ratings = pd.read_csv(
        io.BytesIO(raw), sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
        dtype=str, keep_default_na=False, encoding="latin-1",
    )
    ratings["event"] = "rate"
    return items, ratings


def frames(data_dir: str | Path | None = None) -> Frames:
    """Raw items and ratings of the local or downloaded copy."""
    return read_frames(locate(NAME, SOURCE, data_dir))


def load(config: DataConfig, data_dir: str | Path | None = None) -> Dataset:
    """The dataset, from ``AVREC_DATA``/``data_dir`` or downloaded once from GroupLens."""
    return load_copy(NAME, SOURCE, read_frames, CHECKSUM_FILES, config, data_dir)


__all__ = ["NAME", "SOURCE", "frames", "load", "read_frames"]
