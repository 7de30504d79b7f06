"""Training data for the cross-encoder ranker: text views of users and labelled (user, item) pairs.

A *user view* is a short text made of the user's most recent positive items (title, genres, tags),
newest first, so that the ranker reads "who this is" before the candidate's item document. Training
pairs hold out the target item from the view (otherwise the model learns to copy the title), and
mix positives from the training interactions with hard negatives (retriever candidates the user did
not consume) and random negatives in a configurable ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError


@dataclass
class UserViewConfig:
    """How a user's history becomes text.

    ``max_items``: the most recent positive items shown; ``fields``: item fields per entry (the first
    is the title, the others go in parentheses); ``max_values``: values kept per multi-valued field;
    ``prefix``: leading words that tell the model what follows.
    """

    max_items: int = 10
    fields: list[str] = field(default_factory=lambda: ["title", "genres", "tags"])
    max_values: int = 3
    prefix: str = "Liked:"

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ConfigError(f"view.max_items must be at least 1, not {self.max_items}")


@dataclass
class PairConfig:
    """How many labelled pairs to draw.

    For each of at most ``max_users`` training users (all when 0), ``positives_per_user`` positive
    items are drawn; each positive brings ``hard_negatives`` retriever candidates the user did not
    consume and ``random_negatives`` uniformly drawn unconsumed items (both from the same user).
    """

    max_users: int = 0
    positives_per_user: int = 2
    hard_negatives: int = 2
    random_negatives: int = 1
    min_history: int = 2
    seed: int = 2026

    def __post_init__(self) -> None:
        if self.positives_per_user < 1:
            raise ConfigError("pairs.positives_per_user must be at least 1")
        if self.hard_negatives < 0 or self.random_negatives < 0:
            raise ConfigError("pairs.hard_negatives and pairs.random_negatives must be non-negative")
        if self.min_history < 2:
            raise ConfigError("pairs.min_history must be at least 2 (one target plus one item in the view)")


def _short(value: str, max_values: int) -> str:
    parts = [p.strip() for p in str(value).split("|") if p.strip()]
    return ", ".join(parts[:max_values])


class UserViews:
    """Builds user views from item indices, caching each item's short description."""

    def __init__(self, items: pd.DataFrame, config: UserViewConfig | None = None) -> None:
        self.config = config or UserViewConfig()
        fields = [f for f in self.config.fields if f in items.columns]
        if not fields:
            fields = ["item_id"]
        cols = {f: items[f].fillna("").astype(str).tolist() for f in fields}
        entries = []
        for i in range(len(items)):
            head = _short(cols[fields[0]][i], 1) or str(items["item_id"].iloc[i])
            extra = "; ".join(v for v in (_short(cols[f][i], self.config.max_values) for f in fields[1:]) if v)
            entries.append(f"{head} ({extra})" if extra else head)
        self.entries = entries

    def extend(self, items: pd.DataFrame) -> None:
        """Add descriptions for items appended to the catalogue."""
        self.entries.extend(UserViews(items, self.config).entries)

    def view(self, recent_items) -> str:
        """Text for a user whose positive items are ``recent_items`` (item indices, newest first)."""
        picked = [int(i) for i in recent_items if int(i) >= 0][: self.config.max_items]
        body = " | ".join(self.entries[i] for i in picked)
        return f"{self.config.prefix} {body}".strip() if body else f"{self.config.prefix} nothing yet".strip()


def recent_items(dataset: Dataset, max_items: int) -> np.ndarray:
    """(n_users, max_items) item indices of each user's most recent positives, newest first, -1 padded.

    Without timestamps the order is the order of the interactions in the dataset (last = newest).
    """
    n = dataset.n_users
    out = np.full((n, max_items), -1, dtype=np.int64)
    if dataset.n_interactions == 0:
        return out
    ts = dataset.timestamp.astype(np.float64)
    pos = np.arange(dataset.n_interactions, dtype=np.float64)
    # newest first: sort by user, then by timestamp descending, then by position descending
    order = np.lexsort((-pos, -ts, dataset.user_idx))
    users = dataset.user_idx[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    keep = rank < max_items
    out[users[keep], rank[keep]] = dataset.item_idx[order][keep]
    return out


def history_order(dataset: Dataset) -> list[np.ndarray]:
    """Per user, all positive item indices, newest first (unique)."""
    ts = dataset.timestamp.astype(np.float64)
    pos = np.arange(dataset.n_interactions, dtype=np.float64)
    order = np.lexsort((-pos, -ts, dataset.user_idx))
    users = dataset.user_idx[order]
    items = dataset.item_idx[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(order)]
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(dataset.n_users)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            _, first = np.unique(items[a:b], return_index=True)
            out[int(users[a])] = items[a:b][np.sort(first)].astype(np.int64)
    return out


@dataclass
class PairSet:
    """Labelled (view, item) pairs: ``views[view_idx[p]]`` is the user text of pair ``p``."""

    views: list[str]
    view_idx: np.ndarray
    item_idx: np.ndarray
    label: np.ndarray
    user_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def counts(self) -> dict[str, int]:
        return {"pairs": len(self), "positives": int(self.label.sum()), "negatives": int((self.label == 0).sum()),
                "users": len(np.unique(self.user_idx))}


def sample_pairs(
    train: Dataset,
    views: UserViews,
    config: PairConfig,
    hard_candidates: np.ndarray | None = None,
    allowed_items: np.ndarray | None = None,
) -> PairSet:
    """Draw labelled training pairs from ``train``.

    ``hard_candidates``: (n_users, N) retriever top-N item indices per user (-1 padded), from which
    hard negatives are drawn (items in the user's training history are skipped). ``allowed_items``:
    item indices random negatives may come from (default: every item with a training interaction, so
    that held-out cold items never leak into training).
    """
    rng = np.random.default_rng(config.seed)
    history = history_order(train)
    seen = train.matrix(binary=True)
    if allowed_items is None:
        allowed_items = np.flatnonzero(np.diff(sp.csc_matrix(seen).indptr) > 0)
    allowed_items = np.asarray(allowed_items, dtype=np.int64)
    users = np.array([u for u in range(train.n_users) if len(history[u]) >= config.min_history], dtype=np.int64)
    if config.max_users and len(users) > config.max_users:
        users = np.sort(rng.choice(users, config.max_users, replace=False))
    view_texts: list[str] = []
    vidx, iidx, lab, uidx = [], [], [], []
    for u in users:
        hist = history[u]
        seen_u = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
        n_pos = min(config.positives_per_user, len(hist) - 1)
        targets = rng.choice(len(hist), n_pos, replace=False)
        hard_pool = []
        if hard_candidates is not None and config.hard_negatives:
            hard_pool = [int(i) for i in hard_candidates[u] if i >= 0 and int(i) not in seen_u]
        for t in targets:
            target = int(hist[t])
            context = np.delete(hist, t)
            view_id = len(view_texts)
            view_texts.append(views.view(context))
            negs: list[int] = []
            if hard_pool:
                take = min(config.hard_negatives, len(hard_pool))
                negs.extend(int(hard_pool[j]) for j in rng.choice(len(hard_pool), take, replace=False))
            tries = 0
            n_rand = 0
            max_tries = 20 * (config.random_negatives + 1)
            while n_rand < config.random_negatives and tries < max_tries and len(allowed_items):
                tries += 1
                j = int(allowed_items[rng.integers(len(allowed_items))])
                if j in seen_u or j in negs:
                    continue
                negs.append(j)
                n_rand += 1
            for item, label in [(target, 1.0)] + [(j, 0.0) for j in negs]:
                vidx.append(view_id)
                iidx.append(item)
                lab.append(label)
                uidx.append(u)
    return PairSet(
        views=view_texts,
        view_idx=np.asarray(vidx, dtype=np.int64),
        item_idx=np.asarray(iidx, dtype=np.int64),
        label=np.asarray(lab, dtype=np.float32),
        user_idx=np.asarray(uidx, dtype=np.int64),
    )


def co_consumed_pairs(
    train: Dataset, max_pairs: int = 5000, per_item: int = 2, min_count: int = 2, seed: int = 2026
) -> np.ndarray:
    """(n, 2) item index pairs consumed by the same users, for contrastive fine-tuning.

    For each item, its ``per_item`` strongest neighbours by cosine co-occurrence (at least
    ``min_count`` shared users); at most ``max_pairs`` pairs, drawn at random when more exist.
    """
    x = sp.csr_matrix(train.matrix(binary=True).T, dtype=np.float32)  # items × users
    counts = np.asarray(x.sum(axis=1)).ravel()
    co = (x @ x.T).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    co.data[co.data < min_count] = 0
    co.eliminate_zeros()
    norm = np.sqrt(np.maximum(counts, 1))
    co = sp.diags(1 / norm) @ co @ sp.diags(1 / norm)
    co = sp.csr_matrix(co)
    pairs: list[tuple[int, int]] = []
    for i in range(co.shape[0]):
        a, b = co.indptr[i], co.indptr[i + 1]
        if a == b:
            continue
        cols, vals = co.indices[a:b], co.data[a:b]
        top = cols[np.argsort(-vals, kind="stable")[:per_item]]
        pairs.extend((i, int(j)) for j in top)
    out = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    # one direction per unordered pair
    if len(out):
        key = np.sort(out, axis=1)
        _, first = np.unique(key[:, 0] * co.shape[0] + key[:, 1], return_index=True)
        out = out[np.sort(first)]
    rng = np.random.default_rng(seed)
    if len(out) > max_pairs:
        out = out[np.sort(rng.choice(len(out), max_pairs, replace=False))]
    return out[rng.permutation(len(out))]
