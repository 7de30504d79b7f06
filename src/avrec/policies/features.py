"""Per-candidate features for the linear policies, one row per candidate of a request.

Columns (:data:`FEATURE_NAMES`): ``bias`` (1); ``score``, the retriever's score standardised over the
request's candidates; ``popularity``, log(1 + interactions) standardised over the catalogue;
``newness``, 1 / (1 + interactions): 1 for an item nobody has interacted with yet (a new release), falling
as it is learned; ``similarity``, the mean similarity between the candidate and the user's most recent
items (the model's own item similarity, cosine of its item vectors, e.g. language-model vectors for the
hybrid, else co-occurrence cosine; 0 without a history); ``kg_overlap``, the share of the candidate's
knowledge-graph entities (genres, tags, people, decade: :func:`avrec.kg.graph.build_kg` over the model's
items) that the user's most recent items also name (0 without a history or entities).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.models.base import Recommender
from avrec.policies.base import standardise

FEATURE_NAMES = ("bias", "score", "popularity", "newness", "similarity", "kg_overlap")
#: how many of the user's latest items the similarity feature looks at
RECENT = 10


def kg_overlap(entities: sp.csr_matrix, candidates: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """Share of each candidate's entities (rows of the item × entity ``entities``) named by a ``recent`` item."""
    if len(recent) == 0 or entities.shape[1] == 0:
        return np.zeros(len(candidates))
    named = np.asarray(entities[recent].sum(axis=0)).ravel() > 0
    rows = entities[candidates]
    own = np.asarray(rows.sum(axis=1)).ravel()
    shared = np.asarray(rows @ named.astype(np.float32)).ravel()
    return np.where(own > 0, shared / np.maximum(own, 1), 0.0)


def feature_matrix(scores: np.ndarray, interactions: np.ndarray, similarity: np.ndarray,
                   log_pop_mean: float, log_pop_std: float, overlap: np.ndarray | None = None) -> np.ndarray:
    """The (n, 6) matrix from the raw columns: candidates' scores, interaction counts, similarities and
    KG overlaps (zeros when not given)."""
    n = len(scores)
    pop = np.log1p(np.maximum(np.asarray(interactions, dtype=np.float64), 0.0))
    return np.column_stack([
        np.ones(n),
        standardise(scores),
        (pop - log_pop_mean) / (log_pop_std if log_pop_std > 0 else 1.0),
        1.0 / (1.0 + np.maximum(np.asarray(interactions, dtype=np.float64), 0.0)),
        np.nan_to_num(np.asarray(similarity, dtype=np.float64)),
        np.zeros(n) if overlap is None else np.asarray(overlap, dtype=np.float64),
    ])


class FeatureBuilder:
    """Features of a served model's candidates (catalogue indices of the model)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        pop = np.asarray(model.popularity if model.popularity is not None else np.zeros(model.n_items), np.float64)
        self.interactions = pop
        logs = np.log1p(pop)
        self.log_pop_mean, self.log_pop_std = float(logs.mean()) if len(logs) else 0.0, float(logs.std())
        self.entities = self._entities(model)

    @staticmethod
    def _entities(model: Recommender) -> sp.csr_matrix:
        """The item × entity adjacency of the model's items (no entities when the catalogue has no metadata)."""
        from avrec.errors import DataError
        from avrec.kg.graph import build_kg

        try:
            assert model.items is not None
            return sp.csr_matrix(build_kg(model.items).adjacency, dtype=np.float32)
        except (DataError, AssertionError, ValueError):
            return sp.csr_matrix((model.n_items, 0), dtype=np.float32)

    def build(self, candidates: np.ndarray, scores: np.ndarray, history: Any = ()) -> np.ndarray:
        """Features of ``candidates`` (model item indices) for a user whose items, oldest first, are ``history``."""
        cand = np.asarray(candidates, dtype=np.int64)
        recent = np.asarray(list(history)[-RECENT:], dtype=np.int64)
        recent = recent[(recent >= 0) & (recent < self.model.n_items)]
        inside = cand < self.model.n_items
        sim = np.zeros(len(cand))
        if len(recent) and inside.any():
            rows = self.model.similarity_rows(recent)
            sim[inside] = rows[:, cand[inside]].mean(axis=0)
        counts = np.zeros(len(cand))
        counts[inside] = self.interactions[cand[inside]]
        overlap = np.zeros(len(cand))
        linked = inside & (cand < self.entities.shape[0])  # items added after the model was loaded: 0
        if linked.any():
            overlap[linked] = kg_overlap(self.entities, cand[linked], recent[recent < self.entities.shape[0]])
        return feature_matrix(scores, counts, sim, self.log_pop_mean, self.log_pop_std, overlap)
