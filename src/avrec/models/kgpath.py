"""Knowledge-graph path scorer: an item scores by the metadata paths that join it to the user's history.

``score(user, item) = Σ_e  f(c_u(e)) · idf(e)^p · A[item, e] / norm(item)``, where ``c_u(e)`` counts the
user's training items linked to entity ``e`` (paths user → history item → entity → item), ``idf`` makes
rare entities (a director) count more than common ones (genre Drama) and ``norm`` keeps items with long
tag lists from winning on volume. Because it only needs metadata, it scores items nobody has interacted
with (cold items) and takes new items without a retrain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, NotApplicable
from avrec.kg.graph import KnowledgeGraph, build_kg, kg_item_features
from avrec.models.base import Capabilities, Recommender


@dataclass
class KGPathConfig:
    """``fields``: item columns that give entities (empty: every entity field). ``min_items``: ignore entities
    on fewer items. ``idf_power``: exponent of the idf weight (0 = plain path counts). ``user_weighting``:
    ``count`` or ``log`` (1 + log of the count, damping one dominant genre). ``item_norm``: ``none``,
    ``sqrt`` (divide by the root of the item's entity count) or ``l2`` (cosine-like). ``popularity_tiebreak``:
    weight of a popularity term (scaled to [0, 1]) that breaks ties; an empty history gets popularity."""

    fields: list[str] = field(default_factory=list)
    min_items: int = 2
    idf_power: float = 1.0
    user_weighting: str = "log"
    item_norm: str = "sqrt"
    popularity_tiebreak: float = 1e-3

    def __post_init__(self) -> None:
        if self.user_weighting not in ("count", "log"):
            raise ConfigError(f"kgpath user_weighting must be count or log, not {self.user_weighting!r}")
        if self.item_norm not in ("none", "sqrt", "l2"):
            raise ConfigError(f"kgpath item_norm must be none, sqrt or l2, not {self.item_norm!r}")
        if self.min_items < 1:
            raise ConfigError(f"kgpath min_items must be at least 1, not {self.min_items}")


class KGPathScorer(Recommender):
    """Path-count recommender over the item knowledge graph (registered as ``kgpath``)."""

    name = "kgpath"
    CAPABILITIES = Capabilities(cold_items=True, add_items=True, exact_fold_in=True, knowledge_graph=True)
    Config = KGPathConfig

    kg: KnowledgeGraph
    entity_weights: np.ndarray

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        fields = list(self.config.fields) or None
        self.kg = build_kg(dataset.items, fields=fields, min_items=self.config.min_items)
        if self.kg.n_entities == 0:
            raise NotApplicable(
                "kgpath: the items have no metadata entities (genres, tags, director, ...); use a CF or text model"
            )
        self.entity_weights = (self.kg.idf() ** np.float32(self.config.idf_power)).astype(np.float32)
        self._prepare()

    # ---- scoring -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Item-side matrix ``A · diag(w) / norm`` (entities × items, CSR) used by every score."""
        a = sp.csr_matrix(self.kg.adjacency, dtype=np.float32)
        x = sp.csr_matrix(a @ sp.diags(self.entity_weights))
        if self.config.item_norm == "sqrt":
            norm = np.sqrt(np.diff(a.indptr).astype(np.float32))
        elif self.config.item_norm == "l2":
            norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()).astype(np.float32)
        else:
            norm = np.ones(a.shape[0], np.float32)
        x = sp.diags(1.0 / np.where(norm > 0, norm, 1.0).astype(np.float32)) @ x
        self._item_side = sp.csr_matrix(x.T, dtype=np.float32)  # entities × items
        self._features: sp.csr_matrix | None = None

    def user_profiles(self, history: sp.csr_matrix) -> sp.csr_matrix:
        """Users × entities: how many history items link to each entity (damped when ``user_weighting=log``)."""
        p = sp.csr_matrix(sp.csr_matrix(history, dtype=np.float32) @ self.kg.adjacency, dtype=np.float32)
        if self.config.user_weighting == "log":
            p.data = 1.0 + np.log(np.maximum(p.data, 1.0))
        return p

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        # select columns of the product, not of the entities × items matrix (which would copy it)
        scores = sp.csr_matrix(self.user_profiles(history) @ self._item_side)
        scores = np.asarray((scores if item_idx is None else scores[:, item_idx]).toarray(), dtype=np.float32)
        # popularity (scaled to at most ``popularity_tiebreak``) orders items the paths cannot separate,
        # and is the whole score for an empty history
        popularity = self._fitted(self.popularity)
        pop = popularity if item_idx is None else popularity[item_idx]
        top = float(popularity.max()) if len(popularity) else 0.0
        if top > 0:
            scores += np.float32(self.config.popularity_tiebreak / top) * pop.astype(np.float32)[None, :]
        empty = np.diff(sp.csr_matrix(history).indptr) == 0
        if empty.any():
            scores[empty] = pop.astype(np.float32)[None, :]
        return scores

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_history(self._fitted(self.seen)[user_idx], item_idx)

    def entity_contributions(self, user_idx: int, item_idx: int) -> dict[int, float]:
        """Per-entity terms of ``score(user, item)`` (entity column -> contribution); they sum to the score."""
        prof = self.user_profiles(self._fitted(self.seen)[[user_idx]])
        side = self._item_side[:, [item_idx]].toarray().ravel()
        return {int(e): float(v * side[e]) for e, v in zip(prof.indices, prof.data) if side[e] != 0}

    def item_features(self) -> sp.csr_matrix:
        """TF-IDF item × entity features (L2-normalised), for similarity and explanations."""
        if getattr(self, "_features", None) is None:
            self._features = kg_item_features(self.kg, min_items=1)
        return self._features

    def _similarity_rows(self, idx: np.ndarray) -> np.ndarray:
        """Items sharing the most (idf-weighted) entities; works for cold and newly added items too."""
        f = self.item_features()
        return (f[idx] @ f.T).toarray()

    # ---- catalogue updates -------------------------------------------------------------------
    def _add_items(self, new_items: pd.DataFrame) -> None:
        rows = self.kg.link(new_items)
        self.kg = KnowledgeGraph(
            np.r_[self.kg.item_ids, new_items["item_id"].astype(str).to_numpy(dtype=object)],
            self.kg.entities,
            sp.vstack([self.kg.adjacency, rows]).tocsr(),
            self.kg.meta,
        )
        self._prepare()

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"entity_weights": self.entity_weights}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.entity_weights = state["entity_weights"]

    def _save_extra(self, folder: Path) -> None:
        self.kg.save(Path(folder) / "kg")

    def _load_extra(self, folder: Path) -> None:
        self.kg = KnowledgeGraph.load(Path(folder) / "kg")
        self._prepare()
