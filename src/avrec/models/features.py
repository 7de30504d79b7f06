"""Item-side features shared by the content-aware models: lexical TF-IDF, categorical tokens, LM vectors.

All three are functions of the item catalogue alone, so items with no interactions get them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.documents import DocumentConfig, build_documents

#: Multi-valued and categorical fields that become tokens such as ``director:christopher nolan``.
CATEGORICAL_FIELDS = ("genres", "tags", "director", "cast", "artist", "keywords", "country", "media_type", "decade")


def decade_of(year: str) -> str:
    m = re.match(r"\s*(\d{4})", str(year))
    return f"{m.group(1)[:3]}0s" if m else ""


def item_tokens(items: pd.DataFrame, fields=CATEGORICAL_FIELDS, max_per_field: int = 20) -> list[list[str]]:
    """Per item, the list of ``field:value`` tokens of its categorical metadata."""
    cols = {}
    for f in fields:
        if f == "decade":
            if "year" in items.columns:
                cols[f] = [decade_of(y) for y in items["year"].astype(str)]
        elif f in items.columns:
            cols[f] = items[f].fillna("").astype(str).tolist()
    out = []
    for i in range(len(items)):
        toks = []
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


def documents(items: pd.DataFrame, config: DocumentConfig | None = None) -> list[str]:
    return build_documents(items, config)


def lm_item_vectors(
    items: pd.DataFrame,
    encoder: str = "default",
    doc_config: DocumentConfig | None = None,
    cache_dir: str | None = None,
    batch_size: int = 64,
    max_length: int = 256,
    show_progress: bool = True,
) -> tuple[np.ndarray, str]:
    """LM vectors of the item documents (through the embedding cache) and the encoder's cache id."""
    from avrec.encoders import EmbeddingCache, TextEncoder, encode_texts

    enc = TextEncoder(encoder, batch_size=batch_size, max_length=max_length)
    cache = EmbeddingCache(cache_dir) if cache_dir != "none" else None
    vectors = encode_texts(enc, documents(items, doc_config), cache, show_progress=show_progress)
    return np.asarray(vectors, dtype=np.float32), enc.model_id
