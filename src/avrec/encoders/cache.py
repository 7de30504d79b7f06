"""On-disk embedding cache keyed by (encoder model_id, sha256 of the exact text).

Layout under ``<root>/embeddings/<safe model_id>/``::

    index.json                   {"model_id", "dim", "shards": [...], "entries": {sha256: [shard, row]}}
    <n>-<rand>.safetensors       tensor "vectors" (rows, dim); metadata lists the row hashes

Shards are immutable: every ``put`` appends a new shard and then swaps in a new index,
both via temp file + ``os.replace``, so a crash never leaves a half-written file behind
and readers never see an index pointing at a missing shard. No pickle anywhere. Because
each shard also records its row hashes, a lost or corrupt index is rebuilt from the shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from avrec.config import cache_home
from avrec.encoders.text import _as_text_list

__all__ = ["EmbeddingCache", "encode_texts", "text_hash", "SupportsEncode"]

_INDEX = "index.json"
_TENSOR = "vectors"
_DTYPES = {"float32": np.float32, "float16": np.float16}


class SupportsEncode(Protocol):
    """What ``encode_texts`` needs from an encoder (TextEncoder satisfies it)."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray: ...


def text_hash(text: str) -> str:
    """sha256 hex digest of the exact text (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _safe_name(model_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:80]
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:16]}"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Serialize writers of one model folder across processes (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class EmbeddingCache:
    """Persistent text -> vector store, one folder per encoder ``model_id``.

    ``root`` defaults to ``$AVREC_CACHE`` or ``~/.cache/avrec``; vectors go under
    ``root/embeddings/``. ``dtype="float16"`` halves disk use; reads always return float32.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, dtype: str = "float32") -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.root = Path(root).expanduser() if root is not None else cache_home()
        self.dtype = dtype
        self._index_memo: dict[Path, tuple[tuple[int, int, int], dict]] = {}

    def __repr__(self) -> str:
        return f"EmbeddingCache(root={str(self.root)!r}, dtype={self.dtype!r})"

    def model_dir(self, model_id: str) -> Path:
        """Folder holding the vectors of ``model_id``."""
        return self.root / "embeddings" / _safe_name(model_id)

    def get(self, model_id: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look up ``texts``: returns ``(vectors, found)``.

        ``vectors`` is float32 ``(len(texts), dim)`` with zero rows where ``found`` is False;
        ``dim`` is 0 when nothing is cached yet for ``model_id``.
        """
        items = _as_text_list(texts)
        found = np.zeros(len(items), dtype=bool)
        index = self._read_index(self.model_dir(model_id), model_id)
        dim = int(index.get("dim") or 0)
        vectors = np.zeros((len(items), dim), dtype=np.float32)
        if not items or not index["entries"]:
            return vectors, found

        by_shard: dict[int, list[tuple[int, int]]] = {}
        entries = index["entries"]
        for i, t in enumerate(items):
            hit = entries.get(text_hash(t))
            if hit is not None:
                by_shard.setdefault(hit[0], []).append((i, hit[1]))

        folder = self.model_dir(model_id)
        for shard_no, pairs in by_shard.items():
            dst = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
            src = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
            lo, hi = int(src.min()), int(src.max()) + 1
            path = folder / index["shards"][shard_no]
            data = self._read_shard(path, lo, hi)
            if data is None:
                continue
            if data.shape != (hi - lo, dim):
                warnings.warn(f"embedding cache shard {path} does not match its index; "
                              "treating its rows as missing", stacklevel=2)
                continue
            vectors[dst] = data[src - lo]
            found[dst] = True
        return vectors, found

    def put(self, model_id: str, texts: Sequence[str], vectors: np.ndarray) -> int:
        """Store ``vectors[i]`` for ``texts[i]`` as one new shard; returns the number of rows written.

        Re-putting a text replaces its vector; duplicates within a call keep the last one.
        """
        items = _as_text_list(texts)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(items):
            raise ValueError(f"vectors must have shape ({len(items)}, dim), got {vectors.shape}")
        if not items:
            return 0
        last = {text_hash(t): i for i, t in enumerate(items)}
        hashes = list(last)
        rows = np.ascontiguousarray(vectors[list(last.values())], dtype=_DTYPES[self.dtype])
        if not np.isfinite(rows).all():
            raise ValueError("vectors contain NaN or inf (or overflow the cache dtype)")

        folder = self.model_dir(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(folder):
            index = _copy_index(self._read_index(folder, model_id, fresh=True))
            if index["dim"] is not None and index["dim"] != rows.shape[1]:
                raise ValueError(f"cache for {model_id!r} holds dim {index['dim']}, got {rows.shape[1]}")
            index["dim"] = int(rows.shape[1])
            shard = _next_shard_name(index)
            self._write_shard(folder / shard, rows, hashes, model_id)
            index["shards"].append(shard)
            shard_no = len(index["shards"]) - 1
            for row, h in enumerate(hashes):
                index["entries"][h] = [shard_no, row]
            self._write_index(folder, index)
        return len(hashes)

    def count(self, model_id: str) -> int:
        """Number of distinct texts cached for ``model_id``."""
        return len(self._read_index(self.model_dir(model_id), model_id)["entries"])

    def compact(self, model_id: str) -> None:
        """Merge all shards of ``model_id`` into one, dropping superseded rows."""
        folder = self.model_dir(model_id)
        if not folder.is_dir():
            return
        with _exclusive(folder):
            index = _copy_index(self._read_index(folder, model_id, fresh=True))
            if len(index["shards"]) <= 1 or not index["entries"]:
                return
            hashes = list(index["entries"])
            matrix = np.empty((len(hashes), index["dim"]), dtype=_DTYPES[self.dtype])
            loaded: dict[int, np.ndarray | None] = {}
            keep = np.ones(len(hashes), dtype=bool)
            for i, h in enumerate(hashes):
                shard_no, row = index["entries"][h]
                if shard_no not in loaded:
                    loaded[shard_no] = self._read_shard(folder / index["shards"][shard_no])
                data = loaded[shard_no]
                if data is None or row >= len(data):
                    keep[i] = False
                else:
                    matrix[i] = data[row]
            hashes = [h for h, k in zip(hashes, keep) if k]
            matrix = matrix[keep]
            old = list(index["shards"])
            shard = _next_shard_name(index)
            self._write_shard(folder / shard, matrix, hashes, model_id)
            index["shards"] = [shard]
            index["entries"] = {h: [0, r] for r, h in enumerate(hashes)}
            self._write_index(folder, index)
            for name in old:
                with contextlib.suppress(OSError):
                    (folder / name).unlink()

    def _read_index(self, folder: Path, model_id: str, fresh: bool = False) -> dict:
        """Current index (shared, memoized on inode/mtime/size: callers that modify it must copy)."""
        path = folder / _INDEX
        try:
            st = path.stat()
        except FileNotFoundError:
            return self._rebuild_index(folder, model_id) if folder.is_dir() else self._empty(model_id)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        memo = self._index_memo.get(folder)
        if not fresh and memo is not None and memo[0] == key:
            return memo[1]
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            if index.get("model_id") != model_id or not isinstance(index.get("entries"), dict):
                raise ValueError("index belongs to another model or is malformed")
        except (ValueError, OSError) as exc:
            warnings.warn(f"embedding cache index {path} unreadable ({exc}); rebuilding from shards",
                          stacklevel=3)
            return self._rebuild_index(folder, model_id)
        self._index_memo[folder] = (key, index)
        return index

    def _rebuild_index(self, folder: Path, model_id: str) -> dict:
        from safetensors import safe_open

        index = self._empty(model_id)
        for path in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(path), framework="numpy") as f:
                    meta = f.metadata() or {}
                    shape = f.get_slice(_TENSOR).get_shape()
                hashes = json.loads(meta.get("hashes", "[]"))
            except Exception:
                continue
            if meta.get("model_id") != model_id or len(hashes) != shape[0]:
                continue
            if index["dim"] is not None and index["dim"] != shape[1]:
                continue
            index["dim"] = int(shape[1])
            index["shards"].append(path.name)
            for row, h in enumerate(hashes):
                index["entries"][h] = [len(index["shards"]) - 1, row]
        return index

    @staticmethod
    def _empty(model_id: str) -> dict:
        return {"version": 1, "model_id": model_id, "dim": None, "shards": [], "entries": {}}

    def _write_index(self, folder: Path, index: dict) -> None:
        path = folder / _INDEX
        _atomic_write(path, json.dumps(index, separators=(",", ":")).encode("utf-8"))
        st = path.stat()
        self._index_memo[folder] = ((st.st_ino, st.st_mtime_ns, st.st_size), index)

    @staticmethod
    def _write_shard(path: Path, rows: np.ndarray, hashes: list[str], model_id: str) -> None:
        from safetensors.numpy import save

        meta = {"model_id": model_id, "hashes": json.dumps(hashes)}
        _atomic_write(path, save({_TENSOR: rows}, metadata=meta))

    @staticmethod
    def _read_shard(path: Path, lo: int = 0, hi: int | None = None) -> np.ndarray | None:
        """Rows ``lo:hi`` of a shard as float32 (only that range is read), or None if unreadable."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                return f.get_slice(_TENSOR)[lo:hi].astype(np.float32, copy=False)
        except Exception as exc:
            warnings.warn(f"embedding cache shard {path} unreadable ({exc}); treating its rows as missing",
                          stacklevel=3)
            return None


def _next_shard_name(index: dict) -> str:
    """Shard names sort in write order, which lets ``_rebuild_index`` apply them oldest first."""
    seq = [int(n.split("-", 1)[0]) for n in index["shards"] if n.split("-", 1)[0].isdigit()]
    return f"{max(seq, default=-1) + 1:06d}-{uuid.uuid4().hex[:8]}.safetensors"


def _copy_index(index: dict) -> dict:
    return {**index, "shards": list(index["shards"]), "entries": dict(index["entries"])}


#: the vectors ``encode_texts`` returned lately, while any caller still holds them: two components of one fit
#: that encode the same documents (the hybrid's item features and its ``content`` component) share one array
#: instead of holding a copy each (1.5 GB apiece at a million items, 384-d)
_RECENT: weakref.WeakValueDictionary[tuple[str, str, str, bytes], np.ndarray] = weakref.WeakValueDictionary()


def _texts_key(encoder: SupportsEncode, cache: EmbeddingCache, texts: list[str]) -> tuple[str, str, str, bytes]:
    digest = hashlib.blake2b(digest_size=16)
    for t in texts:
        digest.update(t.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return encoder.model_id, str(cache.root), cache.dtype, digest.digest()


def encode_texts(
    encoder: SupportsEncode,
    texts: Sequence[str],
    cache: EmbeddingCache | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Vectors for ``texts`` in input order, encoding only texts not already in ``cache``.

    Duplicate texts are encoded once. A changed document has a new hash, so it is a miss
    and gets re-encoded; unchanged ones come from disk. Returns float32 ``(n, dim)``.
    With a cache, a call for the same texts and encoder while an earlier result is still
    alive returns that same array: treat the result as read-only (copy before changing it).
    """
    items = _as_text_list(texts)
    if not items:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    key = _texts_key(encoder, cache, items) if cache is not None else None
    if key is not None and (shared := _RECENT.get(key)) is not None:
        return shared
    position: dict[str, int] = {}
    inverse = np.fromiter((position.setdefault(t, len(position)) for t in items),
                          dtype=np.int64, count=len(items))
    unique = list(position)

    if cache is None:
        vectors = np.asarray(encoder.encode(unique, show_progress=show_progress), dtype=np.float32)
        return vectors[inverse]

    model_id = encoder.model_id
    vectors, found = cache.get(model_id, unique)
    missing = np.flatnonzero(~found)
    if missing.size:
        todo = [unique[i] for i in missing]
        fresh = np.asarray(encoder.encode(todo, show_progress=show_progress), dtype=np.float32)
        cache.put(model_id, todo, fresh)
        if vectors.shape[1] != fresh.shape[1]:
            vectors = np.zeros((len(unique), fresh.shape[1]), dtype=np.float32)
        vectors[missing] = fresh
    if len(unique) < len(items):  # without duplicates ``inverse`` is 0..n-1: no copy
        vectors = vectors[inverse]
    if key is not None:
        _RECENT[key] = vectors
    return vectors
