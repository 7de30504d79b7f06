"""Sparse item features from every column a catalogue has, one block per field.

Text columns give TF-IDF words (digits kept: a year or a sequel number inside a title is signal);
categorical columns give their values and the words in them (``sci-fi`` and ``black metal`` share with
``sci-fi horror`` and ``metal``); years and dates give the exact year, its 5-year bucket and its decade;
numeric columns (duration, popularity counts a catalogue supplies) give quantile bins. Blocks stay
apart so that a model can weigh each field by what it earns on validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.fields import FEATURE_KINDS, FieldKind, infer_fields, numbers_of, years_of

_WORD = r"(?u)\b\w\w+\b"


def _values_and_words(doc: str) -> list[str]:
    """Analyzer of a categorical cell: each ``|``-separated value, and the words inside multi-word values."""
    import re

    out = []
    for value in doc.lower().split("|"):
        value = value.strip()
        if not value:
            continue
        out.append("=" + value)
        out.extend(re.findall(r"\w\w+", value))
    return out


def _year_tokens(years: np.ndarray) -> list[str]:
    return ["" if np.isnan(y) else f"y{int(y)} f{int(y) // 5 * 5} d{int(y) // 10 * 10}" for y in years]


@dataclass
class FieldVectorizerConfig:
    fields: list[str] | None = None  # None: every column the catalogue has (identifiers excluded)
    min_df: int = 1
    sublinear_tf: bool = True
    numeric_bins: int = 10
    max_features: int = 200000


@dataclass
class FieldVectorizer:
    """Fitted per-field vocabularies; ``transform`` maps new items into the same blocks."""

    config: FieldVectorizerConfig = field(default_factory=FieldVectorizerConfig)
    kinds: list[FieldKind] = field(default_factory=list)
    vocabularies: dict[str, dict[str, int]] = field(default_factory=dict)
    idfs: dict[str, np.ndarray] = field(default_factory=dict)
    edges: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [k.column for k in self.kinds]

    def _documents(self, items: pd.DataFrame, kind: FieldKind) -> list[str]:
        source = "title" if kind.column == "title_year" else kind.column
        if source not in items.columns:  # new items without this column: nothing to say in it
            return [""] * len(items)
        if kind.kind == "year":
            return _year_tokens(years_of(items, kind.column))
        if kind.kind == "numeric":
            values = numbers_of(items, kind.column)
            bins = np.searchsorted(self.edges[kind.column], values, side="right")
            return ["" if np.isnan(v) else f"q{b}" for v, b in zip(values, bins)]
        return items[kind.column].fillna("").astype(str).tolist()

    def _vectorizer(self, kind: FieldKind, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.config
        analyzer: Any = _values_and_words if kind.kind in ("categorical", "behaviour") else "word"
        return TfidfVectorizer(
            analyzer=analyzer, token_pattern=_WORD if analyzer == "word" else None, lowercase=True,
            min_df=1 if vocabulary is not None else c.min_df, sublinear_tf=c.sublinear_tf,
            max_features=None if vocabulary is not None else c.max_features, vocabulary=vocabulary,
            dtype=np.float32, norm=None,
        )

    def fit_transform(self, items: pd.DataFrame) -> dict[str, sp.csr_matrix]:
        """Blocks of the catalogue (un-normalised TF-IDF rows), fitting every field's vocabulary."""
        # named fields are used as asked (a user may opt into user_tags); by default only feature kinds
        self.kinds = [k for k in infer_fields(items, self.config.fields)
                      if k.kind in FEATURE_KINDS or (self.config.fields is not None and k.kind == "behaviour")]
        self.vocabularies, self.idfs, self.edges, blocks = {}, {}, {}, {}
        for kind in list(self.kinds):
            if kind.kind == "numeric":
                values = numbers_of(items, kind.column)
                qs = np.linspace(0, 1, self.config.numeric_bins + 1)[1:-1]
                self.edges[kind.column] = np.unique(np.nanquantile(values, qs))
            vec = self._vectorizer(kind)
            try:
                block = vec.fit_transform(self._documents(items, kind))
            except ValueError:  # no token survives (an empty or all-unique column): not a feature here
                self.kinds.remove(kind)
                continue
            self.vocabularies[kind.column] = {t: int(i) for t, i in vec.vocabulary_.items()}
            self.idfs[kind.column] = np.asarray(vec.idf_, np.float32)
            blocks[kind.column] = sp.csr_matrix(block, dtype=np.float32)
        return blocks

    def transform(self, items: pd.DataFrame) -> dict[str, sp.csr_matrix]:
        """Blocks of new items with the fitted vocabularies (unknown tokens are ignored)."""
        blocks = {}
        for kind in self.kinds:
            vec = self._vectorizer(kind, self.vocabularies[kind.column])
            vec.idf_ = self.idfs[kind.column].astype(np.float64)
            blocks[kind.column] = sp.csr_matrix(vec.transform(self._documents(items, kind)), dtype=np.float32)
        return blocks

    # ---- persistence: JSON for the vocabularies, arrays for idf and bin edges ----
    def meta(self) -> dict[str, Any]:
        return {"kinds": [[k.column, k.kind] for k in self.kinds], "vocabularies": self.vocabularies}

    def state(self) -> dict[str, np.ndarray]:
        out = {f"idf.{name}": v for name, v in self.idfs.items()}
        return out | {f"edges.{name}": v.astype(np.float64) for name, v in self.edges.items()}

    @classmethod
    def restore(cls, config: FieldVectorizerConfig, meta: dict[str, Any],
                state: dict[str, np.ndarray]) -> FieldVectorizer:
        kinds = [FieldKind(c, k) for c, k in meta["kinds"]]
        return cls(config, kinds, meta["vocabularies"],
                   {k.column: np.asarray(state[f"idf.{k.column}"]) for k in kinds},
                   {k.column: np.asarray(state[f"edges.{k.column}"]) for k in kinds if k.kind == "numeric"})


def weighted_rows(blocks: dict[str, sp.csr_matrix], weights: dict[str, float], norm_power: float) -> sp.csr_matrix:
    """One row per item: the blocks side by side, each times ``weights[f]`` (default 1), the row divided by
    its L2 norm to the power ``norm_power`` (1: cosine; 0: no length normalisation, so items described by
    more matching values score higher). The blocks keep their raw TF-IDF scale: a rare title word weighs
    more than a genre every tenth item has, as in a plain TF-IDF over the joined columns."""
    parts = [blocks[f] * np.float32(weights.get(f, 1.0)) for f in blocks]
    m = sp.csr_matrix(sp.hstack(parts), dtype=np.float32) if parts else sp.csr_matrix((0, 0), dtype=np.float32)
    if norm_power and m.shape[1]:
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        m = sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0) ** norm_power).astype(np.float32) @ m)
    return m


__all__ = ["FieldVectorizer", "FieldVectorizerConfig", "weighted_rows"]
