"""The built-in datasets: a static table from name to the module that reads it, looked up lazily.

Importing this module does no work: no dataset module is imported, no file is touched and nothing
registers itself. A dataset module is imported the first time its name is used, and it provides:

- ``NAME``: the dataset's name (the key below);
- ``SOURCE``: a :class:`~avrec.data.sources.download.Source` (download URL, marker file, pinned
  digests, folder names searched under ``AVREC_DATA``);
- ``frames(data_dir=None) -> (items, interactions)``: raw frames in the folder format's columns,
  every source column kept (``avrec data convert``);
- ``load(config, data_dir=None) -> Dataset``: the cleaned, enriched dataset (usually
  :func:`avrec.data.sources.base.load_copy`).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING

from avrec.errors import DataError, DataWarning

if TYPE_CHECKING:
    import pandas as pd

    from avrec.data.dataset import Dataset
    from avrec.data.io import DataConfig
    from avrec.data.sources.download import Source

#: name -> module under ``avrec.data.sources``; adding a dataset adds one line here.
BUILTIN: MappingProxyType[str, str] = MappingProxyType(
    {
        "ml-latest-small": "ml_latest_small",
        "ml-100k": "ml_100k",
        "ml-1m": "ml_1m",
        "ml-25m": "ml_25m",
        "lastfm-2k": "lastfm_2k",
    }
)


def dataset_names() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(BUILTIN)


def dataset_module(name: str) -> ModuleType:
    """The module that reads built-in dataset ``name`` (imported on first use)."""
    if name not in BUILTIN:
        raise DataError(f"{name}: not a built-in dataset; known: {', '.join(dataset_names())}")
    return importlib.import_module(f"{__package__}.{BUILTIN[name]}")


def download_source(name: str) -> Source:
    """Where built-in dataset ``name`` is downloaded from and what is pinned about its bytes."""
    source = getattr(dataset_module(name), "SOURCE", None) if name in BUILTIN else None
    if source is None:
        raise DataError(f"{name}: no download source; known: {', '.join(dataset_names())}")
    return source


def download_sources() -> dict[str, Source]:
    """Every built-in dataset's :class:`Source` (imports every dataset module)."""
    return {name: download_source(name) for name in dataset_names()}


def fetch(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download built-in dataset ``name`` (once) and return the folder holding its files.

    Raises :class:`DataError` when the name is unknown, the download fails, or any checksum does not match.
    """
    from avrec.data.sources.download import fetch_source

    return fetch_source(name, download_source(name), cache_dir)


def builtin_frames(name: str, data_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw (items, interactions) frames of a built-in dataset in the folder format's columns.

    Unlike a loaded :class:`Dataset`, these keep every source column (rating, timestamp, event, plays),
    so ``avrec data convert`` loses nothing and the converted folder loads to the same dataset.
    """
    return dataset_module(name).frames(data_dir)


def load_dataset(
    source: str | Path, config: DataConfig | None = None, data_dir: str | Path | None = None
) -> Dataset:
    """A built-in dataset by name, or a dataset folder in the avrec format (``config.enrich`` applied)."""
    from avrec.data.io import DataConfig, load_folder
    from avrec.data.sources.enrich import enrich_items

    config = config or DataConfig()
    key = str(source)
    if key in BUILTIN:
        module = dataset_module(key)
        with warnings.catch_warnings():
            # built-in sources are known-clean up to documented quirks
            warnings.simplefilter("ignore", DataWarning)
            return module.load(config, data_dir)
    path = Path(key)
    if path.is_dir():
        ds = load_folder(path, config)
        if config.enrich:
            ds.items = enrich_items(ds.items, config, data_dir)
        return ds
    known = ", ".join(dataset_names())
    raise DataError(f"{source}: neither a dataset folder nor a built-in dataset ({known})")


__all__ = [
    "BUILTIN", "builtin_frames", "dataset_module", "dataset_names", "download_source", "download_sources",
    "fetch", "load_dataset",
]
