"""Categorical item tokens and their TF-IDF weighting, used by the ``hybrid`` item tower.

They are functions of the item catalogue alone, so items with no interactions get them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.kg.graph import decade_of

#: Multi-valued and categorical fields that become tokens such as ``director:christopher nolan``.
CATEGORICAL_FIELDS = ("genres", "tags", "director", "cast", "artist", "keywords", "country", "media_type", "decade")


def item_tokens(
    items: pd.DataFrame, fields: Iterable[str] = CATEGORICAL_FIELDS, max_per_field: int = 20
) -> list[list[str]]:
    """Per item, the list of ``field:value`` tokens of its categorical metadata."""
    cols: dict[str, list[str]] = {}
    for f in fields:
        if f == "decade":
            if "year" in items.columns:
                cols[f] = [decade_of(y) for y in items["year"].astype(str)]
        elif f in items.columns:
            cols[f] = items[f].fillna("").astype(str).tolist()
    out: list[list[str]] = []
    for i in range(len(items)):
        toks: list[str] = []
        for f, values in cols.items():
            parts = [p.strip().lower() for p in values[i].split("|") if p.strip()]
            toks.extend(f"{f}:{p}" for p in parts[:max_per_field])
        out.append(toks)
    return out


@dataclass
class TokenVocab:
    """A vocabulary of categorical tokens with a minimum item frequency (rarer tokens are dropped)."""

    tokens: list[str] = field(default_factory=list)
    min_count: int = 2

    @classmethod
    def fit(cls, token_lists: list[list[str]], min_count: int = 2, max_size: int = 50000) -> TokenVocab:
        counts: dict[str, int] = {}
        for toks in token_lists:
            for t in set(toks):
                counts[t] = counts.get(t, 0) + 1
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))[:max_size]
        return cls(kept, min_count)

    def matrix(self, token_lists: list[list[str]]) -> sp.csr_matrix:
        """Binary item × token matrix; unknown tokens are ignored."""
        index = {t: j for j, t in enumerate(self.tokens)}
        rows, cols = [], []
        for i, toks in enumerate(token_lists):
            for t in set(toks):
                j = index.get(t)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(token_lists), len(self.tokens)))


def tfidf_weight(binary: sp.csr_matrix, idf: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """IDF-weight and L2-normalise a binary item × token matrix; returns the matrix and the idf used."""
    if idf is None:
        df = np.asarray((binary > 0).sum(axis=0)).ravel()
        idf = np.log((1 + binary.shape[0]) / (1 + df)) + 1
    m = sp.csr_matrix(binary @ sp.diags(idf.astype(np.float32)))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    m = sp.diags(1 / np.where(norms > 0, norms, 1)).astype(np.float32) @ m
    return sp.csr_matrix(m, dtype=np.float32), idf.astype(np.float32)
