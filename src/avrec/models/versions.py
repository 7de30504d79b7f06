"""Model versions: a model folder that keeps each promoted update as its own version, behind a pointer.

A *versioned* model folder (a "home") holds::

    CURRENT            the served version's name, one line; replaced atomically (write, fsync, rename)
    versions/v0001/    a complete model folder (what ``avrec fit --out`` writes), one per version
    versions.json      every version (parent, probe NDCG, status, what the update did) and the history
                       of promotions, refusals and rollbacks
    probe.parquet      the frozen probe set of the forgetting guard (``avrec.serve.probe``), when drawn

A plain model folder becomes a home on its first ``avrec update`` (:meth:`VersionHome.adopt`): its files
become ``v0001`` (hard links, so no copy), then the pointer is written. :func:`resolve_model_folder` maps a
home to its current version, so ``Recommender.load(home)`` loads what the pointer names, and a server
watching the home reloads when the pointer moves. Only the pointer decides what is served: a version
written but not promoted, or a crash half-way through an update, leaves the served model as it was.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avrec.errors import DataError
from avrec.models.artifacts import fsync_dir

POINTER = "CURRENT"
VERSIONS_DIR = "versions"
REGISTRY = "versions.json"
LOCK = ".update.lock"
#: files of a home that are not part of a version (left in place when a plain folder is adopted)
HOME_FILES = {POINTER, VERSIONS_DIR, REGISTRY, LOCK, "probe.parquet", "probe.json", "probe_items.parquet"}
NAME = re.compile(r"^v\d{4,}$")


def is_home(folder: str | Path) -> bool:
    """True when ``folder`` is a versioned model folder (it has a ``CURRENT`` pointer)."""
    return (Path(folder) / POINTER).is_file()


def read_pointer(folder: str | Path) -> str:
    """The version ``CURRENT`` names; a :class:`DataError` naming the file when it is unreadable."""
    path = Path(folder) / POINTER
    name = path.read_text(encoding="utf-8").strip()
    if not NAME.match(name):
        raise DataError(f"{path}: not a version name ({name!r}); expected e.g. v0001")
    return name


def resolve_model_folder(folder: str | Path) -> Path:
    """The folder holding the model files: the current version of a home, else ``folder`` itself."""
    folder = Path(folder)
    if not folder.exists():  # a save killed between its two renames left the folder aside
        from avrec.models.artifacts import recover_folder

        recover_folder(folder)
    if not is_home(folder):
        return folder
    target = folder / VERSIONS_DIR / read_pointer(folder)
    if not (target / "config.json").exists():
        raise DataError(f"{folder / POINTER}: names {target.name}, but {target} is not a model folder")
    return target


def current_version(folder: str | Path) -> str | None:
    """The current version's name of a home; None for a plain model folder."""
    return read_pointer(folder) if is_home(folder) else None


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a part (and it is durable)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _link_tree(src: Path, dst: Path, skip: set[str]) -> None:
    """Hard-link (or copy, across file systems) every file of ``src`` into ``dst``, leaving out ``skip`` at the top."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".")]
            files = [f for f in files if f not in skip and not f.startswith(".") and ".sqlite" not in f]
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(root) / name, dst / rel / name)
            except OSError:
                shutil.copy2(Path(root) / name, dst / rel / name)


class VersionHome:
    """The versions of one model folder: list, stage, promote, refuse, roll back (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: no such model folder; create one with `avrec fit --out`")

    # ---- reading ----
    @property
    def versioned(self) -> bool:
        return is_home(self.folder)

    def current(self) -> str:
        if not self.versioned:
            raise DataError(f"{self.folder}: has no versions yet (the first `avrec update` creates v0001)")
        return read_pointer(self.folder)

    def path(self, name: str) -> Path:
        if not NAME.match(str(name)):
            raise DataError(f"version {name!r}: not a version name (e.g. v0002)")
        return self.folder / VERSIONS_DIR / name

    def registry(self) -> dict[str, Any]:
        path = self.folder / REGISTRY
        if not path.exists():
            return {"versions": [], "history": []}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        data.setdefault("versions", [])
        data.setdefault("history", [])
        return data

    def entry(self, name: str) -> dict[str, Any]:
        for v in self.registry()["versions"]:
            if v["name"] == name:
                return v
        raise DataError(f"{self.folder}: no version {name!r}; `avrec versions list {self.folder}` shows them")

    def versions(self) -> list[dict[str, Any]]:
        """Every recorded version, oldest first, with ``current`` and whether its folder is still there."""
        current = self.current() if self.versioned else None
        out = []
        for v in self.registry()["versions"]:
            on_disk = (self.path(v["name"]) / "config.json").exists()
            out.append({**v, "current": v["name"] == current, "on_disk": on_disk})
        return out

    def next_name(self) -> str:
        names = [v["name"] for v in self.registry()["versions"]]
        root = self.folder / VERSIONS_DIR
        on_disk = [p.name for p in root.glob("v*")] if root.exists() else []
        numbers = [int(n[1:]) for n in names + on_disk if NAME.match(n)]
        return f"v{max(numbers, default=0) + 1:04d}"

    # ---- writing ----
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time (a scheduled update that overlaps the previous one is refused at once)."""
        with open(self.folder / LOCK, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DataError(f"{self.folder}: another update or version change is running (lock "
                                f"{self.folder / LOCK}); try again when it has finished") from None
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _save_registry(self, data: dict[str, Any]) -> None:
        _write_atomically(self.folder / REGISTRY, json.dumps(data, indent=2, default=str) + "\n")

    def adopt(self, info: dict[str, Any] | None = None) -> str:
        """Make a plain model folder a home whose ``v0001`` is the model in it; returns ``"v0001"``."""
        if self.versioned:
            return self.current()
        if not (self.folder / "config.json").exists():
            raise DataError(f"{self.folder}: not a model folder (no config.json); create one with `avrec fit`")
        name = self.next_name()
        staged = self.stage(name)
        _link_tree(self.folder, staged, HOME_FILES)
        self.commit(staged, name, {"parent": None, "status": "promoted", "reason": "the fitted model", **(info or {})})
        self.switch(name, "adopt", "the model folder's first version")
        for child in self.folder.iterdir():  # the pointer decides now; the old top-level copy goes
            if child.name in HOME_FILES or child.name.startswith(".") or ".sqlite" in child.name:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return name

    def stage(self, name: str) -> Path:
        """An empty hidden folder beside the versions where ``name`` is written before :meth:`commit`."""
        root = self.folder / VERSIONS_DIR
        root.mkdir(exist_ok=True)
        for old in root.glob(".staging-*"):  # what a crashed update left behind
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))

    def commit(self, staged: Path, name: str, entry: dict[str, Any]) -> None:
        """Rename a staged folder to version ``name`` (atomic) and record it (not promoted by this)."""
        target = self.path(name)
        if target.exists():
            raise DataError(f"{target}: version {name} exists already")
        os.replace(staged, target)
        fsync_dir(target.parent)
        data = self.registry()
        data["versions"].append({"name": name, "created": time.time(), **entry})
        self._save_registry(data)

    def note(self, action: str, version: str, reason: str, **extra: Any) -> None:
        """Add one line to the history (a refusal, a promotion, a rollback)."""
        data = self.registry()
        data["history"].append({"ts": time.time(), "action": action, "version": version, "reason": reason, **extra})
        self._save_registry(data)

    def refuse(self, name: str, reason: str) -> None:
        """Record that version ``name`` was not promoted, and why."""
        data = self.registry()
        for v in data["versions"]:
            if v["name"] == name:
                v["status"] = "refused"
        data["history"].append({"ts": time.time(), "action": "refused", "version": name, "reason": reason})
        self._save_registry(data)

    def switch(self, name: str, action: str, reason: str) -> dict[str, Any]:
        """Point ``CURRENT`` at version ``name`` atomically and record it; returns ``{from, to}``."""
        target = self.path(name)
        if not (target / "config.json").exists():
            raise DataError(f"{target}: version {name} is not on disk (pruned or never written)")
        before = read_pointer(self.folder) if self.versioned else None
        _write_atomically(self.folder / POINTER, name + "\n")
        data = self.registry()
        for v in data["versions"]:
            if v["name"] == name and v.get("status") != "promoted":
                v["status"] = "promoted"
        data["history"].append({"ts": time.time(), "action": action, "version": name, "from": before,
                                "reason": reason})
        self._save_registry(data)
        return {"from": before, "to": name}

    def promote(self, name: str, reason: str = "promoted by hand") -> dict[str, Any]:
        """Serve version ``name`` (any version on disk, a refused one included: the operator's call)."""
        self.entry(name)
        return self.switch(name, "promote", reason)

    def rollback(self, to: str | None = None, reason: str = "rolled back by hand") -> dict[str, Any]:
        """Serve ``to``, or else the version that was current before the current one."""
        current = self.current()
        if to is None:
            previous = [h.get("from") for h in self.registry()["history"]
                        if h["version"] == current and h["action"] in ("promote", "update") and h.get("from")]
            if not previous:
                raise DataError(f"{self.folder}: {current} has no earlier version to roll back to")
            to = str(previous[-1])
        self.entry(to)
        return self.switch(to, "rollback", reason)

    def prune(self, keep: int) -> list[str]:
        """Delete the folders of all but the newest ``keep`` versions (never the current one); their records stay."""
        if keep < 1:
            return []
        current = self.current()
        names = [v["name"] for v in self.registry()["versions"] if (self.path(v["name"]) / "config.json").exists()]
        gone = [n for n in names[:-keep] if n != current]
        for n in gone:
            shutil.rmtree(self.path(n), ignore_errors=True)
        return gone
