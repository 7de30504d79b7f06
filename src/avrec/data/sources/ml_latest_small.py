"""``ml-latest-small``: MovieLens latest-small, 100,836 ratings, 610 users, 9,742 movies.

The zip ships inside the package (``avrec.data.embedded``, with its README and licence), so this is
the offline default; a copy under ``AVREC_DATA`` / ``--data-dir`` wins over the embedded one.
"""

from __future__ import annotations

import io
import zipfile
from importlib import resources
from pathlib import Path

import pandas as pd

from avrec.data.dataset import Dataset
from avrec.data.io import DataConfig, sha256_file
from avrec.data.sources.base import Frames, finish
from avrec.data.sources.download import GROUPLENS, Source, local_copy
from avrec.data.sources.movielens import csv_release_frames, movielens_csv_frames

NAME = "ml-latest-small"
SOURCE = Source(
    f"{GROUPLENS}/movielens/ml-latest-small.zip",
    "ratings.csv",
    members_sha256={"README.txt": "63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404"},
    local_names=("ml-latest-small",),
)
EMBEDDED_PACKAGE = "avrec.data.embedded"
EMBEDDED_ZIP = "ml-latest-small.zip"
CHECKSUM_FILES = ("movies.csv", "ratings.csv")


def embedded_frames() -> Frames:
    """Items and ratings from the zip inside the package (read once, every member from memory)."""
    with resources.files(EMBEDDED_PACKAGE).joinpath(EMBEDDED_ZIP).open("rb") as f:
        data = f.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = set(z.namelist())

        def read(name: str, required: bool = True) -> pd.DataFrame | None:
            if name not in members and not required:
                return None
            return pd.read_csv(z.open(name), dtype=str, keep_default_na=False)

        return csv_release_frames(read)


def _local(data_dir: str | Path | None) -> Path | None:
    return local_copy(SOURCE.local_names, SOURCE.marker, data_dir)


def frames(data_dir: str | Path | None = None) -> Frames:
    """Raw items and ratings: the local copy when there is one, else the embedded zip."""
    local = _local(data_dir)
    return movielens_csv_frames(local) if local is not None else embedded_frames()


def load(config: DataConfig, data_dir: str | Path | None = None) -> Dataset:
    """The dataset, with the checksums of the files it was read from."""
    local = _local(data_dir)
    if local is not None:
        items, ratings = movielens_csv_frames(local)
        checksums = {p: sha256_file(local / p) for p in CHECKSUM_FILES}
    else:
        items, ratings = embedded_frames()
        zip_path = Path(str(resources.files(EMBEDDED_PACKAGE).joinpath(EMBEDDED_ZIP)))
        checksums = {"embedded:" + EMBEDDED_ZIP: sha256_file(zip_path)}
    return finish(items, ratings, config, NAME, checksums, data_dir)


__all__ = ["NAME", "SOURCE", "embedded_frames", "frames", "load"]
