"""TF-IDF: the ``tfidf`` model (a field-weighted profile over every catalogue column, the lexical
cold-start model and a ``hybrid`` component) and ``TextVectorizer`` (words of item documents, a feature
source of the hybrid's item tower).

``tfidf`` keeps each field (title words, genre values, the year and its buckets, numeric bins, ...) in its
own block and weighs the blocks, and how much item rows are length-normalised, by validation NDCG: on a
thin catalogue (a title with a year and a few genres) the year and the genre mix carry most of the signal,
on a rich one the keywords and the crowd tags do, and no fixed document template suits both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.data.documents import DocumentConfig
from avrec.errors import NotApplicable
from avrec.eval.validation import ValidationSet
from avrec.models.artifacts import csr_from_tensors, csr_to_tensors
from avrec.models.base import Capabilities, Recommender
from avrec.models.field_features import FieldVectorizer, FieldVectorizerConfig, weighted_rows
from avrec.training import coordinate_search


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


@dataclass
class FieldTfidfConfig:
    """The ``tfidf`` model: a field-weighted TF-IDF profile over every column of the catalogue.

    ``fields``: the columns to use (None: all, identifiers excluded; see :mod:`avrec.data.fields`).
    ``field_weights``: a weight per field (missing fields weigh 1); ``norm_power``: how much an item row
    is length-normalised (1 = cosine, 0 = none). With a validation part, both are tuned on its NDCG@10
    (``tune``) by coordinate search from the given values; the tuned values are kept in this config.
    """

    fields: list[str] | None = None
    min_df: int = 1
    sublinear_tf: bool = True
    numeric_bins: int = 10
    max_features: int = 200000
    field_weights: dict[str, float] = field(default_factory=dict)
    norm_power: float = 0.5
    tune: bool = True
    weight_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    norm_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    max_valid_users: int = 3000


class TfidfKNN(Recommender):
    """Score = (sum of the user's item rows) · item row, over field-weighted TF-IDF rows of every column.

    Equivalent to summing cosine-like similarities to the user's history; items with no interactions are
    scored exactly like the others, so it is a cold-start model and a component of ``hybrid``.
    """

    name = "tfidf"
    CAPABILITIES = Capabilities(cold_items=True, add_items=True, exact_fold_in=True)
    Config = FieldTfidfConfig

    def _vectorizer_config(self) -> FieldVectorizerConfig:
        c = self.config
        return FieldVectorizerConfig(fields=None if c.fields is None else list(c.fields), min_df=c.min_df,
                                     sublinear_tf=c.sublinear_tf, numeric_bins=c.numeric_bins,
                                     max_features=c.max_features)

    def _rows(self, blocks: dict[str, sp.csr_matrix], weights: dict[str, float], power: float) -> sp.csr_matrix:
        return weighted_rows(blocks, weights, power)

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        self.vectorizer = FieldVectorizer(self._vectorizer_config())
        blocks = self.vectorizer.fit_transform(dataset.items)
        if not blocks:
            raise NotApplicable("tfidf: the catalogue has no column with shared words or values")
        c = self.config
        weights = {f: float(c.field_weights.get(f, 1.0)) for f in blocks}
        power = float(c.norm_power)
        if valid is not None and c.tune and valid.n_interactions:
            weights, power = self._tune(blocks, weights, power, dataset, valid, valid_candidates)
        self.config = replace(c, field_weights=weights, norm_power=power)
        self.item_matrix = self._rows(blocks, weights, power)

    def _tune(self, blocks: dict[str, sp.csr_matrix], weights: dict[str, float], power: float, train: Dataset,
              valid: Dataset, candidates: np.ndarray | None) -> tuple[dict[str, float], float]:
        seen = train.matrix(binary=True)
        check = ValidationSet.from_matrices(valid.matrix(binary=True)[:, : seen.shape[1]], seen, candidates,
                                            max_users=self.config.max_valid_users, seed=0)
        if not len(check):
            return weights, power

        def objective(params: dict[str, float]) -> np.ndarray:
            rows = self._rows(blocks, {f: params[f] for f in blocks}, params["norm_power"])
            items = rows if check.candidates is None else rows[check.candidates]
            return check.ndcg_folds((seen[check.users] @ rows @ items.T).toarray(), 10)

        grids: dict[str, list[float]] = {"norm_power": list(self.config.norm_grid)}
        grids |= {f: list(self.config.weight_grid) for f in blocks}
        params, best = coordinate_search(objective, [weights | {"norm_power": power}], grids, passes=2,
                                         allowed=lambda p: any(p[f] for f in blocks))
        self.tuning = {"valid_ndcg@10": best, **params}
        return {f: params[f] for f in blocks}, params["norm_power"]

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
        new = self._rows(self.vectorizer.transform(new_items), self.config.field_weights, self.config.norm_power)
        self.item_matrix = sp.csr_matrix(sp.vstack([self.item_matrix, new]), dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return csr_to_tensors("item_matrix", self.item_matrix) | self.vectorizer.state()

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_matrix = csr_from_tensors("item_matrix", state)
        self._arrays = state  # the vectorizer's idf and bin edges, read by _load_extra

    def _save_extra(self, folder: Path) -> None:
        meta = {"vectorizer": self.vectorizer.meta(), "tuning": getattr(self, "tuning", None)}
        (folder / "tfidf_fields.json").write_text(json.dumps(meta))

    def _load_extra(self, folder: Path) -> None:
        meta = json.loads((folder / "tfidf_fields.json").read_text())
        self.vectorizer = FieldVectorizer.restore(self._vectorizer_config(), meta["vectorizer"], self._arrays)
        if meta.get("tuning"):
            self.tuning = meta["tuning"]


__all__ = ["FieldTfidfConfig", "TfidfKNN", "TfidfConfig", "TextVectorizer"]
