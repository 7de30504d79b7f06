"""Resumable bulk encoding of item documents into the embedding cache (``avrec embed``'s local engine).

The cache is keyed by (encoder ``model_id``, hash of the exact text), the same keys
:func:`avrec.encoders.encode_texts` reads during a fit, so a later ``avrec fit`` with the same encoder
settings finds every vector and never loads the encoder. Work is done in chunks; each chunk is committed
to the cache as its own shard before the next one starts, so an interrupted run loses at most one chunk
and a rerun encodes only what is still missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avrec.encoders.cache import EmbeddingCache, SupportsEncode

__all__ = ["EmbedReport", "missing_texts", "embed_texts", "length_sorted"]


@dataclass
class EmbedReport:
    """What one run did: documents seen, distinct texts, texts found cached and texts encoded now."""

    documents: int
    unique: int
    reused: int
    encoded: int
    chunks: int
    seconds: float
    dim: int

    def as_dict(self) -> dict[str, Any]:
        rate = self.encoded / self.seconds if self.seconds > 0 and self.encoded else None
        return {"documents": self.documents, "unique": self.unique, "reused": self.reused,
                "encoded": self.encoded, "chunks": self.chunks, "seconds": round(self.seconds, 2),
                "docs_per_second": None if rate is None else round(rate, 1), "dim": self.dim}


def length_sorted(texts: Sequence[str]) -> list[str]:
    """Texts longest first (stable), so each chunk and batch holds documents of similar length (little padding)."""
    order = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
    return [texts[i] for i in order]


def missing_texts(cache: EmbeddingCache, model_id: str, texts: Sequence[str]) -> tuple[list[str], int]:
    """The distinct texts of ``texts`` not cached for ``model_id`` (first-seen order), and how many are distinct."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return [], 0
    _, found = cache.get(model_id, unique)
    return [t for t, f in zip(unique, found) if not f], len(unique)


def embed_texts(
    encoder: SupportsEncode,
    texts: Sequence[str],
    cache: EmbeddingCache,
    chunk_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Encode every text of ``texts`` not yet in ``cache``, committing one cache shard per chunk.

    ``progress(done, total)`` is called once before the first chunk and after each one (``done`` counts
    distinct texts, cached ones included). Returns an :class:`EmbedReport`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    started = time.perf_counter()
    model_id = encoder.model_id
    todo, n_unique = missing_texts(cache, model_id, list(texts))
    todo = length_sorted(todo)
    reused = n_unique - len(todo)
    if progress is not None:
        progress(reused, n_unique)
    chunks = 0
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        vectors = np.asarray(encoder.encode(chunk, show_progress=False), dtype=np.float32)
        cache.put(model_id, chunk, vectors)
        chunks += 1
        if progress is not None:
            progress(reused + start + len(chunk), n_unique)
    dim = int(cache.get(model_id, todo[:1] or list(texts)[:1])[0].shape[1]) if n_unique else 0
    return EmbedReport(documents=len(texts), unique=n_unique, reused=reused, encoded=len(todo), chunks=chunks,
                       seconds=time.perf_counter() - started, dim=dim)
