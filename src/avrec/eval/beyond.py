"""Beyond-accuracy metrics: exposure, popularity bias, calibration and provider-group exposure.

Every metric here is computed over the **pooled** top-K lists of all evaluated users (one exposure count
per item over every list), never per list, where a Gini index would be trivially 0. Inputs are the same
as :mod:`avrec.eval.metrics`: ``topk`` (users × K item indices, best first, -1 padding), plus the training
data (``popularity``: training users per item; ``history``: users × items training rows). Formulas are in
the README (*Beyond-accuracy metrics*); ``tests/test_beyond.py`` checks them on hand-computed cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.errors import ConfigError

#: item columns whose values are "providers" when present (any other column can be named)
DEFAULT_GROUP_COLUMNS = ("artist", "director", "country", "language", "media_type")


@dataclass
class BeyondConfig:
    """``tail_share``: the long tail is this share of the catalogue with the fewest training users (0.8:
    the bottom 80%); ``calibration_field``: the multi-valued column whose mix calibration compares
    (``genres``); ``alpha``: Steck's smoothing of the list's mix; ``group_columns``: provider columns whose
    exposure is reported (those present); ``top_groups``: how many groups per column the details list."""

    tail_share: float = 0.8
    calibration_field: str = "genres"
    alpha: float = 0.01
    group_columns: list[str] = field(default_factory=lambda: list(DEFAULT_GROUP_COLUMNS))
    top_groups: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.tail_share < 1:
            raise ConfigError(f"eval tail_share must be between 0 and 1 (exclusive), not {self.tail_share}")
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"eval alpha must be in [0, 1), not {self.alpha}")
        if self.top_groups < 1:
            raise ConfigError(f"eval top_groups must be at least 1, not {self.top_groups}")


# ---- exposure ----------------------------------------------------------------------------------------
def exposure_counts(topk: np.ndarray, n_items: int) -> np.ndarray:
    """How many lists show each item (pooled over every row of ``topk``)."""
    items = np.asarray(topk)
    items = items[items >= 0]
    return np.bincount(items, minlength=n_items).astype(np.float64)


def gini_index(counts: np.ndarray) -> float:
    """Gini of a non-negative exposure vector: Σ_j (2j − n − 1)·c_(j) / (n·Σ c), c sorted ascending, j = 1..n.

    0 when every item is shown equally often, (n − 1)/n when one item takes every slot; 0 for no exposure.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(c), c.sum()
    if n == 0 or total <= 0:
        return 0.0
    j = np.arange(1, n + 1)
    return float(((2 * j - n - 1) * c).sum() / (n * total))


def lorenz_curve(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of items, share of exposure) points from the least to the most shown item, from (0, 0)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    total = c.sum()
    x = np.linspace(0.0, 1.0, len(c) + 1)
    y = np.r_[0.0, np.cumsum(c) / total] if total > 0 else x.copy()
    return x, y


# ---- popularity bias ------------------------------------------------------------------------------------
def long_tail_mask(popularity: np.ndarray, tail_share: float = 0.8) -> np.ndarray:
    """True for the long tail: all but the ⌈(1 − tail_share)·n⌉ items with the most training users
    (ties broken by catalogue order, so the head has exactly that many items)."""
    pop = np.asarray(popularity, dtype=np.float64)
    n_head = int(np.ceil((1.0 - tail_share) * len(pop) - 1e-9))
    order = np.argsort(-pop, kind="stable")
    tail = np.ones(len(pop), dtype=bool)
    tail[order[:n_head]] = False
    return tail


def long_tail_share(topk: np.ndarray, tail: np.ndarray) -> float:
    """Share of all listed slots (pooled) that hold a long-tail item."""
    items = np.asarray(topk)
    items = items[items >= 0]
    return float(tail[items].mean()) if len(items) else 0.0


def _row_means(topk: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the mean of ``values`` over the row's listed items, and whether the row lists any."""
    topk = np.asarray(topk)
    valid = topk >= 0
    v = np.where(valid, values[np.maximum(topk, 0)], 0.0)
    n = valid.sum(axis=1)
    return v.sum(axis=1) / np.maximum(n, 1), n > 0


def average_popularity(topk: np.ndarray, popularity: np.ndarray) -> float:
    """ARP: the mean over lists of the mean training popularity (users per item) of the listed items."""
    means, ok = _row_means(topk, np.asarray(popularity, dtype=np.float64))
    return float(means[ok].mean()) if ok.any() else 0.0


def history_popularity(history: sp.csr_matrix, popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user: the mean training popularity of the items in their history, and whether they have one."""
    h = sp.csr_matrix(history, dtype=np.float64)
    h.data[:] = 1.0
    n = np.asarray(h.sum(axis=1)).ravel()
    sums = h @ np.asarray(popularity, dtype=np.float64)
    return sums / np.maximum(n, 1), n > 0


def popularity_lift(topk: np.ndarray, history: sp.csr_matrix, popularity: np.ndarray) -> float:
    """(GAP(lists) − GAP(histories)) / GAP(histories), GAP: the mean over users of the mean training
    popularity of their items; over users with both a list and a history. > 0: lists more popular than
    what those users consume."""
    rec, ok_r = _row_means(topk, np.asarray(popularity, dtype=np.float64))
    hist, ok_h = history_popularity(history, popularity)
    ok = ok_r & ok_h
    if not ok.any() or hist[ok].mean() <= 0:
        return 0.0
    return float((rec[ok].mean() - hist[ok].mean()) / hist[ok].mean())


# ---- calibration ------------------------------------------------------------------------------------------
def value_matrix(items: pd.DataFrame, column: str) -> tuple[sp.csr_matrix, list[str]]:
    """Binary item × value matrix of a multi-valued (``|``-separated) column, and the value names."""
    if column not in items.columns:
        return sp.csr_matrix((len(items), 0), dtype=np.float64), []
    rows: list[int] = []
    cols: list[int] = []
    vocab: dict[str, int] = {}
    for i, raw in enumerate(items[column].fillna("").astype(str)):
        for v in raw.split("|"):
            v = v.strip()
            if v:
                rows.append(i)
                cols.append(vocab.setdefault(v, len(vocab)))
    m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(items), len(vocab)), dtype=np.float64)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m, list(vocab)


def item_distributions(values: sp.csr_matrix) -> sp.csr_matrix:
    """p(g | i): each item's values weighted 1/|values of i| (rows of items without values stay 0)."""
    n = np.asarray(values.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.where(n > 0, n, 1.0)) @ values)


def user_mix(rows: sp.csr_matrix, item_dist: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (users × items) weight matrix: Σ_i w(u,i)·p(g|i) / Σ_i w(u,i) over items with values,
    and whether the row has any such item."""
    mass = np.asarray(sp.csr_matrix(rows @ item_dist).toarray())
    total = mass.sum(axis=1, keepdims=True)
    return mass / np.where(total > 0, total, 1.0), total.ravel() > 0


def kl_miscalibration(p: np.ndarray, q: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """Steck's C_KL(p, q) = Σ_g p(g|u) log(p(g|u) / q̃(g|u)), q̃ = (1 − α)·q + α·p; one value per row."""
    q_tilde = (1 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / np.where(q_tilde > 0, q_tilde, 1.0)), 0.0)
    return terms.sum(axis=1)


def list_matrix(topk: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Users × items, 1 for every listed item (uniform weights over the list, as the metric uses)."""
    topk = np.asarray(topk)
    r, c = np.nonzero(topk >= 0)
    return sp.csr_matrix((np.ones(len(r)), (r, topk[r, c])), shape=(len(topk), n_items))


def miscalibration(topk: np.ndarray, history: sp.csr_matrix, item_dist: sp.csr_matrix,
                   alpha: float = 0.01) -> tuple[float, np.ndarray]:
    """Mean C_KL over users whose history and list both carry the column's values; also the per-user values
    (NaN for users left out)."""
    h = sp.csr_matrix(history, dtype=np.float64)
    h.data[:] = 1.0
    p, ok_p = user_mix(h, item_dist)
    q, ok_q = user_mix(list_matrix(topk, item_dist.shape[0]), item_dist)
    ok = ok_p & ok_q
    per_user = np.full(len(ok), np.nan)
    if ok.any():
        per_user[ok] = kl_miscalibration(p[ok], q[ok], alpha)
    return (float(np.nanmean(per_user)) if ok.any() else 0.0), per_user


# ---- provider groups ---------------------------------------------------------------------------------------
def group_exposure(topk: np.ndarray, values: sp.csr_matrix, names: Sequence[str],
                   train_counts: np.ndarray, top: int = 20) -> dict[str, Any]:
    """Exposure per value of one provider column: each listed slot is split equally among its item's
    values. Returns the Gini of exposure over all the column's values, the number of groups, and the
    ``top`` most exposed groups with their share of slots and of training interactions."""
    dist = item_distributions(values)
    shown = exposure_counts(topk, values.shape[0])
    rec = np.asarray(dist.T @ shown).ravel()
    train = np.asarray(dist.T @ np.asarray(train_counts, dtype=np.float64)).ravel()
    rec_share = rec / rec.sum() if rec.sum() > 0 else rec
    train_share = train / train.sum() if train.sum() > 0 else train
    order = np.argsort(-rec_share, kind="stable")[:top]
    return {
        "gini": gini_index(rec),
        "groups": len(names),
        "groups_shown": int((rec > 0).sum()),
        "top": [{"group": names[g], "share": float(rec_share[g]), "train_share": float(train_share[g])}
                for g in order],
    }


# ---- everything at once ---------------------------------------------------------------------------------------
BEYOND_KEYS = ("gini", "tail", "arp", "poplift", "miscal")


def beyond_accuracy(topk: np.ndarray, k: int, *, items: pd.DataFrame, history: sp.csr_matrix,
                    popularity: np.ndarray, candidates: np.ndarray | None = None,
                    config: BeyondConfig | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The scalar beyond-accuracy metrics at K (keys ``gini@K``, ``tail@K``, ``arp@K``, ``poplift@K``,
    ``miscal@K`` and ``exposure_gini[COLUMN]@K`` per provider column), and the per-group details.

    ``history``: the evaluated users' training rows (the same rows as ``topk``); ``candidates``: the
    rankable items (None: the whole catalogue), over which exposure and Gini are counted.
    """
    cfg = config or BeyondConfig()
    topk = np.asarray(topk)[:, :k]
    n_items = len(items)
    popularity = np.asarray(popularity, dtype=np.float64)
    counts = exposure_counts(topk, n_items)
    pool = np.arange(n_items) if candidates is None else np.asarray(candidates, dtype=np.int64)
    out = {
        f"gini@{k}": gini_index(counts[pool]),
        f"tail@{k}": long_tail_share(topk, long_tail_mask(popularity, cfg.tail_share)),
        f"arp@{k}": average_popularity(topk, popularity),
        f"poplift@{k}": popularity_lift(topk, history, popularity),
    }
    values, _ = value_matrix(items, cfg.calibration_field)
    if values.shape[1]:
        out[f"miscal@{k}"], _ = miscalibration(topk, history, item_distributions(values), cfg.alpha)
    details: dict[str, Any] = {}
    for column in cfg.group_columns:
        values, names = value_matrix(items, column)
        if not names:
            continue
        g = group_exposure(topk, values, names, popularity, cfg.top_groups)
        out[f"exposure_gini[{column}]@{k}"] = g["gini"]
        details[column] = g
    return out, details
