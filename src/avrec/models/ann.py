"""Maximum-inner-product retrieval through FAISS: exact for small catalogues, HNSW or IVF above a size.

Item vectors may carry a bias: callers append it as an extra coordinate and give queries a 1 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avrec.errors import ConfigError

if TYPE_CHECKING:
    import faiss


@dataclass
class ANNConfig:
    kind: str = "auto"  # auto | flat | hnsw | ivf
    exact_below: int = 50000
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 80
    ivf_lists: int = 0  # 0: about 4·sqrt(n)
    ivf_probe: int = 32


class ANNIndex:
    """A FAISS inner-product index over item vectors, saved with faiss's own (non-pickle) format."""

    def __init__(self, config: ANNConfig | None = None) -> None:
        self.config = config or ANNConfig()
        self.index: faiss.Index | None = None
        self.kind = ""

    def resolved_kind(self, n: int) -> str:
        kind = self.config.kind
        if kind == "auto":
            return "flat" if n < self.config.exact_below else "hnsw"
        if kind not in ("flat", "hnsw", "ivf"):
            raise ConfigError(f"ann.kind must be auto, flat, hnsw or ivf, not {kind!r}")
        return kind

    def build(self, vectors: np.ndarray) -> ANNIndex:
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        self.kind = self.resolved_kind(n)
        c = self.config
        index: faiss.Index
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = c.hnsw_ef_construction
            hnsw.hnsw.efSearch = c.hnsw_ef_search
            index = hnsw
        else:
            lists = c.ivf_lists or max(16, int(4 * np.sqrt(n)))
            quantizer = faiss.IndexFlatIP(d)
            ivf = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
            # k-means on at most 64 points a list (faiss asks for 39+): its cost grows with points × lists
            sample = np.random.default_rng(0).choice(n, 64 * lists, replace=False) if n > 64 * lists else None
            ivf.train(x if sample is None else x[np.sort(sample)])
            ivf.nprobe = c.ivf_probe
            index = ivf
        index.add(x)
        self.index = index
        return self

    def _built(self) -> faiss.Index:
        if self.index is None:
            raise ConfigError("the ANN index is not built: call build() or load() first")
        return self.index

    def add(self, vectors: np.ndarray) -> None:
        self._built().add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices (-1 padded) and inner products per query row."""
        scores, idx = self._built().search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return idx.astype(np.int64), scores

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self._built(), str(path))

    @classmethod
    def load(cls, path: Path, config: ANNConfig | None = None) -> ANNIndex:
        import faiss

        out = cls(config)
        index = out.index = faiss.read_index(str(path))
        if hasattr(index, "hnsw"):
            out.kind = "hnsw"
            index.hnsw.efSearch = out.config.hnsw_ef_search
        elif hasattr(index, "nprobe"):
            out.kind = "ivf"
            index.nprobe = out.config.ivf_probe
        else:
            out.kind = "flat"
        return out
