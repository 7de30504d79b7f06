"""The candidates of one /recommend list: the model's top for a user (feedback folded in) or the popular
list, among the items the content rules allow. :class:`~avrec.serve.pools.PoolCache` keeps them per user.
"""

from __future__ import annotations

import numpy as np

from avrec.serve.pools import Pool
from avrec.serve.rerank import ServeReranker
from avrec.serve.rules import RuleView
from avrec.serve.state import ModelState
from avrec.serve.updates import UserProfile


def fold_in(state: ModelState, history: list[str], k: int,
            candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k indices for one user given as item ids (the history's items excluded)."""
    return state.model.topk_histories(state.model.history_matrix([history]), k, candidates=candidates)


def build_pool(state: ModelState, user_id: str, p: UserProfile, reranker: ServeReranker, view: RuleView,
               width: int) -> Pool:
    """The ``width`` best allowed candidates for ``user_id`` (profile ``p``): the model's list for a known
    user, folded in with positive feedback, or the popular list; negative feedback and the history left out."""
    cand = view.model_candidates()
    model, n = state.model, width + len(p.negative)
    if p.has_feedback:
        idx, scores = fold_in(state, p.history, reranker.width(n), cand)
        idx, scores = reranker.apply(model, idx, scores, n, lambda: model.history_matrix([p.history]))
    elif p.known:
        return known_pools(state, [model.user_index[user_id]], reranker, view, width, p.negative)[0]
    else:
        idx, scores = model.popular_topk(1, n, candidates=cand)
    items = state.scored_items(state.ids_of(idx)[0], scores[0], width, exclude=p.negative | set(p.history))
    return Pool(items, p.history, not p.known and not p.has_feedback)


def known_pools(state: ModelState, rows: list[int], reranker: ServeReranker, view: RuleView, width: int,
                negative: set[str] | frozenset[str] = frozenset()) -> list[Pool]:
    """The pools of the model's users ``rows`` (indices into its users) without stored feedback, scored in
    one batch: their training items are the history, left out of the list with ``negative``."""
    model, n = state.model, width + len(negative)
    seen = model.seen
    assert seen is not None  # a served model is fitted
    users = np.asarray(rows, dtype=np.int64)
    idx, scores = model.topk_indices(users, reranker.width(n), exclude=seen[users], candidates=view.model_candidates())
    idx, scores = reranker.apply(model, idx, scores, n, lambda: seen[users])
    ids = state.ids_of(idx)
    pools = []
    for j, u in enumerate(users):
        history = [state.catalog_ids[i] for i in seen[u].indices]
        items = state.scored_items(ids[j], scores[j], width, exclude=set(negative) | set(history))
        pools.append(Pool(items, history, False))
    return pools
