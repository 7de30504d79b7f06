"""Running media extractors (audio, video, image) through a cache: vectors keyed by the file's content hash.

An extractor turns media files into fixed-width float vectors. Its ``extractor_id`` changes whenever its
vectors could change (name, version, settings, library version), so the on-disk cache (the text vectors'
:class:`~avrec.encoders.cache.EmbeddingCache`, keyed here by ``sha256`` of the file's bytes) never serves a
stale vector. Files go through in batches and each finished batch is written at once, so an interrupted
run resumes where it stopped.

An extractor is any object with ``extractor_id``, ``dim``, ``modality`` and
``extract(paths) -> (len(paths), dim) array`` (:class:`MediaExtractor`); :mod:`avrec.encoders.media` names them.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from avrec.errors import DataError, DataWarning

__all__ = ["MediaExtractor", "ExtractionFailed", "extract_cached", "file_hash"]


class ExtractionFailed(Exception):
    """One file could not be decoded; the caller marks the item as lacking the modality."""


@runtime_checkable
class MediaExtractor(Protocol):
    """What :func:`extract_cached` needs from an extractor."""

    @property
    def extractor_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def modality(self) -> str: ...

    def extract(self, paths: Sequence[Path]) -> np.ndarray: ...


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _extract_batch(extractor: MediaExtractor, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of a batch; a file that fails alone is left out (ok=False), the rest are kept."""
    try:
        return np.asarray(extractor.extract(paths), dtype=np.float32), np.ones(len(paths), bool)
    except ExtractionFailed:
        pass
    out = np.zeros((len(paths), extractor.dim), dtype=np.float32)
    ok = np.zeros(len(paths), bool)
    for i, p in enumerate(paths):
        try:
            out[i] = np.asarray(extractor.extract([p]), dtype=np.float32)[0]
            ok[i] = True
        except ExtractionFailed as exc:
            warnings.warn(DataWarning(f"{p}: could not read it as {extractor.modality} ({exc}); "
                                      f"the item goes without {extractor.modality} features"), stacklevel=3)
    return out, ok


def extract_cached(
    extractor: MediaExtractor,
    paths: Sequence[Path | None],
    cache_root: str | None = None,
    batch_size: int = 16,
    show_progress: bool = False,
    labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of ``paths`` (None: no file) as ``(matrix, present)``, reusing and filling the cache.

    ``cache_root`` is the embedding cache's root (None: ``$AVREC_CACHE`` or ``~/.cache/avrec``; ``"none"``:
    no cache). A named file that does not exist is a :class:`DataError` naming the item (``labels``).
    Identical files are extracted once.
    """
    from avrec.encoders.cache import EmbeddingCache

    n = len(paths)
    matrix = np.zeros((n, extractor.dim), dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    keys: dict[str, list[int]] = {}
    first_path: dict[str, Path] = {}
    for i, p in enumerate(paths):
        if p is None:
            continue
        if not p.is_file():
            who = f"item {labels[i]!r}: " if labels is not None else ""
            raise DataError(f"{who}{extractor.modality} file {str(p)!r} does not exist")
        key = f"file-sha256:{file_hash(p)}"
        keys.setdefault(key, []).append(i)
        first_path.setdefault(key, p)
    if not keys:
        return matrix, present
    unique = list(keys)
    cache = None if cache_root == "none" else EmbeddingCache(cache_root)
    found = np.zeros(len(unique), dtype=bool)
    vectors = np.zeros((len(unique), extractor.dim), dtype=np.float32)
    if cache is not None:
        got, found = cache.get(extractor.extractor_id, unique)
        if got.shape[1] == extractor.dim:
            vectors = got
        else:
            found[:] = False
    todo = np.flatnonzero(~found)
    failed = np.zeros(len(unique), dtype=bool)
    what = f"{extractor.modality} ({extractor.extractor_id})"
    with _progress(show_progress and len(todo) > 0, len(todo), what) as bar:
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            out, ok = _extract_batch(extractor, [first_path[unique[r]] for r in rows])
            vectors[rows] = out
            failed[rows[~ok]] = True
            if cache is not None and ok.any():
                cache.put(extractor.extractor_id, [unique[r] for r in rows[ok]], out[ok])
            bar(len(rows))
    for u, key in enumerate(unique):
        if not failed[u]:
            matrix[keys[key]] = vectors[u]
            present[keys[key]] = True
    return matrix, present


class _progress:
    """A rich progress bar (or nothing); used as ``with _progress(on, total, what) as advance``."""

    def __init__(self, on: bool, total: int, what: str) -> None:
        self.on, self.total, self.what = on, total, what
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.on:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(f"extracting {self.what}", total=self.total)
        return self.advance

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
