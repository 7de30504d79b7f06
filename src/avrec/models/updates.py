"""Updating a fitted model in place without a retrain: new positive interactions and new users.

The serving layer decides which events are positive; this module owns how they enter a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.models.base import Recommender


def fold_in_interactions(model: Recommender, positives: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Add (user_id, item_id) positives to ``model.seen``; returns what changed.

    Users the model knows get the items in their training row (so lists exclude them and, for models
    with ``exact_fold_in``, are informed by them). New users are appended when the model has
    ``exact_fold_in``; otherwise they are counted in ``users_not_added`` (serving keeps folding them in
    from the store). Pairs naming items the model lacks are ignored. Idempotent.
    """
    adds_users = model.capabilities.exact_fold_in
    item_index, user_index = model.item_index, model.user_index
    new_users: dict[str, int] = {}
    not_added: set[str] = set()
    rows, cols = [], []
    for user, item in positives:
        if item not in item_index:
            continue
        u = user_index.get(user)
        if u is None:
            if not adds_users:
                not_added.add(user)
                continue
            u = new_users.setdefault(user, len(user_index) + len(new_users))
        rows.append(u)
        cols.append(item_index[item])
    seen = sp.csr_matrix(model.seen, dtype=np.float32)
    shape = (seen.shape[0] + len(new_users), seen.shape[1])
    grown = sp.vstack([seen, sp.csr_matrix((len(new_users), seen.shape[1]), dtype=np.float32)], format="csr")
    merged = grown + sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    merged.sum_duplicates()
    merged.data[:] = 1.0
    merged.eliminate_zeros()
    updated = int(((np.diff(merged.indptr) > np.diff(grown.indptr))[: seen.shape[0]]).sum())
    summary = {"adds_new_users": adds_users, "users_added": len(new_users), "users_updated": updated,
               "users_not_added": len(not_added), "interactions_added": int(merged.nnz - seen.nnz)}
    model.set_interactions(merged, [u for u, _ in sorted(new_users.items(), key=lambda kv: kv[1])])
    return summary
