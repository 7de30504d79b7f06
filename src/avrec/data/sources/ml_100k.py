"""``ml-100k``: MovieLens 100K, 100,000 ratings, 943 users, 1,682 movies (``u.item``, ``u.data``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avrec.data.dataset import Dataset
from avrec.data.io import DataConfig
from avrec.data.sources.base import Frames, load_copy, need_file
from avrec.data.sources.download import GROUPLENS, Source, locate
from avrec.data.sources.movielens import movielens_items
from avrec.errors import DataError

NAME = "ml-100k"
SOURCE = Source(f"{GROUPLENS}/movielens/ml-100k.zip", "u.data", local_names=("ml-100k",))
CHECKSUM_FILES = ("u.item", "u.data")
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def read_frames(folder: str | Path) -> Frames:
    """MovieLens 100K (``u.item`` ``|``-separated latin-1, ``u.data`` tab-separated) as items and ratings."""
    folder = Path(folder)
    genres = list(GENRES)
    genre_file = folder / "u.genre"
    if genre_file.exists():
        pairs = [line.rsplit("|", 1) for line in genre_file.read_text(encoding="latin-1").splitlines() if "|" in line]
        genres = [g for g, _ in sorted(pairs, key=lambda p: int(p[1]))]
    path = need_file(folder, "u.item")
    rows = []
    for n, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 5 + len(genres):
            raise DataError(f"{path}: line {n} has {len(parts)} fields, expected {5 + len(genres)}")
        flags = parts[5 : 5 + len(genres)]
        names = [g for g, f in zip(genres, flags) if f.strip() == "1" and g != "unknown"]
        rows.append((parts[0].strip(), parts[1].strip(), "|".join(names)))
    movies = pd.DataFrame(rows, columns=["movieId", "title", "genres"])
    items = movielens_items(movies, None, None)
    ratings = pd.read_csv(
        need_file(folder, "u.data"), sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
        dtype=str, keep_default_na=False,
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
