"""Re-ranking stages over candidate lists: :class:`MMR` (diversity) and :class:`Dedupe` (one entry per
title and year), with the item-side data they read (:func:`dedupe_keys`, :func:`mmr_vectors`).

Both follow the :class:`~avrec.pipeline.stages.Stage` protocol; :class:`~avrec.pipeline.stages.Filters`
is the third re-ranking stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.models.base import Recommender
from avrec.pipeline.stages import Context


def mmr_select(cands: np.ndarray, relevance: np.ndarray, vectors: np.ndarray | None, k: int, lam: float,
               dup_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximal marginal relevance over one candidate list.

    score(i) = lam * relevance(i) - (1 - lam) * max_{j selected} cos(v_i, v_j); relevance is
    standardised. Entries with an already-selected ``dup_keys`` value are dropped. Returns (items,
    relevance of each pick) for up to ``k`` picks, -1 / -inf padded.
    """
    ok = cands >= 0
    items, rel = cands[ok], relevance[ok].astype(np.float64)
    keys = dup_keys[items] if dup_keys is not None else None
    out_i = np.full(k, -1, dtype=np.int64)
    out_s = np.full(k, -np.inf, dtype=np.float32)
    if not len(items):
        return out_i, out_s
    use_mmr = lam < 1 and vectors is not None
    sims = None
    if use_mmr and vectors is not None:
        v = vectors[items]
        v = np.asarray(v.toarray() if sp.issparse(v) else v, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(norms > 0, norms, 1)
        sims = v @ v.T
    max_sim = np.zeros(len(items))
    alive = np.ones(len(items), dtype=bool)
    used_keys: set = set()
    n = 0
    while n < k and alive.any():
        score = lam * rel - (1 - lam) * max_sim if use_mmr else rel.copy()
        score[~alive] = -np.inf
        j = int(np.argmax(score))
        alive[j] = False
        if keys is not None:
            if keys[j] in used_keys:
                continue
            used_keys.add(keys[j])
        out_i[n], out_s[n] = items[j], rel[j]
        n += 1
        if sims is not None:  # use_mmr
            max_sim = np.maximum(max_sim, sims[j])
    return out_i, out_s


@dataclass
class MMR:
    """Reorder the first ``depth`` entries of each list by maximal marginal relevance with ``lam``
    (1: keep the order), cosine on ``vectors()`` (item vectors, dense or sparse; None: keep the order).
    The head's scores become non-increasing; entries beyond ``depth`` stay where they are."""

    lam: float
    depth: int
    vectors: Callable[[], Any]

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.lam >= 1:
            return candidates, scores
        vectors = self.vectors()
        if vectors is None:
            return candidates, scores
        n_head = min(self.depth, candidates.shape[1])
        out_c = np.array(candidates, dtype=np.int64, copy=True)
        out_s = np.array(scores, dtype=np.float64, copy=True)
        for r in range(len(candidates)):
            head_i, head_v = mmr_select(candidates[r, :n_head], scores[r, :n_head], vectors, n_head, self.lam)
            ok = head_i >= 0
            out_c[r, :n_head] = head_i
            out_s[r, :n_head] = -np.inf
            if ok.any():
                out_s[r, : ok.sum()] = np.minimum.accumulate(head_v[ok].astype(np.float64))
        return out_c, out_s


@dataclass
class Dedupe:
    """Move repeats of an already listed key (``keys``: one per catalogue item, e.g. normalised title and
    year) below every distinct entry, keeping the order within each group; repeats are scored below the
    last distinct entry."""

    keys: np.ndarray

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_c = np.full(candidates.shape, -1, dtype=np.int64)
        out_s = np.full(candidates.shape, -np.inf, dtype=np.float64)
        keys = self.keys
        for r in range(len(candidates)):
            first: list[tuple[int, float]] = []
            repeats: list[int] = []
            used: set = set()
            for it, v in zip(candidates[r], scores[r]):
                if it < 0:
                    continue
                if keys[it] in used:
                    repeats.append(int(it))
                else:
                    first.append((int(it), float(v)))
                used.add(keys[it])
            low = first[-1][1] if first else 0.0
            items = [it for it, _ in first] + repeats
            values = [v for _, v in first] + [low - 1.0 - j for j in range(len(repeats))]
            out_c[r, : len(items)] = items
            out_s[r, : len(items)] = values
        return out_c, out_s


def dedupe_keys(items: pd.DataFrame, fields: list[str]) -> np.ndarray:
    """One key per item: its normalised ``fields`` (lower case, punctuation as spaces) joined; an item
    with none of them filled (or a catalogue without the fields) keys on its own id."""
    ids = items["item_id"].astype(str).to_numpy(dtype=object)
    fields = [f for f in fields if f in items.columns]
    if not fields:
        return ids
    norm = [items[f].astype(str).str.lower().map(lambda s: re.sub(r"\W+", " ", s).strip()) for f in fields]
    keys = norm[0]
    for extra in norm[1:]:
        keys = keys + "\x1f" + extra
    empty = (keys.str.replace("\x1f", "", regex=False).str.strip() == "").to_numpy()
    arr = keys.to_numpy(dtype=object)
    arr[empty] = ids[empty]
    return arr


def mmr_vectors(retriever: Recommender, items: pd.DataFrame, mode: str = "auto"):
    """Item vectors for MMR: the retriever's (``auto``: when at most 2048 wide), else metadata tokens
    (genres, tags: :func:`avrec.eval.evaluate.item_feature_matrix`) as a sparse matrix."""
    if mode in ("auto", "retriever"):
        v = retriever.item_vectors()
        if v is not None and (mode == "retriever" or np.shape(v)[1] <= 2048):
            return np.asarray(v, dtype=np.float32)
    from avrec.data.dataset import Dataset
    from avrec.eval.evaluate import item_feature_matrix

    holder = Dataset(items=items, user_ids=np.zeros(0), user_idx=np.zeros(0), item_idx=np.zeros(0),
                     weight=np.zeros(0), timestamp=np.zeros(0))
    feats = item_feature_matrix(holder)
    return sp.csr_matrix(feats, dtype=np.float32) if feats.shape[0] == len(items) else None
