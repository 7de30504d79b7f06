"""``contentpop``: popularity, predicted from the catalogue for items nobody has interacted with yet.

A ridge regression from an item's field features (:mod:`avrec.models.field_features`: title words, genre
values, year buckets, numeric bins, and how many values each field has) to its log training popularity,
fitted on the items with interactions. Warm items score their real log popularity; items without
interactions score the prediction, so a new blockbuster-shaped title (an action sequel of this year)
outranks an obscure one. The score is the same for every user: it is the non-personal prior that the
hybrid's cold fusion weighs against the personal components.
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
from avrec.errors import NotApplicable
from avrec.eval.validation import ValidationSet
from avrec.models.base import Capabilities, Recommender
from avrec.models.field_features import FieldVectorizer, FieldVectorizerConfig, weighted_rows


@dataclass
class ContentPopConfig:
    fields: list[str] | None = None  # None: every column the catalogue has (identifiers excluded)
    alpha: float = 10.0
    alpha_grid: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])  # tried on validation


class ContentPopularity(Recommender):
    name = "contentpop"
    CAPABILITIES = Capabilities(cold_items=True, add_items=True, exact_fold_in=True)
    Config = ContentPopConfig

    def _features(self, items: pd.DataFrame, fit: bool = False) -> sp.csr_matrix:
        blocks = self.vectorizer.fit_transform(items) if fit else self.vectorizer.transform(items)
        rows = weighted_rows(blocks, {}, 0.0)
        counts = np.column_stack([np.log1p(np.diff(b.indptr)) for b in blocks.values()]) if blocks else None
        return rows if counts is None else sp.csr_matrix(sp.hstack([rows, sp.csr_matrix(counts)]), dtype=np.float32)

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        from sklearn.linear_model import Ridge

        self.vectorizer = FieldVectorizer(FieldVectorizerConfig(fields=self.config.fields))
        x = self._features(dataset.items, fit=True)
        warm = dataset.item_counts() > 0
        if x.shape[1] == 0 or warm.sum() < 2:
            raise NotApplicable("contentpop: needs item metadata and at least two items with interactions")
        y = np.log1p(dataset.item_counts()).astype(np.float64)
        alphas = [self.config.alpha]
        if valid is not None and valid.n_interactions and valid_candidates is not None:
            alphas = list(self.config.alpha_grid)  # only a cold validation part says how well the prior generalises
        fits: list[tuple[float, int, float, Any, np.ndarray]] = []
        for alpha in alphas:
            reg = Ridge(alpha=alpha).fit(x[warm], y[warm])
            pred = np.where(warm, y, reg.predict(x)).astype(np.float32)
            score = self._valid_ndcg(pred, dataset, valid, valid_candidates) if len(alphas) > 1 else 0.0
            fits.append((score, -len(fits), alpha, reg, pred))
        _, _, self.tuned_alpha, reg, self.prior = max(fits, key=lambda f: (f[0], f[1]))
        self.ridge_coef, self.ridge_intercept = reg.coef_.astype(np.float32), float(reg.intercept_)
        self.config = replace(self.config, alpha=float(self.tuned_alpha))

    @staticmethod
    def _valid_ndcg(pred: np.ndarray, train: Dataset, valid: Dataset | None, candidates: np.ndarray | None) -> float:
        assert valid is not None
        seen = train.matrix(binary=True)
        check = ValidationSet.from_matrices(valid.matrix(binary=True)[:, : seen.shape[1]], seen, candidates,
                                            max_users=2000, seed=0)
        return check.ndcg(np.tile(pred[check.candidates].astype(np.float32), (len(check), 1))) if len(check) else 0.0

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        prior = self.prior if item_idx is None else self.prior[item_idx]
        return np.tile(prior, (len(user_idx), 1))

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score(np.arange(history.shape[0]), item_idx)

    def _add_items(self, new_items: pd.DataFrame) -> None:
        pred = self._features(new_items) @ self.ridge_coef + self.ridge_intercept
        self.prior = np.r_[self.prior, np.asarray(pred, np.float32).ravel()]

    def _state(self) -> dict[str, np.ndarray]:
        return {"prior": self.prior, "ridge_coef": self.ridge_coef,
                "ridge_intercept": np.array([self.ridge_intercept], np.float32)} | self.vectorizer.state()

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.prior, self.ridge_coef = state["prior"], state["ridge_coef"]
        self.ridge_intercept = float(state["ridge_intercept"][0])
        self._arrays = state

    def _save_extra(self, folder: Path) -> None:
        meta = {"vectorizer": self.vectorizer.meta(), "alpha": self.tuned_alpha}
        (folder / "contentpop.json").write_text(json.dumps(meta))

    def _load_extra(self, folder: Path) -> None:
        meta = json.loads((folder / "contentpop.json").read_text())
        self.vectorizer = FieldVectorizer.restore(FieldVectorizerConfig(fields=self.config.fields),
                                                  meta["vectorizer"], self._arrays)
        self.tuned_alpha = meta["alpha"]


__all__ = ["ContentPopConfig", "ContentPopularity"]
