"""Full-ranking evaluation of a fitted model (or of any library's top-K lists) on a split.

Protocol: every test user is ranked over all items (warm) or over the held-out cold items (cold),
with the items seen in training (and validation, when scoring test) excluded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.data.splits import Split
from avrec.errors import ConfigError, DataError
from avrec.eval.beyond import BeyondConfig, beyond_accuracy
from avrec.eval.metrics import ranking_metrics

#: Why a split method leaves a part empty, for the "nothing to score" error.
_EMPTY_PART_HINTS = {
    "random": "users need at least 3 items to be split",
    "temporal_loo": "users need at least 3 items to be split",
    "global_temporal": "too few distinct timestamps fall after the cut",
    "cold_item": "too few items with interactions to hold out split.{share} of them",
}


def item_feature_matrix(dataset: Dataset, fields: Iterable[str] = ("genres", "tags")) -> sp.csr_matrix:
    """Binary item × token matrix from multi-valued metadata, for diversity; falls back to co-occurrence."""
    rows: list[int] = []
    cols: list[int] = []
    vocab: dict[str, int] = {}
    for f in fields:
        if f not in dataset.items.columns:
            continue
        for i, value in enumerate(dataset.items[f].astype(str)):
            for token in value.split("|"):
                token = token.strip().lower()
                if token:
                    rows.append(i)
                    cols.append(vocab.setdefault(f"{f}:{token}", len(vocab)))
    if not vocab:
        return sp.csr_matrix(dataset.matrix(binary=True).T)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(dataset.n_items, len(vocab)))


def check_evaluable(split: Split, part: str = "test") -> None:
    """Raise a DataError when no user has items in ``part``: every metric would be a meaningless 0."""
    target = split.part(part)
    if target.n_interactions > 0:
        return
    total = split.train.n_interactions + split.valid.n_interactions + split.test.n_interactions
    what = "test" if part == "test" else "validation"
    hint = _EMPTY_PART_HINTS.get(split.method, "")
    hint = hint.format(share="cold_share" if part == "test" else "cold_valid_share")
    raise DataError(
        f"evaluate: no user has {what} items under the {split.method} split "
        f"({split.train.n_users:,} users, {total:,} interactions)"
        + (f"; {hint}" if hint else "")
    )


# ``model`` below is a fitted avrec.models Recommender (or anything with its methods): eval sits below the
# models layer, so it is typed Any here.
def check_scores_cold_items(model: Any, split: Split, part: str = "test") -> None:
    """Raise a ConfigError when ``part`` is ranked among cold items and ``model`` cannot score those.

    Such a model gives every cold candidate the same score, so its metrics would only show tie order.
    """
    if split.candidates(part) is not None and not model.capabilities.cold_items:
        name = getattr(model, "name", "") or type(model).__name__
        raise ConfigError(
            f"{name} cannot score items without interactions, so it cannot be evaluated on the {split.method} "
            "protocol (its lists would only show tie order); use a content-aware model, or pass "
            "allow_cold_unaware=True to score it anyway"
        )


def _eval_inputs(split: Split, part: str) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix, np.ndarray | None]:
    check_evaluable(split, part)
    target = split.part(part)
    truth = target.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    exclude = split.train.matrix(binary=True)
    if part == "test":
        exclude = exclude + split.valid.matrix(binary=True)
    return users, truth[users], exclude[users], split.candidates(part)


def _summarise(topk: np.ndarray, truth: sp.csr_matrix, split: Split, candidates: np.ndarray | None,
               ks: Sequence[int], features: sp.csr_matrix | None, beyond: BeyondConfig | None = None,
               history: sp.csr_matrix | None = None, details: dict[str, Any] | None = None) -> dict[str, float]:
    pop = split.train.item_counts()
    n_candidates = split.train.n_items if candidates is None else len(candidates)
    out: dict[str, float] = {}
    for k in ks:
        out.update(
            ranking_metrics(
                topk, truth, k, n_candidates=n_candidates, item_popularity=pop,
                n_train_users=split.train.n_users, item_features=features,
            )
        )
        if beyond is not None and history is not None:
            scalars, groups = beyond_accuracy(topk, k, items=split.train.items, history=history, popularity=pop,
                                              candidates=candidates, config=beyond)
            out.update(scalars)
            if details is not None:
                details[f"exposure_by_group@{k}"] = groups
    out["users"] = float(truth.shape[0])
    return out


def evaluate_model(model: Any, split: Split, k: int | list[int] = 10, part: str = "test", batch_size: int = 512,
                   allow_cold_unaware: bool = False, beyond: BeyondConfig | None = None,
                   details: dict[str, Any] | None = None) -> dict[str, float]:
    """Metrics at each K for a model fitted on ``split.train``.

    With ``beyond`` the beyond-accuracy metrics of :mod:`avrec.eval.beyond` join them (pooled over every
    evaluated user's list); ``details``, when given, receives the per-provider-group exposure tables.

    A DataError when no user has items in ``part``. On the cold-item protocol a model whose
    ``capabilities.cold_items`` is False (pop, itemknn, ease, als, bpr) is a ConfigError, unless
    ``allow_cold_unaware=True`` asks for its (tie-order) numbers anyway, e.g. as a reference row.
    """
    ks = [k] if isinstance(k, int) else list(k)
    split.part(part)  # a bad part name first
    if not allow_cold_unaware:
        check_scores_cold_items(model, split, part)
    users, truth, exclude, candidates = _eval_inputs(split, part)
    topk, _ = model.topk_indices(users, max(ks), exclude=exclude, candidates=candidates, batch_size=batch_size)
    history = split.train.matrix(binary=True)[users]
    return _summarise(topk, truth, split, candidates, ks, item_feature_matrix(split.train), beyond, history, details)


def evaluate_recommendations(
    recs: pd.DataFrame, split: Split, k: int | list[int] = 10, part: str = "test",
    beyond: BeyondConfig | None = None,
) -> dict[str, float]:
    """Metrics for top-K lists produced elsewhere (columns user_id, item_id, rank), scored with avrec's code.

    Lists are cleaned exactly as avrec's own are: seen items and, on the cold protocol, non-candidates
    are dropped before truncating to K, so every contender is held to one protocol.
    """
    ks = [k] if isinstance(k, int) else list(k)
    users, truth, exclude, candidates = _eval_inputs(split, part)
    kmax = max(ks)
    topk = np.full((len(users), kmax), -1, dtype=np.int64)
    row_of = {split.train.user_ids[u]: r for r, u in enumerate(users)}
    recs = recs.sort_values(["user_id", "rank"]) if "rank" in recs else recs
    item_index = split.train.item_index
    allowed = None if candidates is None else set(candidates.tolist())
    for user, group in recs.groupby("user_id", sort=False):
        r = row_of.get(str(user))
        if r is None:
            continue
        seen = set(exclude[r].indices.tolist())
        picked = []
        for item in group["item_id"].astype(str):
            i = item_index.get(item, -1)
            if i < 0 or i in seen or (allowed is not None and i not in allowed) or i in picked:
                continue
            picked.append(i)
            if len(picked) == kmax:
                break
        topk[r, : len(picked)] = picked
    history = split.train.matrix(binary=True)[users]
    return _summarise(topk, truth, split, candidates, ks, item_feature_matrix(split.train), beyond, history)
