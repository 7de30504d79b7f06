"""Text the server writes for people (explanations, summaries), under the request's content rules.

An explanation only sees the allowed part of the user's history and the rules' mask (so a generated
rewrite naming a blocked title is refused); a summary is only made of an allowed item's own text. Both
go through the disallowed-terms filter of :mod:`avrec.explain.guard` (``serve.disallowed_terms``).
"""

from __future__ import annotations

from typing import Any

from avrec.serve.errors import Unavailable
from avrec.serve.rules import RuleView
from avrec.serve.state import ModelState


def explain_item(state: ModelState, user_id: str | None, item_id: str, history: list[str],
                 view: RuleView) -> dict[str, Any]:
    """The explanation of ``item_id`` for a user given by the (allowed) item ids of their history."""
    if state.explainer is None:
        raise Unavailable(f"explanations are unavailable: {state.explainer_error}")
    row = state.item_row(item_id)
    if row >= state.n_model_items:  # listed, not in the model: nothing the model did to explain
        text = (f'"{state.title(row)}" is new in the catalogue; the {state.model.name} model recommends it '
                "once it is retrained with it.")
        return {"user_id": user_id, "item_id": str(item_id), "evidence": [{"kind": "popularity", "users": 0}],
                "text": state.explainer.terms.clean(text)}
    allowed = None if view.mask is None else view.mask[: state.n_model_items]
    return state.explainer.explain_history(history, str(item_id), user_id=user_id, allowed=allowed)


def item_summary(state: ModelState, row: int, view: RuleView) -> dict[str, Any]:
    """The extractive summary of catalogue row ``row`` (a 404 when ``view`` blocks it), terms masked."""
    from avrec.explain.guard import TermFilter
    from avrec.explain.summarize import summarize_row

    view.check_row(row, str(state.catalog_ids[row]))
    terms = state.explainer.terms if state.explainer is not None else TermFilter()
    return summarize_row(state.catalog.iloc[row], terms=terms)
