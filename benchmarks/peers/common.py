"""File protocol shared by every peer runner (imported from each peer's own virtual environment).

Needs only numpy, scipy and pandas, so RecBole's, LightFM's and Cornac's environments can use it without
avrec. A runner reads one split folder written by ``avrec.data.splits.Split.save`` (items.csv,
train/valid/test.csv, meta.json), fits its model on ``train.csv`` and writes, for every variant
(hyper-parameter setting) it tried, ``<out>/<label>/valid.csv`` and ``test.csv`` with the columns
``user_id,item_id,rank,score``. ``peers.py`` scores those files with avrec's metric code, picks the variant
with the best validation NDCG@10 and reports its test numbers.

Lists are cleaned here the way avrec cleans its own: the items a user saw in train (and in validation, for
the test lists) are excluded, and on the cold-item protocol only the held-out candidates are ranked.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class SplitFiles:
    """One split in index space: users and items are numbered over the whole split."""

    folder: Path
    items: pd.DataFrame
    item_ids: np.ndarray
    user_ids: np.ndarray
    frames: dict[str, pd.DataFrame]
    meta: dict
    item_index: dict[str, int] = field(repr=False)
    user_index: dict[str, int] = field(repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def protocol(self) -> str:
        return self.meta.get("protocol", "warm")

    def indices(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user index, item index, weight) arrays of one part."""
        f = self.frames[part]
        u = f["user_id"].map(self.user_index).to_numpy(np.int64)
        i = f["item_id"].map(self.item_index).to_numpy(np.int64)
        w = f["weight"].to_numpy(np.float32) if "weight" in f else np.ones(len(f), np.float32)
        return u, i, w

    def matrix(self, part: str = "train", binary: bool = False) -> sp.csr_matrix:
        """User × item matrix of one part (weights summed; ones when ``binary``)."""
        u, i, w = self.indices(part)
        data = np.ones_like(w) if binary else w
        m = sp.csr_matrix((data, (u, i)), shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        return m

    def eval_users(self, part: str) -> np.ndarray:
        """Users with at least one interaction in ``part`` (the users the metrics are computed for)."""
        u, _, _ = self.indices(part)
        return np.unique(u)

    def exclude(self, part: str) -> sp.csr_matrix:
        """Items not to recommend when scoring ``part``: train, plus validation for test."""
        m = self.matrix("train", binary=True)
        if part == "test":
            m = m + self.matrix("valid", binary=True)
        return m.tocsr()

    def candidates(self, part: str) -> np.ndarray | None:
        """Item indices ranked on the cold-item protocol, None for full ranking."""
        ids = self.meta.get(f"{part}_candidates")
        if ids is None:
            return None
        return np.array([self.item_index[str(i)] for i in ids], dtype=np.int64)


def load_split(folder: str | Path) -> SplitFiles:
    """Read a split folder; item order follows items.csv, users are numbered in order of appearance."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
    frames = {
        p: pd.read_csv(folder / f"{p}.csv", dtype={"user_id": str, "item_id": str}) for p in ("train", "valid", "test")
    }
    item_ids = items["item_id"].to_numpy(dtype=object)
    users = pd.unique(pd.concat([frames[p]["user_id"] for p in ("train", "valid", "test")], ignore_index=True))
    user_ids = np.asarray(users, dtype=object)
    return SplitFiles(
        folder=folder, items=items, item_ids=item_ids, user_ids=user_ids, frames=frames, meta=meta,
        item_index={v: i for i, v in enumerate(item_ids)}, user_index={v: u for u, v in enumerate(user_ids)},
    )


def rank(
    split: SplitFiles, part: str, score_fn: Callable[[np.ndarray], np.ndarray], k: int = 20, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, top item indices (n, k), their scores) for every evaluated user of ``part``.

    ``score_fn(user_indices)`` returns a dense (n_users_batch, n_items) score array over the whole
    catalogue; seen items are masked and, on the cold protocol, only candidates are kept.
    """
    users = split.eval_users(part)
    exclude = split.exclude(part)
    cands = split.candidates(part)
    tops, vals = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.asarray(score_fn(batch), dtype=np.float64)
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(batch), split.n_items)}")
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        ex = exclude[batch].tocoo()
        scores[ex.row, ex.col] = -np.inf
        pool = np.arange(split.n_items) if cands is None else cands
        sub = scores[:, pool]
        kk = min(k, sub.shape[1])
        top = np.argpartition(-sub, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(sub, top, 1), axis=1, kind="stable")
        top = pool[np.take_along_axis(top, order, 1)]
        tops.append(top)
        vals.append(np.take_along_axis(scores, top, 1))
    return users, np.vstack(tops), np.vstack(vals)


def quick_ndcg(split: SplitFiles, part: str, users: np.ndarray, top: np.ndarray, k: int = 10) -> float:
    """Mean binary NDCG@k of ranked lists: only for a runner's own early stopping.

    The reported numbers (and the final choice among variants) come from avrec's metric code in peers.py.
    """
    truth = split.matrix(part, binary=True).tocsr()
    total = 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for r, u in enumerate(users):
        rel = set(truth.indices[truth.indptr[u] : truth.indptr[u + 1]].tolist())
        gains = np.array([1.0 if i in rel else 0.0 for i in top[r, :k]])
        ideal = discounts[: min(len(rel), k)].sum()
        total += float(gains @ discounts[: len(gains)]) / ideal if ideal else 0.0
    return total / max(len(users), 1)


def write_topk(
    split: SplitFiles, part: str, score_fn: Callable[[np.ndarray], np.ndarray], path: str | Path, k: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Write the top-``k`` list of every evaluated user of ``part`` to ``path`` (CSV); returns (users, top)."""
    users, top, vals = rank(split, part, score_fn, k)
    rows = [
        (split.user_ids[u], split.item_ids[i], rank_ + 1, float(s))
        for r, u in enumerate(users)
        for rank_, (i, s) in enumerate(zip(top[r], vals[r]))
        if np.isfinite(s)
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "rank", "score"]).to_csv(path, index=False)
    return users, top


class VariantWriter:
    """Collects one runner's variants: for each, writes valid/test lists and records params and fit time."""

    def __init__(self, split: SplitFiles, out: str | Path, library: str, version: str, k: int = 20) -> None:
        self.split, self.out, self.k = split, Path(out), k
        self.out.mkdir(parents=True, exist_ok=True)
        self.info: dict = {"library": library, "version": version, "variants": [], "errors": []}
        self._t0 = time.perf_counter()

    def add(self, label: str, params: dict, fit_s: float, score_fn: Callable[[np.ndarray], np.ndarray]) -> float:
        """Write ``label``'s lists for both parts from ``score_fn`` and record it; returns the quick valid NDCG@10."""
        t = time.perf_counter()
        ranked = {part: write_topk(self.split, part, score_fn, self.out / label / f"{part}.csv", k=self.k) for part in ("valid", "test")}
        self.info["variants"].append(
            {"label": label, "params": params, "fit_s": round(fit_s, 3), "predict_s": round(time.perf_counter() - t, 3)}
        )
        self.save()
        return quick_ndcg(self.split, "valid", *ranked["valid"])

    def add_lists(self, label: str, params: dict, fit_s: float, lists: dict[str, pd.DataFrame], predict_s: float = 0.0) -> None:
        """Record a variant whose lists the runner built itself (columns user_id, item_id, rank, score)."""
        for part, frame in lists.items():
            path = self.out / label / f"{part}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
        self.info["variants"].append(
            {"label": label, "params": params, "fit_s": round(fit_s, 3), "predict_s": round(predict_s, 3)}
        )
        self.save()

    def error(self, label: str, message: str) -> None:
        self.info["errors"].append({"label": label, "error": message})
        self.save()

    def save(self) -> None:
        self.info["wall_s"] = round(time.perf_counter() - self._t0, 3)
        (self.out / "info.json").write_text(json.dumps(self.info, indent=1))


def runner_args(description: str) -> argparse.Namespace:
    """The command line every runner accepts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--split", required=True, help="split folder written by Split.save")
    p.add_argument("--out", required=True, help="output folder for <variant>/{valid,test}.csv and info.json")
    p.add_argument("--model", required=True, help="model name within this runner")
    p.add_argument("--quick", action="store_true", help="fewer epochs and a smaller search (smoke run)")
    p.add_argument("--max-epochs", type=int, default=0, help="cap on training epochs (0: the runner's own budget)")
    p.add_argument("--k", type=int, default=20, help="list length written (the metrics use the first 10)")
    p.add_argument("--threads", type=int, default=1, help="threads (1: the shared benchmark machine is oversubscribed)")
    return p.parse_args()


def params_label(params: dict) -> str:
    """A short folder-safe label from a parameter dict."""
    return "_".join(f"{k}={v}" for k, v in params.items()).replace("/", "-").replace(" ", "")
