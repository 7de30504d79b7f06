"""Most-popular baseline: every user gets the items with the most training users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avrec.data.dataset import Dataset
from avrec.models.base import Capabilities, Recommender


@dataclass
class PopularityConfig:
    pass


class Popularity(Recommender):
    name = "pop"
    CAPABILITIES = Capabilities(exact_fold_in=True)
    Config = PopularityConfig

    def _fit(self, dataset: Dataset, valid: Dataset | None, valid_candidates: np.ndarray | None) -> None:
        pass

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self.popularity_scores(len(user_idx), item_idx)
