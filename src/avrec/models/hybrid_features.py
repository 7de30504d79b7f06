"""The hybrid's item-tower inputs: an LM vector of each item document (frozen encoder, cached), its
TF-IDF words, its categorical metadata tokens (genres, decade, director, cast, artist, tags, ...) and one
block per non-text modality (audio, video, image, or a bring-your-own ``item_vectors`` file; see
:mod:`avrec.encoders.modalities`), each with its own projection and dropped at random in training.

Fitted once on the catalogue; new items and free-text queries go through ``transform`` with the same
vocabularies, so they land in the space the towers were trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.documents import DocumentConfig, build_documents
from avrec.encoders.modalities import ModalityBlocks
from avrec.models.features import TokenVocab, item_tokens, tfidf_weight
from avrec.models.tfidf import TextVectorizer, TfidfConfig
from avrec.models.towers import ItemFeatures

if TYPE_CHECKING:
    from avrec.encoders import TextEncoder


class ItemFeaturizer:
    """Builds :class:`ItemFeatures` from item frames, reading the hybrid's feature settings from ``config``."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.word_vectorizer: TextVectorizer | None = None
        self.token_vocab = TokenVocab([], config.token_min_count)
        self.token_idf: np.ndarray | None = None
        self._text_encoder: TextEncoder | None = None
        self.modalities = ModalityBlocks()

    def documents(self, items: pd.DataFrame) -> list[str]:
        return build_documents(items, DocumentConfig(fields=list(self.config.doc_fields)))

    def encoder(self) -> TextEncoder:
        """The text encoder, loaded on first use (a fit from cached vectors never loads it)."""
        from avrec.encoders import TextEncoder

        if self._text_encoder is None:
            self._text_encoder = TextEncoder(self.config.encoder, max_length=self.config.max_length)
        return self._text_encoder

    def lm_vectors(self, docs: list[str], cached: bool = True) -> np.ndarray | None:
        """LM vectors of ``docs``; ``cached=False`` for one-off text (a search query), which the embedding
        cache would only grow by, and whose index it would read on every call."""
        if not self.config.use_lm:
            return None
        from avrec.encoders import EmbeddingCache, encode_texts

        use_cache = cached and self.config.embedding_cache != "none"
        cache = EmbeddingCache(self.config.embedding_cache) if use_cache else None
        return np.asarray(encode_texts(self.encoder(), docs, cache, show_progress=len(docs) > 256), dtype=np.float32)

    def fit(self, items: pd.DataFrame) -> ItemFeatures:
        c = self.config
        docs = self.documents(items)
        blocks = []
        self.word_vectorizer = None
        if c.use_words:
            self.word_vectorizer = TextVectorizer(TfidfConfig(min_df=c.word_min_df, fields=list(c.doc_fields)))
            blocks.append(self.word_vectorizer.fit_transform(docs))
        self.token_vocab = TokenVocab.fit(item_tokens(items), min_count=c.token_min_count)
        self.token_idf = None
        if c.use_tokens and self.token_vocab.tokens:
            tok, self.token_idf = tfidf_weight(self.token_vocab.matrix(item_tokens(items)))
            blocks.append(tok)
        return self._with_modalities(self.lm_vectors(docs), blocks, items, fit=True)

    def transform(self, items: pd.DataFrame, docs: list[str] | None = None) -> ItemFeatures:
        """Features of new items (or of free text given as ``docs``, never cached) with the fitted vocabularies."""
        cached = docs is None
        docs = docs if docs is not None else self.documents(items)
        blocks = []
        if self.word_vectorizer is not None:
            blocks.append(self.word_vectorizer.transform(docs))
        if self.token_idf is not None:
            tok, _ = tfidf_weight(self.token_vocab.matrix(item_tokens(items)), self.token_idf)
            blocks.append(tok)
        return self._with_modalities(self.lm_vectors(docs, cached), blocks, items if cached else None, fit=False)

    def _with_modalities(self, lm: np.ndarray | None, blocks: list[sp.csr_matrix], items: pd.DataFrame | None,
                         fit: bool) -> ItemFeatures:
        """The features with the modality blocks appended (``items=None``: free text, no modality)."""
        c = self.config
        n = len(items) if items is not None else (blocks[0].shape[0] if blocks else 1)
        offset = sum(b.shape[1] for b in blocks)
        cache = getattr(c, "embedding_cache", None)
        if fit and items is not None:
            from avrec.encoders.modalities import item_modalities

            extractors = dict(getattr(c, "extractors", {}) or {})
            vectors = item_modalities(items, getattr(c, "modalities", ["auto"]), extractors, cache,
                                      show_progress=len(items) > 256)
            self.modalities = ModalityBlocks.fit(vectors, extractors)
        elif self.modalities.names:
            frame = items if items is not None else pd.DataFrame({"item_id": ["query"] * n})
            vectors = self.modalities.vectors_for(frame, cache)
        if self.modalities.names:
            blocks = [*blocks, self.modalities.sparse(vectors, n)]
        return ItemFeatures(lm, _stack(blocks, n), tuple(self.modalities.groups(offset)),
                            float(getattr(c, "modality_dropout", 0.2)))

    # ---- persistence (the keys of hybrid.json and model.safetensors) ----
    def state(self) -> dict[str, np.ndarray]:
        state = {}
        if self.token_idf is not None:
            state["token_idf"] = self.token_idf
        if self.word_vectorizer is not None:
            state["word_idf"] = self.word_vectorizer.state()[1]
        return state | self.modalities.state("modality")

    def meta(self) -> dict[str, Any]:
        return {"token_vocab": self.token_vocab.tokens, "token_min_count": self.token_vocab.min_count,
                "word_vocabulary": None if self.word_vectorizer is None else self.word_vectorizer.state()[0],
                "modalities": self.modalities.meta()}

    def restore(self, meta: dict[str, Any], state: dict[str, np.ndarray]) -> None:
        self.token_vocab = TokenVocab(meta["token_vocab"], meta["token_min_count"])
        self.token_idf = state.get("token_idf")
        self.modalities = ModalityBlocks.restore(meta.get("modalities"), state, "modality")
        self.word_vectorizer = None
        if meta["word_vocabulary"] is not None:
            self.word_vectorizer = TextVectorizer(TfidfConfig(min_df=self.config.word_min_df))
            self.word_vectorizer.restore(meta["word_vocabulary"], state["word_idf"])


def _stack(blocks: list[sp.csr_matrix], n_rows: int) -> sp.csr_matrix:
    if not blocks:
        return sp.csr_matrix((n_rows, 0), dtype=np.float32)
    return sp.csr_matrix(sp.hstack(blocks), dtype=np.float32)
