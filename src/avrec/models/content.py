"""``content``: frozen LM item vectors and an attention-pooled user profile, C = Σ αᵢ xᵢ.

For a candidate c, each history item i gets the weight αᵢ(c) = softmax_i(cos(xᵢ, x_c) / τ + log rᵢ),
where rᵢ halves every ``recency_half_life`` newer items after i (no decay without timestamps).
The score is cos(C, x_c). τ → ∞ gives the plain averaged profile, which is the weak baseline the
hybrid model is built to beat; a small τ attends to the history items closest to the candidate.

xᵢ is the item's text vector joined with each non-text modality it has (audio, video, image, or an
``item_vectors`` file; :mod:`avrec.encoders.modalities`), each standardised, L2-normalised and scaled by
``modality_weight``; ``use_text=False`` leaves the text out (a modality-only model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import TEXT_FIELDS, Dataset
from avrec.data.documents import DocumentConfig, build_documents
from avrec.encoders.vectors import unit_rows
from avrec.errors import ScaleError
from avrec.models.base import Capabilities, Recommender
from avrec.models.towers import recency_of


@dataclass
class ContentConfig:
    encoder: str = "default"
    embedding_cache: str | None = None
    max_length: int = 256
    doc_fields: list[str] = field(default_factory=lambda: list(TEXT_FIELDS))
    temperature: float = 0.1
    recency_half_life: float = 0.0  # in items; 0 turns recency weighting off
    max_history: int = 200
    use_text: bool = True
    modalities: list[str] = field(default_factory=lambda: ["auto"])  # "none": text only
    extractors: dict[str, str] = field(default_factory=dict)  # modality -> extractor name (default "auto")
    modality_weight: float = 1.0
    #: the most documents a fit encodes itself; beyond, their vectors must be in the embedding cache (avrec embed)
    max_uncached: int = 50_000


class ContentModel(Recommender):
    name = "content"
    CAPABILITIES = Capabilities(cold_items=True, add_items=True, item_vectors=True)
    Config = ContentConfig

    def _encode(self, items: pd.DataFrame, fit: bool = False) -> np.ndarray:
        """Item vectors: text joined with the modalities (fitted on the catalogue when ``fit``)."""
        from avrec.encoders.modalities import ModalityBlocks, item_modalities

        c = self.config
        text = self._encode_text(items) if c.use_text else np.zeros((len(items), 0), np.float32)
        if fit:
            vectors = item_modalities(items, c.modalities, c.extractors, c.embedding_cache)
            self.modality_blocks = ModalityBlocks.fit(vectors, c.extractors)
        blocks: ModalityBlocks = getattr(self, "modality_blocks", None) or ModalityBlocks()
        if not blocks.names:
            return text
        if not fit:
            vectors = blocks.vectors_for(items, c.embedding_cache)
        extra = [c.modality_weight * blocks.normalised(m, vectors[m]) for m in blocks.names]
        v = np.hstack([text, *extra]).astype(np.float32)
        return unit_rows(v)

    def _encode_text(self, items: pd.DataFrame) -> np.ndarray:
        from avrec.encoders import EmbeddingCache, TextEncoder, encode_texts

        if getattr(self, "_encoder", None) is None:
            self._encoder = TextEncoder(self.config.encoder, max_length=self.config.max_length)
        docs = build_documents(items, DocumentConfig(fields=list(self.config.doc_fields)))
        cache = None if self.config.embedding_cache == "none" else EmbeddingCache(self.config.embedding_cache)
        cap = self.config.max_uncached
        if len(docs) > cap:  # refuse before hours of encoding: count what the cache lacks
            missing = len(docs) if cache is None else int((~cache.get(self._encoder.model_id, docs)[1]).sum())
            if missing > cap:
                raise ScaleError(f"content: {missing:,} item documents are not in the embedding cache; encoding them "
                                 f"here takes about {missing / 115 / 3600:.1f} h at the ~115 documents/s measured on "
                                 "2 CPU cores (benchmarks/results/encoder_speed.md); run `avrec embed` first, or raise "
                                 f"content.max_uncached (now {cap:,})")
        v = np.asarray(encode_texts(self._encoder, docs, cache, show_progress=len(docs) > 256), dtype=np.float32)
        return unit_rows(v)

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        self.vectors = self._encode(dataset.items, fit=True)
        self.timestamps = dataset.timestamp_matrix()

    def _user_scores(self, items: np.ndarray, ts: np.ndarray | None, cand: np.ndarray) -> np.ndarray:
        c = self.config
        if len(items) == 0:
            return np.zeros(len(cand), dtype=np.float32)
        if len(items) > c.max_history:
            keep = np.argsort(-ts)[: c.max_history] if ts is not None else np.arange(c.max_history)
            items = items[keep]
            ts = None if ts is None else ts[keep]
        h = self.vectors[items]
        sims = h @ self.vectors[cand].T  # (history, candidates)
        logits = sims / max(c.temperature, 1e-6)
        if c.recency_half_life > 0 and ts is not None:
            age = (1.0 - recency_of(ts)) * (len(items) - 1)
            logits = logits + (-np.log(2.0) * age / c.recency_half_life)[:, None]
        logits -= logits.max(axis=0, keepdims=True)
        alpha = np.exp(logits)
        alpha /= alpha.sum(axis=0, keepdims=True)
        return (alpha * sims).sum(axis=0)

    def _score_rows(
        self, history: sp.csr_matrix, timestamps: sp.csr_matrix | None, item_idx: np.ndarray | None
    ) -> np.ndarray:
        cand = np.arange(self.n_items) if item_idx is None else np.asarray(item_idx)
        out = np.zeros((history.shape[0], len(cand)), dtype=np.float32)
        for r in range(history.shape[0]):
            s, e = history.indptr[r], history.indptr[r + 1]
            ts = None if timestamps is None else np.asarray(timestamps[r].toarray()).ravel()[history.indices[s:e]]
            out[r] = self._user_scores(history.indices[s:e], ts, cand)
        return out

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        ts = None if self.timestamps is None else self.timestamps[user_idx]
        return self._score_rows(self._fitted(self.seen)[user_idx], ts, item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_rows(sp.csr_matrix(history), None, item_idx)

    def _item_vectors(self) -> np.ndarray | None:
        return self.vectors

    def _add_items(self, new_items: pd.DataFrame) -> None:
        self.vectors = np.vstack([self.vectors, self._encode(new_items)])
        if self.timestamps is not None:
            empty = sp.csr_matrix((self.timestamps.shape[0], len(new_items)))
            self.timestamps = sp.csr_matrix(sp.hstack([self.timestamps, empty]))

    def _state(self) -> dict[str, np.ndarray]:
        from avrec.models.artifacts import csr_to_tensors

        state = {"vectors": self.vectors}
        if getattr(self, "modality_blocks", None) is not None:
            state |= self.modality_blocks.state("modality")
        if self.timestamps is not None:
            state |= csr_to_tensors("timestamps", self.timestamps)
        return state

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        from avrec.models.artifacts import csr_from_tensors

        self.vectors = state["vectors"]
        self.timestamps = csr_from_tensors("timestamps", state) if "timestamps.indptr" in state else None
        self._modality_state = {k: v for k, v in state.items() if k.startswith("modality.")}

    def _save_extra(self, folder: Path) -> None:
        from avrec.encoders.modalities import ModalityBlocks

        blocks: ModalityBlocks = getattr(self, "modality_blocks", None) or ModalityBlocks()
        (folder / "modalities.json").write_text(json.dumps(blocks.meta()))

    def _load_extra(self, folder: Path) -> None:
        from avrec.encoders.modalities import ModalityBlocks

        path = folder / "modalities.json"
        meta = json.loads(path.read_text()) if path.exists() else None
        self.modality_blocks = ModalityBlocks.restore(meta, getattr(self, "_modality_state", {}), "modality")
