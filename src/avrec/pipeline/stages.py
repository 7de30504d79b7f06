"""Stages of the retrieve → rank → re-rank pipeline, and the protocol they share.

A **candidate list batch** is a pair of (rows, n) arrays: ``candidates`` (int64 catalogue indices, each
row best first, -1 padding only at the end) and ``scores`` (float, the same shape, -inf at padding). A
:class:`Stage` maps one batch to the next with ``apply(context, candidates, scores)``; the
:class:`Context` says who the lists are for. :func:`run_stages` starts from an empty (rows, 0) batch,
so the first stage (:class:`Retrieve`) makes the lists, and cuts the result to ``context.k``.

This module holds :class:`Retrieve`, :class:`CrossEncoderRank` and :class:`Filters`; the re-ranking
stages :class:`~avrec.pipeline.rerank.Dedupe` and :class:`~avrec.pipeline.rerank.MMR` are in
:mod:`avrec.pipeline.rerank`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.eval.topk import rank_scores
from avrec.models.base import Recommender

if TYPE_CHECKING:
    from avrec.finetune.data import UserViews


@dataclass
class Context:
    """One batch of lists being made: for whom, how long, and what the caller allows.

    Exactly one of ``user_idx`` (users the model was trained on) and ``history`` (rows over the
    catalogue: the fold-in path) is set. ``histories`` are the history rows' item indices in time order,
    oldest first, when the caller knows it (else the rows' own order). ``exclude`` holds one row per list:
    items never to list. ``candidates`` restricts the lists to those item indices (None: all).
    """

    k: int
    user_idx: np.ndarray | None = None
    history: sp.csr_matrix | None = None
    histories: list[np.ndarray] | None = None
    exclude: sp.csr_matrix | None = None
    candidates: np.ndarray | None = None

    @property
    def rows(self) -> int:
        if self.user_idx is not None:
            return len(self.user_idx)
        assert self.history is not None  # exactly one of user_idx and history is set
        return self.history.shape[0]

    def history_lists(self) -> list[np.ndarray]:
        """Each fold-in user's item indices, oldest first."""
        if self.histories is not None:
            return self.histories
        h = self.history
        assert h is not None
        return [h.indices[h.indptr[r]:h.indptr[r + 1]] for r in range(h.shape[0])]


@runtime_checkable
class Stage(Protocol):
    """One step over a candidate list batch: ``apply(context, candidates, scores) -> (candidates, scores)``.

    A stage may reorder, drop (compacting rows: padding stays at the end) or add entries, and rescore
    them; it must keep one row per list. Scores are whatever the next stage should read as relevance.
    """

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def empty_lists(rows: int, width: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, width), -1, dtype=np.int64), np.full((rows, width), -np.inf, dtype=np.float64)


def finish(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` entries of each list, padded; scores as float32 that never increase down a list."""
    out_i, out_v = empty_lists(len(candidates), k)
    m = min(k, candidates.shape[1])
    out_i[:, :m] = candidates[:, :m]
    out_v[:, :m] = np.where(candidates[:, :m] >= 0, scores[:, :m], -np.inf)
    return out_i, np.minimum.accumulate(out_v, axis=1).astype(np.float32)


def run_stages(stages: Sequence[Stage], ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``stages`` in order to an empty batch of ``ctx.rows`` lists; the top ``ctx.k`` of each."""
    candidates, scores = empty_lists(ctx.rows)
    for stage in stages:
        candidates, scores = stage.apply(ctx, candidates, scores)
    return finish(candidates, scores, ctx.k)


def compact(candidates: np.ndarray, scores: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the entries where ``keep`` is False, keeping the order of the rest (padding moves to the end)."""
    keep = keep & (candidates >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")
    c = np.take_along_axis(np.where(keep, candidates, -1), order, axis=1)
    s = np.take_along_axis(np.where(keep, scores, -np.inf), order, axis=1)
    return c, s


# ---- filters ------------------------------------------------------------------------------------------
@dataclass
class Filters:
    """Business rules: a media-type allow-list, blocked item ids and content ``rules`` (a
    :class:`avrec.pipeline.rules.RuleSet`: blocked or allowed values of any column, region availability).

    :class:`Retrieve` retrieves only allowed items (``allowed``), so lists stay full; as a stage,
    ``apply`` drops any disallowed entry a later stage (an exploration policy, say) may have brought in.
    """

    items: pd.DataFrame
    media_types: Sequence[str] = ()
    blocked_items: Sequence[str] = ()
    rules: Any = None

    @property
    def active(self) -> bool:
        return bool(self.media_types) or bool(self.blocked_items) or (self.rules is not None and self.rules.active)

    @cached_property
    def mask(self) -> np.ndarray:
        """Boolean mask over the catalogue of the items the rules allow."""
        items = self.items
        mask = np.ones(len(items), dtype=bool)
        if self.media_types:
            if "media_type" in items.columns:
                wanted = {m.strip().lower() for m in self.media_types}
                mask &= items["media_type"].astype(str).str.strip().str.lower().isin(wanted).to_numpy()
            else:
                mask[:] = False
        if self.blocked_items:
            mask &= ~items["item_id"].astype(str).isin(set(map(str, self.blocked_items))).to_numpy()
        if self.rules is not None and self.rules.active:
            mask &= self.rules.mask(items, "pipeline.rules")
        return mask

    def allowed(self, candidates: np.ndarray | None) -> np.ndarray | None:
        """``candidates`` (item indices; None: all) less what the rules exclude; None when nothing is excluded."""
        if not self.active:
            return candidates
        mask = self.mask.copy()
        if candidates is not None:
            keep = np.zeros(len(mask), dtype=bool)
            keep[np.asarray(candidates, dtype=np.int64)] = True
            mask &= keep
        return np.flatnonzero(mask).astype(np.int64)

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.active:
            return candidates, scores
        mask = self.mask
        inside = (candidates >= 0) & (candidates < len(mask))  # an index the catalogue lacks is never allowed
        return compact(candidates, scores, np.where(inside, mask[np.clip(candidates, 0, len(mask) - 1)], False))


# ---- retrieve ------------------------------------------------------------------------------------------
@dataclass
class Retrieve:
    """The retriever's top ``max(k, n)`` for each list through the model contract (``topk_indices`` for
    known users, ``score_histories`` for fold-in), restricted to what ``filters`` allow. Incoming lists
    are ignored: this stage starts them."""

    retriever: Recommender
    n: int
    filters: Filters | None = None

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width = max(ctx.k, self.n)
        allowed = self.filters.allowed(ctx.candidates) if self.filters is not None else ctx.candidates
        if allowed is not None and len(allowed) == 0:
            return empty_lists(ctx.rows, width)
        if ctx.user_idx is not None:
            return self.retriever.topk_indices(ctx.user_idx, width, exclude=ctx.exclude, candidates=allowed)
        return rank_scores(self.retriever.score_histories(ctx.history, allowed), width, ctx.exclude, allowed)


# ---- rank ---------------------------------------------------------------------------------------------
def standardise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-row z-scores over the valid entries (0 where invalid or constant)."""
    x = np.where(valid, x, 0.0).astype(np.float64)
    n = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = x.sum(axis=1, keepdims=True) / n
    var = (np.where(valid, (x - mean) ** 2, 0.0)).sum(axis=1, keepdims=True) / n
    std = np.sqrt(var)
    return np.where(valid & (std > 1e-12), (x - mean) / np.where(std > 1e-12, std, 1), 0.0)


def blend(candidates: np.ndarray, retriever_scores: np.ndarray, ranker_scores: np.ndarray, w: float) -> np.ndarray:
    """``(1 - w)·z(retriever) + w·z(ranker)``, both standardised per list; -inf at padding."""
    valid = (candidates >= 0) & np.isfinite(retriever_scores)
    z = (1 - w) * standardise(retriever_scores, valid)
    if w > 0:
        z = z + w * standardise(ranker_scores, valid & np.isfinite(ranker_scores))
    return np.where(candidates >= 0, z, -np.inf)


def tail_scores(head_relevance: np.ndarray, head_retriever: np.ndarray, tail: np.ndarray,
                tail_retriever: np.ndarray) -> np.ndarray:
    """Scores for the entries beyond the ranked head of one list: below the lowest head score, falling
    with the retriever's score in units of the head's retriever-score spread."""
    out = np.full(len(tail), -np.inf)
    ok = tail >= 0
    if not ok.any():
        return out
    valid = np.isfinite(head_relevance)
    low = float(head_relevance[valid].min()) if valid.any() else 0.0
    ts = tail_retriever[ok].astype(np.float64)
    finite_head = np.isfinite(head_retriever)
    if finite_head.any():
        spread = np.std(head_retriever[finite_head]) or 1.0
        fill = np.nanmin(ts[np.isfinite(ts)]) if np.isfinite(ts).any() else 0.0
        ts = np.where(np.isfinite(ts), ts, fill)
        drop = (ts[0] - ts) / spread
    else:
        drop = np.arange(ok.sum(), dtype=np.float64)
    out[ok] = low - 1.0 - drop
    return out


class RankerInputs:
    """The cross-encoder's two sides for one catalogue: item documents, given to the ranker on first use
    (on the GPU when there is one), and text views of users' recent items (``recent``: one row per
    known user, newest first)."""

    def __init__(self, ranker: Any, items: pd.DataFrame, view_config: Any, recent: np.ndarray | None) -> None:
        self.ranker, self.items, self.view_config, self.recent = ranker, items, view_config, recent
        self._views: UserViews | None = None

    def views(self) -> UserViews:
        if self._views is None:
            import torch

            from avrec.data.documents import build_documents
            from avrec.finetune.data import UserViews

            if torch.cuda.is_available() and self.ranker.device.type != "cuda":
                self.ranker.to("cuda")  # scoring runs under autocast there
            self.ranker.set_items(build_documents(self.items))
            self._views = UserViews(self.items, self.view_config)
        return self._views

    def user_texts(self, ctx: Context) -> list[str]:
        views = self.views()
        if ctx.user_idx is not None:
            assert self.recent is not None  # known users come with their recent items
            return [views.view(self.recent[u]) for u in ctx.user_idx]
        return [views.view(np.asarray(h, dtype=np.int64)[::-1]) for h in ctx.history_lists()]


@dataclass
class CrossEncoderRank:
    """Rank the first ``depth`` entries of each list by the blend of the incoming (retriever) scores and
    the fine-tuned cross-encoder's logits (:mod:`avrec.finetune.ranker`) with weight ``weight``; entries
    beyond ``depth`` keep the retriever's order, scored below the ranked head (:func:`tail_scores`).
    Weight 0 never runs the cross-encoder and gives the retriever's order."""

    inputs: RankerInputs
    weight: float
    depth: int

    def logits(self, ctx: Context, candidates: np.ndarray) -> np.ndarray:
        """Cross-encoder logits for every valid entry of ``candidates``; -inf at padding."""
        from avrec.finetune.ranker_training import score_lists

        texts = self.inputs.user_texts(ctx)
        return score_lists(self.inputs.ranker, texts, candidates)

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        head = candidates[:, : self.depth]
        logits = self.logits(ctx, head) if self.weight > 0 else np.zeros(head.shape, np.float32)
        return self.order(candidates, scores, logits, self.weight)

    def order(self, candidates: np.ndarray, scores: np.ndarray, logits: np.ndarray,
              weight: float) -> tuple[np.ndarray, np.ndarray]:
        """The ranked lists given the head's ``logits`` (so tuning scores the cross-encoder once)."""
        n_head = min(self.depth, candidates.shape[1])
        head = candidates[:, :n_head]
        rel = blend(head, scores[:, :n_head], logits[:, :n_head], weight)
        order = np.argsort(-rel, axis=1, kind="stable")
        out_c = np.array(candidates, dtype=np.int64, copy=True)
        out_s = np.full(candidates.shape, -np.inf, dtype=np.float64)
        out_c[:, :n_head] = np.take_along_axis(head, order, axis=1)
        out_s[:, :n_head] = np.take_along_axis(rel, order, axis=1)
        if candidates.shape[1] > n_head:
            for r in range(len(candidates)):
                out_s[r, n_head:] = tail_scores(out_s[r, :n_head], scores[r, :n_head], candidates[r, n_head:],
                                                scores[r, n_head:])
        return out_c, out_s
