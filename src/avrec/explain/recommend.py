"""The explain stage: a model's recommendations with one grounded explanation per listed item.

Works for every model (the ``pipeline`` included): the lists come from ``model.recommend``, the
explanations from :class:`avrec.explain.explainer.Explainer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avrec.explain.explainer import Explainer


def recommend_explained(
    model, users, k: int = 10, exclude_seen: bool = True, candidates=None, *, explainer: Explainer | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[dict[str, Any] | None]]]:
    """``model.recommend`` plus one grounded explanation per recommended item.

    Returns ``(ids, scores, explanations)``; ``explanations[r][j]`` is the
    ``{"user_id", "item_id", "text", "evidence"}`` dict of :class:`Explainer` for ``ids[r, j]``, or None
    for padding and for users the model has never seen (they have no history to cite). ``explainer``:
    an ``Explainer(model)`` to reuse across calls (building one builds the item graph); made here when None.
    """
    users = [str(u) for u in users]
    ids, scores = model.recommend(users, k, exclude_seen=exclude_seen, candidates=candidates)
    if explainer is None:
        explainer = Explainer(model)
    known = model.known_users(users)
    explanations = [
        [explainer.explain(u, i) if (ok and i is not None) else None for i in row]
        for u, ok, row in zip(users, known, ids)
    ]
    return ids, scores, explanations
