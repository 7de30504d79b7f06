"""Helpers shared by the command modules: consoles, id files, model folders, run records, common flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from avrec.errors import DataError


def stdout_console():
    """A Rich console on standard output (160 columns when it is not a terminal)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def stderr_console():
    """A Rich console on standard error, for progress and status lines."""
    from rich.console import Console

    return Console(stderr=True)


def read_id_file(path: str | Path, what: str = "id") -> list[str]:
    """Ids from a file with one per line (blank lines skipped; a first line ``user_id``/``item_id``/``id``
    is taken as a header). Order is kept, duplicates dropped."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8; save the file as UTF-8") from None
    lines = [line.strip() for line in text.splitlines()]
    if lines and lines[0] in ("user_id", "item_id", "id"):
        lines = lines[1:]
    ids = list(dict.fromkeys(line for line in lines if line))
    if not ids:
        raise DataError(f"{path}: no {what}s (expected one {what} per line)")
    return ids


def require_model_folder(folder: str | Path) -> Path:
    """``folder`` when a model can be loaded from it (plain, or versioned by ``avrec update``); otherwise one
    DataError naming it. The one check every command that reads a model folder makes."""
    from avrec.models.versions import resolve_model_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such model folder (not a model folder); create one with `avrec fit --out`")
    if not (resolve_model_folder(folder) / "config.json").exists():
        raise DataError(f"{folder}: not a model folder (no config.json); create one with `avrec fit --out`")
    return folder


def load_model(folder: str | Path):
    """A saved model; a DataError naming the folder when it is not one."""
    from avrec.models.base import Recommender

    return Recommender.load(require_model_folder(folder))


def load_data(args: argparse.Namespace, data_config: Any, console):
    """``args.dataset`` (a folder or built-in name) loaded with ``data_config``, behind a status line."""
    from avrec.data.builtin import load_dataset

    with console.status(f"loading {args.dataset}"):
        return load_dataset(args.dataset, data_config, getattr(args, "data_dir", None))


def finish_run(run, ok: bool) -> None:
    """Close a run record as ``ok`` or ``error``."""
    if run is not None:
        run.finish("ok" if ok else "error")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """``--data-dir DIR``: local dataset copies."""
    p.add_argument("--data-dir", metavar="DIR", help="folder with local dataset copies (default: $AVREC_DATA)")


def add_run_dir(p: argparse.ArgumentParser) -> None:
    """``--run-dir DIR``: where the run record goes."""
    p.add_argument("--run-dir", metavar="DIR", help="write the run record here (default: runs/<timestamp>-<command>)")
