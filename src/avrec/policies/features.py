"""Per-candidate features for the linear policies, one row per candidate of a request.

Columns (:data:`FEATURE_NAMES`): ``bias`` (1); ``score``, the retriever's score standardised over the
request's candidates; ``popularity``, log(1 + interactions) standardised over the catalogue;
``newness``, 1 / (1 + interactions): 1 for an item nobody has interacted with yet (a new release), falling
as it is learned; ``similarity``, the mean similarity between the candidate and the user's most recent
items (the model's own item similarity, cosine of its item vectors, e.g. language-model vectors for the
hybrid, else co-occurrence cosine; 0 without a history).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avrec.models.base import Recommender
from avrec.policies.base import standardise

FEATURE_NAMES = ("bias", "score", "popularity", "newness", "similarity")
#: how many of the user's latest items the similarity feature looks at
RECENT = 10


def feature_matrix(scores: np.ndarray, interactions: np.ndarray, similarity: np.ndarray,
                   log_pop_mean: float, log_pop_std: float) -> np.ndarray:
    """The (n, 5) matrix from the raw columns: candidates' scores, interaction counts and similarities."""
    n = len(scores)
    pop = np.log1p(np.maximum(np.asarray(interactions, dtype=np.float64), 0.0))
    return np.column_stack([
        np.ones(n),
        standardise(scores),
        (pop - log_pop_mean) / (log_pop_std if log_pop_std > 0 else 1.0),
        1.0 / (1.0 + np.maximum(np.asarray(interactions, dtype=np.float64), 0.0)),
        np.nan_to_num(np.asarray(similarity, dtype=np.float64)),
    ])


class FeatureBuilder:
    """Features of a served model's candidates (catalogue indices of the model)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        pop = np.asarray(model.popularity if model.popularity is not None else np.zeros(model.n_items), np.float64)
        self.interactions = pop
        logs = np.log1p(pop)
        self.log_pop_mean, self.log_pop_std = float(logs.mean()) if len(logs) else 0.0, float(logs.std())

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
        return feature_matrix(scores, counts, sim, self.log_pop_mean, self.log_pop_std)
