"""Full-ranking evaluation of a fitted model (or of any library's top-K lists) on a split.

Protocol: every test user is ranked over all items (warm) or over the held-out cold items (cold),
with the items seen in training (and validation, when scoring test) excluded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.data.splits import Split
from avrec.eval.metrics import ranking_metrics


def item_feature_matrix(dataset: Dataset, fields=("genres", "tags")) -> sp.csr_matrix:
    """Binary item × token matrix from multi-valued metadata, for diversity; falls back to co-occurrence."""
    rows, cols, vocab = [], [], {}
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


def _eval_inputs(split: Split, part: str):
    target = split.part(part)
    truth = target.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    exclude = split.train.matrix(binary=True)
    if part == "test":
        exclude = exclude + split.valid.matrix(binary=True)
    return users, truth[users], exclude[users], split.candidates(part)


def _summarise(topk, truth, split: Split, candidates, ks, features) -> dict[str, float]:
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
    out["users"] = float(truth.shape[0])
    return out


def evaluate_model(model, split: Split, k: int | list[int] = 10, part: str = "test", batch_size: int = 512) -> dict[str, float]:
    """Metrics at each K for a model fitted on ``split.train``."""
    ks = [k] if isinstance(k, int) else list(k)
    users, truth, exclude, candidates = _eval_inputs(split, part)
    topk, _ = model.topk_indices(users, max(ks), exclude=exclude, candidates=candidates, batch_size=batch_size)
    return _summarise(topk, truth, split, candidates, ks, item_feature_matrix(split.train))


def evaluate_recommendations(recs: pd.DataFrame, split: Split, k: int | list[int] = 10, part: str = "test") -> dict[str, float]:
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
    return _summarise(topk, truth, split, candidates, ks, item_feature_matrix(split.train))
