"""Model folders (the persistence of :class:`avrec.models.base.Recommender`): ``config.json`` +
``catalog/`` (items and users as Parquet, training matrix as safetensors) + ``model.safetensors``.
Nothing is pickled, so loading a folder never runs code from it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from avrec.config import known_settings
from avrec.errors import ConfigError, DataError

FORMAT_VERSION = 1


def csr_to_tensors(prefix: str, m: sp.spmatrix) -> dict[str, np.ndarray]:
    """A sparse matrix as four named arrays (safetensors holds dense arrays only)."""
    m = sp.csr_matrix(m)
    return {
        f"{prefix}.indptr": m.indptr.astype(np.int64),
        f"{prefix}.indices": m.indices.astype(np.int32),
        f"{prefix}.data": m.data.astype(np.float32),
        f"{prefix}.shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_tensors(prefix: str, t: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(s) for s in t[f"{prefix}.shape"])
    return sp.csr_matrix((t[f"{prefix}.data"], t[f"{prefix}.indices"], t[f"{prefix}.indptr"]), shape=shape)


def read_meta(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, with one-line errors for a missing or broken file."""
    meta_path = folder / "config.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: not a model folder (no config.json); create one with `avrec fit`")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_folder(model: Any, folder: Path, state: dict[str, np.ndarray]) -> None:
    """Write a fitted model's catalogue, metadata and ``state`` (its own arrays)."""
    from avrec import __version__

    (folder / "catalog").mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": asdict(model.config) if is_dataclass(model.config) and not isinstance(model.config, type) else {},
        "avrec_version": __version__,
        "python": platform.python_version(),
        "n_items": model.n_items,
        "n_users": len(model.user_ids),
    }
    (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    model.items.astype(str).to_parquet(folder / "catalog" / "items.parquet", index=False)
    users = pd.DataFrame({"user_id": model.user_ids.astype(str)})
    users.to_parquet(folder / "catalog" / "users.parquet", index=False)
    base = csr_to_tensors("seen", model.seen)
    base["popularity"] = model.popularity.astype(np.float32)
    save_file(base, str(folder / "catalog" / "train.safetensors"))
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(folder / "model.safetensors"))


def new_model_for(folder: Path, expected: Any) -> Any:
    """An unfitted instance of the class named in ``folder``'s config.json, with its saved settings.

    ``expected`` (a Recommender subclass, or the base class for any model) guards ``EASE.load(folder)``
    against a folder that holds another model.
    """
    from avrec.models.registry import get_model_class

    meta = read_meta(folder)
    model_cls = get_model_class(meta["model"])
    if expected.name and not issubclass(model_cls, expected):
        raise ConfigError(f"{folder} holds a {meta['model']!r} model, not {expected.name!r}")
    # keys this version no longer has are dropped; old names (aliases, e.g. hybrid's ease_l2) still map
    return model_cls(known_settings(model_cls.Config, meta["config"]))


def read_catalog(folder: Path) -> tuple[pd.DataFrame, np.ndarray, sp.csr_matrix, np.ndarray]:
    """(items, user ids, training matrix, popularity) of a model folder."""
    items = pd.read_parquet(folder / "catalog" / "items.parquet").fillna("")
    users = pd.read_parquet(folder / "catalog" / "users.parquet")["user_id"].to_numpy(dtype=object)
    base = load_file(str(folder / "catalog" / "train.safetensors"))
    return items, users, csr_from_tensors("seen", base), base["popularity"]


def read_state(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "model.safetensors"))


def save_atomically(model: Any, folder: str | Path) -> None:
    """Save next to ``folder`` and move the files in, ``config.json`` last, so readers never see half a save."""
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.update-", dir=folder.parent))
    try:
        model.save(tmp)
        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.name == "config.json")
        for f in files:
            target = folder / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
