"""Shared pytest fixtures: the real data folder, ml-latest-small and its default split.

``ml-latest-small`` is embedded in the package, so ``ml_small`` never skips; ``shared_data`` points at
../shared/data (or ``AVREC_DATA``) and skips with a clear reason where that folder is absent (a clean
clone without the shared datasets).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from avrec.data.builtin import load_dataset
from avrec.data.dataset import Dataset
from avrec.data.splits import Split, SplitConfig, make_split
from avrec.errors import DataWarning

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_dir() -> Path | None:
    """The folder with the shared real datasets (AVREC_DATA wins), or None when it is absent."""
    for candidate in (os.environ.get("AVREC_DATA"), SHARED_DATA):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips tests that need it when it is not there."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"shared datasets not found (set AVREC_DATA or provide {SHARED_DATA})")
    return path


@pytest.fixture(scope="session")
def ml_small() -> Dataset:
    """MovieLens latest-small as the package loads it by default (embedded copy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_dataset("ml-latest-small")


@pytest.fixture(scope="session")
def ml_split(ml_small: Dataset) -> Split:
    """The reference protocol: per-user random 8:1:1, seed 2026."""
    return make_split(ml_small, SplitConfig(method="random", seed=2026))
