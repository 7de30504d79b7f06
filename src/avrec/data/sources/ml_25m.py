"""``ml-25m``: MovieLens 25M, 25,000,095 ratings, 162,541 users, 62,423 movies (CSV release)."""

from __future__ import annotations

from pathlib import Path

from avrec.data.dataset import Dataset
from avrec.data.io import DataConfig
from avrec.data.sources.base import Frames, load_copy
from avrec.data.sources.download import GROUPLENS, Source, locate
from avrec.data.sources.movielens import movielens_csv_frames as read_frames

NAME = "ml-25m"
SOURCE = Source(f"{GROUPLENS}/movielens/ml-25m.zip", "ratings.csv", local_names=("ml-25m",))
CHECKSUM_FILES = ("movies.csv", "ratings.csv")


def frames(data_dir: str | Path | None = None) -> Frames:
    """Raw items and ratings of the local or downloaded copy."""
    return read_frames(locate(NAME, SOURCE, data_dir))


def load(config: DataConfig, data_dir: str | Path | None = None) -> Dataset:
    """The dataset, from ``AVREC_DATA``/``data_dir`` or downloaded once from GroupLens."""
    return load_copy(NAME, SOURCE, read_frames, CHECKSUM_FILES, config, data_dir)


__all__ = ["NAME", "SOURCE", "frames", "load", "read_frames"]
