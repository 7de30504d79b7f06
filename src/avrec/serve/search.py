"""Natural-language search: :class:`TextSearch` (a query encoder over an index of item vectors) and the
:class:`SearchIndexer` that builds one per model state, in the background, and keeps it in step with
catalogue additions.

The index lives in the model's own item space when the model places text in it (``text_queries``, e.g.
hybrid), else in the space of a sentence encoder (``ServeConfig.encoder``) over item documents. Its rows
follow the served catalogue, so row ``n`` is catalogue item ``n``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from avrec.encoders.vectors import unit_rows
from avrec.serve.config import ServeConfig
from avrec.serve.errors import Unavailable
from avrec.serve.pools import PoolCache

log = logging.getLogger("avrec.serve")

#: the query encoded once before an index is marked ready, so the first /search pays no model load
WARM_UP_QUERY = "a good story"
#: query vectors kept per index (least recently used out; 384 floats each: about 6 MB when full)
DEFAULT_QUERY_CACHE = 4096


def minmax(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to [0, 1] over its finite entries (non-finite: 0; constant: 1)."""
    x = np.asarray(x, dtype=np.float64)
    finite_ = np.isfinite(x)
    if not finite_.any():
        return np.zeros_like(x)
    lo, hi = x[finite_].min(), x[finite_].max()
    return np.where(finite_, (x - lo) / (hi - lo) if hi > lo else 1.0, 0.0)


class TextSearch:
    """Natural-language search over the catalogue: a query encoder plus a FAISS index of item vectors.

    Matching is by cosine: item and query vectors are unit-normalised, so a model's item vectors whose
    norms grow with popularity do not drown the request's meaning.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], vectors: np.ndarray, source: str,
                 cache_size: int = DEFAULT_QUERY_CACHE) -> None:
        from avrec.models.ann import ANNIndex  # exact below 50k items, HNSW above

        self._encode = encode
        self.source = source
        self.index = ANNIndex().build(unit_rows(vectors))
        self.size = len(vectors)
        self._lock = threading.Lock()
        # query text -> its unit vector: the encoder is most of a /search, and popular queries repeat
        self.queries = PoolCache(cache_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # one forward pass at a time: torch shares its thread pool
            return unit_rows(np.asarray(self._encode(texts), dtype=np.float32).reshape(len(texts), -1))

    def query_vector(self, query: str) -> np.ndarray:
        """The unit vector of ``query`` (1 × d), from the query cache when it was asked before."""
        vec = self.queries.get(query)
        if vec is None:
            vec = self.encode([query])
            vec.setflags(write=False)  # shared by every later request for the same text
            self.queries.put(query, vec)
        return vec

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue rows and cosine scores of the ``k`` items closest to ``query``, best first."""
        idx, scores = self.index.search(self.query_vector(query), min(k, self.size))
        keep = idx[0] >= 0
        return idx[0][keep], scores[0][keep]

    def neighbours(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items closest to catalogue row ``row`` in the index (the row itself left out)."""
        index = self.index.index
        assert index is not None  # built with the search
        vec = np.asarray(index.reconstruct(int(row)), dtype=np.float32).reshape(1, -1)
        idx, scores = self.index.search(vec, min(k + 1, self.size))
        keep = (idx[0] >= 0) & (idx[0] != row)
        return idx[0][keep][:k], scores[0][keep][:k]

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(unit_rows(vectors))
        self.size += len(vectors)

    def warm_up(self) -> None:
        """Run one query end to end (loads the encoder's weights, tokenizer and thread pool)."""
        self.search(WARM_UP_QUERY, 1)


class SearchIndexer:
    """Builds the search index of a model state and encodes new items for it.

    One sentence encoder is loaded on first use and shared by every state (reloads do not load it again).
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._encoder: Any = None
        self._encoder_lock = threading.Lock()

    def text_encoder(self):
        """The shared text encoder for search (loaded once, reused across reloads)."""
        with self._encoder_lock:
            if self._encoder is None:
                from avrec.encoders import TextEncoder

                self._encoder = TextEncoder(self.config.encoder)
            return self._encoder

    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        """Encoder vectors of item documents (through the embedding cache)."""
        from avrec.data.documents import build_documents
        from avrec.encoders import EmbeddingCache, encode_texts

        cache = EmbeddingCache(self.config.cache_dir) if self.config.cache_dir else EmbeddingCache()
        return encode_texts(self.text_encoder(), build_documents(items), cache, show_progress=False)

    def item_vectors(self, search: TextSearch, model, items: pd.DataFrame) -> np.ndarray:
        """Index vectors for ``items``, the last rows of the catalogue, in the space of ``search``."""
        if search.source == "model":
            return np.asarray(model.item_vectors())[-len(items):]
        return self.encode_items(items)

    def build(self, state) -> None:
        """Build ``state.search`` (a :class:`~avrec.serve.state.ModelState`), warm it up, then set
        ``state.search_ready``; a failure leaves ``state.search_error`` and the rest of the API serving."""
        try:
            model = state.model
            caps = model.capabilities
            with state.lock.read():
                catalog = state.catalog.copy()
            vectors = model.item_vectors() if caps.text_queries else None
            if vectors is not None and len(vectors) == len(catalog):
                encode_query = model.encode_query
                search = TextSearch(lambda texts: np.stack([encode_query(t) for t in texts]), vectors, "model",
                                    self.config.query_cache)
            else:
                encoder = self.text_encoder()
                vectors = self.encode_items(catalog)
                search = TextSearch(lambda texts: encoder.encode(texts, show_progress=False), vectors, "encoder",
                                    self.config.query_cache)
            search.warm_up()
            with state.lock.write():
                if len(state.catalog) > len(catalog):  # items added while we encoded
                    search.add(self.item_vectors(search, model, state.catalog.iloc[len(catalog):]))
                state.search = search
        except Exception as e:  # noqa: BLE001 - search is one feature; the rest of the API keeps serving
            state.search_error = f"{type(e).__name__}: {e}"
            log.error("search index unavailable: %s", state.search_error)
        finally:
            state.search_ready.set()

    def ready(self, state) -> TextSearch:
        """The state's index, waiting up to ``search_wait`` seconds while it is built; else a 503."""
        if not state.search_ready.wait(self.config.search_wait):
            raise Unavailable("the search index is still being built; retry in a moment")
        if state.search is None:
            raise Unavailable(f"search is unavailable: {state.search_error}")
        return state.search
