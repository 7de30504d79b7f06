"""What every built-in dataset module shares: raw frames in, a cleaned and enriched :class:`Dataset` out.

A dataset module reads its files into two frames in the folder format's columns (``items``,
``interactions``); :func:`finish` cleans them exactly as a dataset folder is cleaned, applies
``data.enrich`` and builds the dataset, so a built-in dataset and its ``avrec data convert`` copy
load to the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from avrec.data.dataset import Dataset, build_dataset
from avrec.data.io import DataConfig, clean_interactions, clean_items, sha256_file
from avrec.data.sources.download import Source, locate
from avrec.data.sources.enrich import enrich_items
from avrec.errors import DataError

Frames = tuple[pd.DataFrame, pd.DataFrame]


def need_file(folder: Path, name: str) -> Path:
    """``folder / name``, or a :class:`DataError` naming the missing file."""
    path = folder / name
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


def finish(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    config: DataConfig,
    name: str,
    checksums: dict[str, str],
    data_dir: str | Path | None = None,
) -> Dataset:
    """Clean ``items`` and ``interactions``, apply ``config.enrich`` and build the dataset ``name``."""
    items = clean_items(items, Path(f"{name}/items"))
    items = enrich_items(items, config, data_dir)
    inter = clean_interactions(interactions, set(items["item_id"]), config, Path(f"{name}/interactions"))
    return build_dataset(items, inter, name=name, checksums=checksums)


def load_copy(
    name: str,
    source: Source,
    read_frames: Callable[[Path], Frames],
    checksum_files: tuple[str, ...],
    config: DataConfig,
    data_dir: str | Path | None = None,
) -> Dataset:
    """Load ``name`` from its local or downloaded folder; ``checksum_files`` go into ``Dataset.checksums``."""
    folder = locate(name, source, data_dir)
    items, interactions = read_frames(folder)
    checksums = {f: sha256_file(folder / f) for f in checksum_files}
    return finish(items, interactions, config, name, checksums, data_dir)


__all__ = ["Frames", "finish", "load_copy", "need_file"]
