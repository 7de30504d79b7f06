"""Top-K ranking metrics as plain vectorised functions (the LightFM way: evaluation is not a class).

Inputs are a matrix of recommended item indices, one row per user, best first, padded with -1,
and a binary user × item matrix of relevant (held-out) items for the same rows.
Every accuracy metric returns one value per user; :func:`ranking_metrics` averages them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

ACCURACY_METRICS = ("recall", "ndcg", "mrr", "hit", "precision", "map")


def hit_matrix(topk: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users, K): whether the item at each rank is relevant to that user."""
    topk = np.asarray(topk)
    n, k = topk.shape
    if n == 0 or k == 0:
        return np.zeros((n, k), dtype=bool)
    rows = np.repeat(np.arange(n), k)
    cols = topk.ravel()
    valid = cols >= 0
    hits = np.zeros(n * k, dtype=bool)
    if valid.any():
        hits[valid] = np.asarray(truth[rows[valid], cols[valid]]).ravel() > 0
    return hits.reshape(n, k)


def _n_relevant(truth: sp.csr_matrix) -> np.ndarray:
    return np.diff(truth.indptr).astype(np.float64)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return hits.sum(axis=1) / np.maximum(n_relevant, 1)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return hits.sum(axis=1) / k


def hit_at_k(hits: np.ndarray) -> np.ndarray:
    return np.asarray(hits.any(axis=1)).astype(np.float64)


def mrr_at_k(hits: np.ndarray) -> np.ndarray:
    if hits.shape[1] == 0:  # empty lists (nothing ranked): argmax has nothing to look at
        return np.zeros(hits.shape[0])
    first = np.argmax(hits, axis=1)
    return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Binary-relevance NDCG; the ideal DCG places min(|relevant|, K) hits at the top."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits.shape[1]]).sum(axis=1)
    ideal_cum = np.r_[0.0, np.cumsum(discounts)]
    idcg = ideal_cum[np.minimum(n_relevant, k).astype(int)]
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1), 0.0)


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Mean average precision, normalised by min(|relevant|, K) (as RecBole does)."""
    cum_hits = np.cumsum(hits, axis=1)
    precision_at_i = cum_hits / np.arange(1, hits.shape[1] + 1)
    ap = (precision_at_i * hits).sum(axis=1)
    return ap / np.maximum(np.minimum(n_relevant, k), 1)


def item_coverage(topk: np.ndarray, n_candidates: int) -> float:
    """Share of the candidate items that appear in at least one list."""
    shown = np.unique(topk[topk >= 0])
    return float(len(shown) / max(n_candidates, 1))


def novelty(topk: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p) of recommended items, p = (train users of the item + 1) / (users + 1)."""
    items = topk[topk >= 0]
    if len(items) == 0:
        return 0.0
    p = (item_popularity[items] + 1.0) / (n_users + 1.0)
    return float(np.mean(-np.log2(p)))


def intra_list_diversity(topk: np.ndarray, item_features: sp.csr_matrix) -> float:
    """Mean pairwise (1 - cosine) between items of each list, from L2-normalised feature rows."""
    feats = sp.csr_matrix(item_features, dtype=np.float64)
    norms = np.sqrt(np.asarray(feats.multiply(feats).sum(axis=1)).ravel())
    feats = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ feats
    values = []
    for row in topk:
        items = row[row >= 0]
        m = len(items)
        if m < 2:
            continue
        f = feats[items]
        summed = np.asarray(f.sum(axis=0)).ravel()
        self_sim = np.asarray(f.multiply(f).sum(axis=1)).ravel().sum()
        mean_cos = (summed @ summed - self_sim) / (m * (m - 1))
        values.append(1.0 - mean_cos)
    return float(np.mean(values)) if values else 0.0


def per_user_metrics(topk: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Each accuracy metric at K, one value per row of ``topk``."""
    topk = np.asarray(topk)[:, :k]
    truth = sp.csr_matrix(truth)
    hits = hit_matrix(topk, truth)
    n_rel = _n_relevant(truth)
    return {
        "recall": recall_at_k(hits, n_rel),
        "ndcg": ndcg_at_k(hits, n_rel, k),
        "mrr": mrr_at_k(hits),
        "hit": hit_at_k(hits),
        "precision": precision_at_k(hits, k),
        "map": map_at_k(hits, n_rel, k),
    }


def ranking_metrics(
    topk: np.ndarray,
    truth: sp.csr_matrix,
    k: int,
    *,
    n_candidates: int | None = None,
    item_popularity: np.ndarray | None = None,
    n_train_users: int | None = None,
    item_features: sp.csr_matrix | None = None,
) -> dict[str, float]:
    """Mean accuracy metrics at K, plus coverage, novelty and diversity when their inputs are given."""
    per_user = per_user_metrics(topk, truth, k)
    out = {f"{name}@{k}": float(values.mean()) if len(values) else 0.0 for name, values in per_user.items()}
    topk = np.asarray(topk)[:, :k]
    if n_candidates is not None:
        out[f"coverage@{k}"] = item_coverage(topk, n_candidates)
    if item_popularity is not None and n_train_users is not None:
        out[f"novelty@{k}"] = novelty(topk, item_popularity, n_train_users)
    if item_features is not None:
        out[f"diversity@{k}"] = intra_list_diversity(topk, item_features)
    return out
