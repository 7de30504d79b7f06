"""TF-IDF content kNN: the lexical baseline for cold items and a feature source for ``hybrid``.

Each item document becomes an L2-normalised TF-IDF vector; a user's score for an item is the summed
cosine similarity to the items in the user's history (equivalently, a dot product with the history's
summed profile). Items with no interactions are scored exactly like the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.data.documents import DocumentConfig, build_documents
from avrec.models.artifacts import csr_from_tensors, csr_to_tensors
from avrec.models.base import Capabilities, Recommender


@dataclass
class TfidfConfig:
    min_df: int = 2
    max_features: int = 50000
    ngram_max: int = 1
    sublinear_tf: bool = True
    stop_words: str | None = "english"
    fields: list[str] = field(default_factory=lambda: list(DocumentConfig().fields))


class TextVectorizer:
    """A fitted TF-IDF vectoriser whose state is plain JSON (vocabulary) plus an idf array."""

    def __init__(self, config: TfidfConfig) -> None:
        self.config = config
        self._vec: Any = None  # sklearn's TfidfVectorizer, once fitted or restored

    def _make(self, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.config
        return TfidfVectorizer(
            min_df=1 if vocabulary is not None else c.min_df,
            max_features=None if vocabulary is not None else c.max_features,
            ngram_range=(1, c.ngram_max), sublinear_tf=c.sublinear_tf, stop_words=c.stop_words,
            dtype=np.float32, vocabulary=vocabulary, token_pattern=r"(?u)\b\w[\w'-]*\b",
        )

    def fit_transform(self, docs: list[str]) -> sp.csr_matrix:
        self._vec = self._make()
        try:
            return sp.csr_matrix(self._vec.fit_transform(docs), dtype=np.float32)
        except ValueError:  # every word below min_df: fall back to keeping all words
            self._vec = self._make()
            self._vec.min_df = 1
            return sp.csr_matrix(self._vec.fit_transform(docs), dtype=np.float32)

    def transform(self, docs: list[str]) -> sp.csr_matrix:
        return sp.csr_matrix(self._vec.transform(docs), dtype=np.float32)

    def state(self) -> tuple[dict, np.ndarray]:
        vocab = {t: int(i) for t, i in self._vec.vocabulary_.items()}
        return vocab, np.asarray(self._vec.idf_, dtype=np.float32)

    def restore(self, vocab: dict, idf: np.ndarray) -> None:
        self._vec = self._make(vocabulary=vocab)
        self._vec.idf_ = idf.astype(np.float64)


class TfidfKNN(Recommender):
    name = "tfidf"
    CAPABILITIES = Capabilities(cold_items=True, add_items=True, exact_fold_in=True)
    Config = TfidfConfig

    def _documents(self, items: pd.DataFrame) -> list[str]:
        return build_documents(items, DocumentConfig(fields=list(self.config.fields)))

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        self.vectorizer = TextVectorizer(self.config)
        self.item_matrix = self.vectorizer.fit_transform(self._documents(dataset.items))

    def _profiles(self, history: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(history, dtype=np.float32) @ self.item_matrix

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        if getattr(self, "_terms_by_items", None) is None:  # cached: a transposed view is copied by each product
            self._terms_by_items = sp.csr_matrix(self.item_matrix.T)
        scores = sp.csr_matrix(self._profiles(history) @ self._terms_by_items)
        return (scores if item_idx is None else scores[:, item_idx]).toarray()

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_history(self._fitted(self.seen)[user_idx], item_idx)

    def _item_vectors(self) -> np.ndarray | None:
        return None

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._terms_by_items = None

    def _similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        return (self.item_matrix[idx] @ self.item_matrix.T).toarray()

    def _add_items(self, new_items: pd.DataFrame) -> None:
        new = self.vectorizer.transform(self._documents(new_items))
        self.item_matrix = sp.csr_matrix(sp.vstack([self.item_matrix, new]), dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return csr_to_tensors("item_matrix", self.item_matrix) | {"idf": self.vectorizer.state()[1]}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_matrix = csr_from_tensors("item_matrix", state)
        self._idf = state["idf"]

    def _save_extra(self, folder: Path) -> None:
        vocab, _ = self.vectorizer.state()
        (folder / "tfidf_vocabulary.json").write_text(json.dumps(vocab))

    def _load_extra(self, folder: Path) -> None:
        self.vectorizer = TextVectorizer(self.config)
        self.vectorizer.restore(json.loads((folder / "tfidf_vocabulary.json").read_text()), self._idf)


__all__ = ["TfidfKNN", "TfidfConfig", "TextVectorizer"]
