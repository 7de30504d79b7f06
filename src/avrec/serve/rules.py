"""Content rules in the server: one :class:`RuleView` per request, applied on every path.

The rules come from the ``[serve]`` settings (``rules``, ``profiles``, ``user_profiles``,
``default_profile``; see :mod:`avrec.pipeline.rules`). A request's view is the base rules plus the
default profile, the user's assigned profile and the ``profile`` it asks for. The service uses the view
three ways: the model only ranks allowed items (``model_candidates``), every list is checked once more
item by item before it is answered (``allows``), and an endpoint about one item (``/explain``,
``/similar``, ``/items``) answers 404 for a blocked item. Explanations only see the allowed part of a
user's history, so their text never names a blocked title.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from avrec.errors import ConfigError
from avrec.pipeline.rules import ContentRules
from avrec.serve.config import ServeConfig
from avrec.serve.errors import NotFound, ServiceError
from avrec.serve.state import ModelState


def content_rules(config: ServeConfig) -> ContentRules:
    """The rules of a service's settings (a ConfigError names a bad key)."""
    return ContentRules.from_config(config.rules, config.profiles, config.user_profiles, config.default_profile)


@dataclass
class RuleView:
    """What one request may show: ``mask`` over the served catalogue (None: everything)."""

    names: tuple[str, ...]
    mask: np.ndarray | None
    n_model_items: int

    @property
    def active(self) -> bool:
        return self.mask is not None

    def allows_row(self, row: int) -> bool:
        return self.mask is None or (0 <= row < len(self.mask) and bool(self.mask[row]))

    def model_candidates(self) -> np.ndarray | None:
        """The model's item indices the rules allow, for its ``candidates`` (None: no restriction)."""
        if self.mask is None:
            return None
        return np.flatnonzero(self.mask[: self.n_model_items]).astype(np.int64)

    def n_blocked(self) -> int:
        return 0 if self.mask is None else int((~self.mask).sum())

    def label(self) -> str:
        return f"profile {', '.join(self.names)}" if self.names else "the content rules"

    def check_row(self, row: int, item_id: str) -> None:
        """A 404 for an item the rules block (its existence is not revealed beyond that)."""
        if not self.allows_row(row):
            raise NotFound(f"unknown item_id {str(item_id)!r} (not available under {self.label()})")

    def allowed_ids(self, state: ModelState, ids: Iterable[str]) -> list[str]:
        """``ids`` less the ones the rules block (unknown ids are kept; callers check them)."""
        out = []
        for i in ids:
            row = state.catalog_index.get(str(i))
            if row is None or self.allows_row(row):
                out.append(str(i))
        return out


def rule_view(rules: ContentRules, state: ModelState, profile: str | None, user_id: str | None) -> RuleView:
    """The view for one request, its mask cached on ``state`` per set of profile names."""
    try:
        names = rules.names(profile, user_id)
    except ConfigError as e:
        raise ServiceError(str(e)) from None
    if not rules.base.active and not any(rules.profiles[n].active for n in names):
        return RuleView(names, None, state.n_model_items)
    cache = state.rule_masks
    mask = cache.get(names)
    if mask is None or len(mask) != len(state.catalog):
        mask = rules.mask(state.catalog, names)
        cache[names] = mask
    return RuleView(names, mask, state.n_model_items)


def check_rules(rules: ContentRules, state: ModelState) -> None:
    """Compute the base rules and each profile over ``state``'s catalogue once, so a rule naming a column
    the catalogue lacks is a ConfigError when the model is loaded, never a failing request."""
    if not rules.active:
        return
    state.rule_masks[()] = rules.mask(state.catalog, ())
    for name in rules.profiles:
        rules.mask(state.catalog, (name,))
