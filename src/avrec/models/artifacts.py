"""Model folders (the persistence of :class:`avrec.models.base.Recommender`): ``config.json`` +
``catalog/`` (items and users as Parquet, training matrix as safetensors) + ``model.safetensors``.
Nothing is pickled, so loading a folder never runs code from it.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from avrec.config import known_settings
from avrec.errors import ConfigError, DataError
from avrec.models.mapped import map_tensors

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
    if not meta_path.exists() and not recover_folder(folder):
        raise DataError(f"{folder}: not a model folder (no config.json); create one with `avrec fit`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{meta_path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise DataError(f"{meta_path}: not a model folder's config.json (no \"model\" name)")
    return meta


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
    return model_cls(known_settings(model_cls.Config, meta.get("config") or {}))


def read_catalog(folder: Path) -> tuple[pd.DataFrame, np.ndarray, sp.csr_matrix, np.ndarray]:
    """(items, user ids, training matrix, popularity) of a model folder."""
    items = read_parquet(folder / "catalog" / "items.parquet").fillna("")
    users_frame = read_parquet(folder / "catalog" / "users.parquet")
    if "user_id" not in users_frame:
        raise DataError(f"{folder / 'catalog' / 'users.parquet'}: no user_id column (a damaged model folder)")
    base = read_tensors(folder / "catalog" / "train.safetensors")
    try:
        return items, users_frame["user_id"].to_numpy(dtype=object), csr_from_tensors("seen", base), base["popularity"]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{folder / 'catalog' / 'train.safetensors'}: not the training matrix of a model "
                        f"folder ({type(e).__name__}: {e})") from None


class StateArrays(dict):
    """A model's saved arrays; asking for one that is absent (a folder mixing two saves, or another model's
    state file) is one DataError naming the file, not a KeyError."""

    def __init__(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        super().__init__(arrays)
        self.path = path

    def __missing__(self, key: str) -> np.ndarray:
        raise DataError(f"{self.path}: has no {key!r} array, which this model needs (a damaged or mixed "
                        "model folder)")


def read_state(folder: Path) -> dict[str, np.ndarray]:
    path = folder / "model.safetensors"
    return StateArrays(read_tensors(path), path)


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's arrays; a missing, truncated or garbled file is one DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: missing (a damaged or half-written model folder)")
    try:
        mapped = map_tensors(path)  # shared by every process serving this folder (avrec serve --workers)
        return mapped if mapped is not None else load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise DataError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet table of a model folder; a missing or damaged file is one DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: missing (a damaged or half-written model folder)")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for damaged files
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None


def save_atomically(model: Any, folder: str | Path, carry: Callable[[str], bool] = lambda name: True) -> Path:
    """Save ``model`` as ``folder`` so a reader (or a crash, SIGKILL included) sees the old folder or the new
    one, never a mix: see :func:`replace_folder`. Entries of the old folder the save does not write (a probe
    set, a policy) are kept when ``carry(name)`` says so."""
    return replace_folder(folder, lambda tmp: model.save(tmp), carry)


def replace_folder(folder: str | Path, write: Callable[[Path], Any],
                   carry: Callable[[str], bool] = lambda name: True) -> Path:
    """Build a folder with ``write(tmp)`` in a hidden sibling, make it durable (fsync), then swap it in.

    The swap exchanges the two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); where the
    file system cannot, the old folder is renamed aside and the new one renamed in (a crash between the two
    is undone by :func:`recover_folder`, which loading calls). A folder that cannot be renamed at all (a mount
    point) gets the files moved in one by one, ``config.json`` last. Top-level entries of the old folder
    that the new one lacks are hard-linked across when ``carry(name)``. What a killed save leaves is a hidden
    ``.NAME.saving-PID-*`` sibling, which no loader reads and the next save removes.
    """
    folder = Path(folder)
    if folder.is_symlink():  # swap the folder it points to, not the link
        folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: exists and is not a folder; give a folder to save the model in")
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    _remove_dead_temps(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-{os.getpid()}-", dir=folder.parent))
    try:
        write(tmp)
        if folder.is_dir():
            for entry in folder.iterdir():
                if not (tmp / entry.name).exists() and carry(entry.name):
                    _link_into(entry, tmp / entry.name)
        _fsync_tree(tmp)
        if not folder.exists():
            os.rename(tmp, folder)
        elif not _exchange(tmp, folder):
            _swap_by_renames(tmp, folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old folder
    return folder


def recover_folder(folder: Path) -> bool:
    """Put back a folder that a save killed between its two renames left aside; True when it did."""
    if folder.exists():
        return False
    aside = sorted(folder.parent.glob(f".{glob.escape(folder.name)}.old-*"))
    if not aside:
        return False
    os.rename(aside[-1], folder)
    return True


def _remove_dead_temps(folder: Path) -> None:
    """Delete the ``.NAME.saving-PID-*`` folders of saves whose process is gone (killed mid-save)."""
    for tmp in folder.parent.glob(f".{glob.escape(folder.name)}.saving-*"):
        pid = tmp.name[len(folder.name) + len(".saving-") + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_into(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (a file or a whole tree) to ``dst``; copy where links are not possible."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir()
        for child in src.iterdir():
            _link_into(child, dst / child.name)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(folder: Path) -> None:
    """Make a rename or new entry in ``folder`` durable (fsync of the directory itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2); False where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EBUSY):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _swap_by_renames(tmp: Path, folder: Path) -> None:
    """Rename ``folder`` aside and ``tmp`` in; a folder that cannot be renamed gets the files moved in."""
    aside = folder.parent / f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, aside)
    except OSError:  # a mount point, or a folder the file system will not move
        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.name == "config.json")
        for f in files:
            target = folder / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
        return
    os.rename(tmp, folder)
    shutil.rmtree(aside, ignore_errors=True)
