"""Run folders: every ``fit``, ``evaluate`` and ``demo`` leaves a record that can be re-run.

A run folder (``runs/<timestamp>-<command>/`` by default) holds:

- ``config.json``: the fully resolved configuration (defaults + config file + ``--set`` overrides);
- ``checksums.json``: sha256 of every input data file (``Dataset.checksums``);
- ``metrics.json``: what the command measured (metrics, timings, sizes);
- ``versions.json``: python, avrec and the main libraries' versions, and the platform;
- ``run.json``: the command line, the seed, start/end time and the exit status.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from avrec.seeding import seed_everything

#: Libraries whose versions change results; recorded in ``versions.json``.
TRACKED_PACKAGES = (
    "avrec", "numpy", "scipy", "pandas", "scikit-learn", "torch", "implicit", "faiss-cpu",
    "sentence-transformers", "transformers",
)


def versions() -> dict[str, str]:
    """Versions of Python, the platform and :data:`TRACKED_PACKAGES` (without importing them)."""
    out = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _jsonable(value: Any) -> Any:
    """Make numpy scalars/arrays, paths and tuples JSON-friendly."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (atomically: a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<command>``; a numeric suffix keeps two runs in one second apart."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{command}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunFolder:
    """The record of one command run; create with :func:`start_run`, close with :meth:`finish`."""

    def __init__(self, path: Path, command: str, seed: int, argv: list[str] | None = None) -> None:
        self.path = path
        self.command = command
        self.seed = int(seed)
        self.argv = list(argv) if argv is not None else sys.argv[1:]
        self.started = time.time()
        self.metrics: dict[str, Any] = {}

    def write(self, name: str, data: Any) -> Path:
        """Write ``name`` (a JSON file) inside the run folder."""
        return write_json(self.path / name, data)

    def record_config(self, config: dict[str, Any]) -> None:
        self.write("config.json", {"seed": self.seed, **config})

    def record_checksums(self, checksums: dict[str, str]) -> None:
        self.write("checksums.json", checksums)

    def record_metrics(self, metrics: dict[str, Any]) -> None:
        self.metrics = metrics
        self.write("metrics.json", metrics)

    def finish(self, status: str = "ok") -> None:
        """Write ``run.json`` with the command line, seed, timing and status."""
        self.write(
            "run.json",
            {
                "command": self.command,
                "argv": self.argv,
                "seed": self.seed,
                "started": _dt.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
                "seconds": round(time.time() - self.started, 3),
                "status": status,
                "cwd": os.getcwd(),
            },
        )


def start_run(command: str, seed: int, run_dir: str | Path | None = None, argv: list[str] | None = None) -> RunFolder:
    """Create the run folder (``run_dir`` or a fresh ``runs/<timestamp>-<command>``), seed every RNG,
    and write ``versions.json``."""
    path = Path(run_dir) if run_dir else default_run_dir(command)
    path.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    run = RunFolder(path, command, seed, argv)
    run.write("versions.json", versions())
    return run


__all__ = ["seed_everything", "versions", "write_json", "default_run_dir", "RunFolder", "start_run"]
