"""Stored feedback as model input: which events are positive, per request (a user's profile) and offline
(``avrec update`` folding the store into a model folder through :mod:`avrec.models.updates`).

The rule is the same in both places: the latest event of a user on an item decides; play, like and a
rating at or above the threshold are positive, skip, dislike and a lower rating negative.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from avrec.models.base import Recommender
from avrec.models.updates import fold_in_interactions
from avrec.serve.state import ModelState, replayable
from avrec.serve.store import DEFAULT_RATING_THRESHOLD, Event, EventStore


def latest_polarities(events: Iterable[Event], rating_threshold: float) -> dict[str, int]:
    """Item id → +1/-1 from one user's events in arrival order (the latest event on an item wins)."""
    return {e.item_id: e.polarity(rating_threshold) for e in events}


@dataclass
class UserProfile:
    """What the service knows of a user at request time."""

    #: the model was trained on this user
    known: bool
    #: training history, then items with positive feedback the model has (item ids, no repeats)
    history: list[str]
    #: items whose latest feedback is negative: left out of every list
    negative: set[str]
    #: the user's stored events, oldest first
    events: list[Event]
    #: some stored event is positive, so the lists are folded in from ``history``
    has_feedback: bool


def user_profile(state: ModelState, store: EventStore, user_id: str, rating_threshold: float) -> UserProfile:
    """The training row of ``user_id`` (if any) merged with their stored feedback."""
    model = state.model
    u = model.user_index.get(str(user_id))
    assert model.seen is not None  # a served model is fitted
    history: list[str] = [] if u is None else [state.catalog_ids[i] for i in model.seen[u].indices]
    events = store.events(user_id=user_id)
    last = latest_polarities(events, rating_threshold)
    in_model = model.item_index
    known_items = set(history)
    for item, pol in last.items():
        if pol > 0 and item in in_model and item not in known_items:
            history.append(item)
            known_items.add(item)
    negative = {item for item, pol in last.items() if pol < 0}
    has_feedback = any(e.polarity(rating_threshold) > 0 for e in events)
    return UserProfile(u is not None, history, negative, events, has_feedback)


def fold_events(model: Recommender, store: EventStore, rating_threshold: float = DEFAULT_RATING_THRESHOLD,
                exclude: Collection[tuple[str, str]] = ()) -> dict:
    """Fold the store's items and positive events into ``model`` in place, without retraining.

    Stored items the model lacks are added when it can add items (else counted in ``items_skipped``: the
    server keeps them listed and searchable); every user's positive events go through
    :func:`avrec.models.updates.fold_in_interactions`, except the (user, item) pairs in ``exclude`` (the
    forgetting guard's probe, :mod:`avrec.serve.probe`). Running it twice changes nothing the second time.
    """
    summary: dict[str, Any] = {"model": model.name, "items_added": 0, "items_skipped": 0}
    stored_items = replayable(store.items(), model.item_index)
    if stored_items:
        if model.capabilities.add_items:
            summary["items_added"] = model.add_items(pd.DataFrame(stored_items).fillna("").astype(str))
        else:
            summary["items_skipped"] = len(stored_items)
    last: dict[tuple[str, str], int] = {}
    max_id = 0
    for e in store.iter_events():
        last[(e.user_id, e.item_id)] = e.polarity(rating_threshold)
        max_id = max(max_id, e.id)
    summary["events_folded_upto"] = max_id
    summary |= fold_in_interactions(model, [pair for pair, pol in last.items() if pol > 0 and pair not in exclude])
    return summary
