"""Content rules: which catalogue items may be shown at all, whatever a model or a stage ranks.

A :class:`RuleSet` blocks item ids, items with given values in any column (``age_rating`` in ``R``,
``NC-17``), items outside allowed values (``media_type`` in ``movie``; ``genres`` in ``Children``,
``Animation``), and items not available in a region (a multi-valued availability column). Values are
matched case-insensitively on the ``|``-separated values of a cell. :class:`ContentRules` holds the base
rules that always apply plus named profiles (``kids``) chosen per request or per user; profiles only add
restrictions, so a request can never lift a rule that applies to its user.

:class:`RulesStage` is the pipeline stage that drops every blocked entry; the ``pipeline`` model runs it
after each of its stages, and the server applies the same mask on every path (see ``avrec.serve.rules``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from avrec.errors import ConfigError
from avrec.pipeline.stages import Context, compact


def _norm(value: Any) -> str:
    return str(value).strip().casefold()


def cell_values(series: pd.Series) -> list[set[str]]:
    """Each cell's normalised ``|``-separated values."""
    return [{_norm(v) for v in str(cell).split("|") if v.strip()} for cell in series.fillna("").astype(str)]


@dataclass
class RuleSet:
    """One set of content rules (the base rules, or one profile).

    ``blocked_items``: item ids never shown. ``blocked_values``: column → values; an item with any of
    them is blocked. ``allowed_values``: column → values; an item must have one of them in every column
    named (an item with the column empty is blocked). ``media_types``: allowed media types (empty: all).
    ``region``: the region served; an item whose ``region_column`` lists regions without it is blocked,
    and one with the column empty is allowed unless ``missing_region = "block"``.
    """

    blocked_items: list[str] = field(default_factory=list)
    blocked_values: dict[str, list[str]] = field(default_factory=dict)
    allowed_values: dict[str, list[str]] = field(default_factory=dict)
    media_types: list[str] = field(default_factory=list)
    region: str = ""
    region_column: str = "regions"
    missing_region: str = "allow"

    @property
    def active(self) -> bool:
        return bool(self.blocked_items or self.blocked_values or self.allowed_values or self.media_types
                    or self.region)

    def mask(self, items: pd.DataFrame, where: str = "rules") -> np.ndarray:
        """Boolean mask over ``items`` of what these rules allow; a ConfigError names a column a blocking
        rule refers to that the catalogue lacks (a typo would otherwise let everything through)."""
        keep = np.ones(len(items), dtype=bool)
        if self.blocked_items:
            keep &= ~items["item_id"].astype(str).str.strip().isin({str(i).strip() for i in self.blocked_items})
        for column, values in self.blocked_values.items():
            if column not in items.columns:
                raise ConfigError(f"{where}.blocked_values.{column}: the catalogue has no column {column!r} "
                                  f"(columns: {', '.join(map(str, items.columns))})")
            bad = {_norm(v) for v in values}
            keep &= np.array([not (cell & bad) for cell in cell_values(items[column])], dtype=bool)
        allowed = dict(self.allowed_values)
        if self.media_types:
            allowed.setdefault("media_type", [])
            allowed["media_type"] = list(allowed["media_type"]) + list(self.media_types)
        for column, values in allowed.items():
            if column not in items.columns:
                keep[:] = False  # nothing can show an allowed value it does not have
                continue
            good = {_norm(v) for v in values}
            keep &= np.array([bool(cell & good) for cell in cell_values(items[column])], dtype=bool)
        if self.region:
            region = _norm(self.region)
            if self.region_column in items.columns:
                cells = cell_values(items[self.region_column])
                keep &= np.array([region in c if c else self.missing_region == "allow" for c in cells], dtype=bool)
            elif self.missing_region == "block":
                keep[:] = False
        return keep


_LIST_FIELDS = ("blocked_items", "media_types")
_MAP_FIELDS = ("blocked_values", "allowed_values")
_TEXT_FIELDS = ("region", "region_column", "missing_region")


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | int) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, not {value!r}")
    return [str(v).strip() for v in value]


def parse_ruleset(raw: Mapping[str, Any] | None, where: str = "rules") -> RuleSet:
    """A :class:`RuleSet` from a config table; one ConfigError naming the key for anything wrong."""
    if raw is None:
        return RuleSet()
    if isinstance(raw, RuleSet):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of rules, not {raw!r}")
    names = [f.name for f in fields(RuleSet)]
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _LIST_FIELDS:
            out[key] = _str_list(value, f"{where}.{key}")
        elif key in _MAP_FIELDS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a table of column = [values], not {value!r}")
            out[key] = {str(c): _str_list(v, f"{where}.{key}.{c}") for c, v in value.items()}
        elif key in _TEXT_FIELDS:
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{key}: expected a string, not {value!r}")
            out[key] = value.strip()
        else:
            raise ConfigError(f"unknown setting {where}.{key}; valid: {', '.join(names)}")
    if out.get("missing_region", "allow") not in ("allow", "block"):
        raise ConfigError(f"{where}.missing_region must be allow or block, not {out['missing_region']!r}")
    return RuleSet(**out)


@dataclass
class ContentRules:
    """Base rules (always applied), named profiles, and the profile assigned to each user.

    ``resolve(profile, user_id)`` gives the rule sets that apply to one request: the base rules, the
    ``default_profile`` (when set), the user's assigned profile and the requested one; all of them apply.
    """

    base: RuleSet = field(default_factory=RuleSet)
    profiles: dict[str, RuleSet] = field(default_factory=dict)
    user_profiles: dict[str, str] = field(default_factory=dict)
    default_profile: str = ""

    @classmethod
    def from_config(cls, rules: Mapping[str, Any] | None, profiles: Mapping[str, Any] | None = None,
                    user_profiles: Mapping[str, Any] | None = None, default_profile: str = "",
                    where: str = "serve") -> ContentRules:
        """Parse and check the ``rules``/``profiles``/``user_profiles``/``default_profile`` settings."""
        if profiles is not None and not isinstance(profiles, Mapping):
            raise ConfigError(f"{where}.profiles: expected a table of profile = {{rules}}, not {profiles!r}")
        parsed = {str(n): parse_ruleset(r, f"{where}.profiles.{n}") for n, r in (profiles or {}).items()}
        users = dict(user_profiles or {})
        for user, name in users.items():
            if str(name) not in parsed:
                raise ConfigError(f"{where}.user_profiles.{user}: unknown profile {name!r}; "
                                  f"defined: {', '.join(parsed) or 'none'}")
        if default_profile and default_profile not in parsed:
            raise ConfigError(f"{where}.default_profile: unknown profile {default_profile!r}; "
                              f"defined: {', '.join(parsed) or 'none'}")
        return cls(parse_ruleset(rules, f"{where}.rules"), parsed, {str(u): str(p) for u, p in users.items()},
                   default_profile)

    @property
    def active(self) -> bool:
        return self.base.active or any(p.active for p in self.profiles.values())

    def names(self, profile: str | None = None, user_id: str | None = None) -> tuple[str, ...]:
        """The profile names that apply, in a canonical order; a ConfigError for an unknown ``profile``."""
        if profile and profile not in self.profiles:
            raise ConfigError(f"profile: unknown profile {profile!r}; defined: {', '.join(self.profiles) or 'none'}")
        chosen = {self.default_profile, self.user_profiles.get(str(user_id), "") if user_id else "", profile or ""}
        return tuple(sorted(n for n in chosen if n))

    def mask(self, items: pd.DataFrame, names: Sequence[str] = ()) -> np.ndarray:
        """What the base rules and every profile in ``names`` allow, over ``items``."""
        keep = self.base.mask(items, "rules")
        for n in names:
            keep &= self.profiles[n].mask(items, f"profiles.{n}")
        return keep


def blocked_ids(items: pd.DataFrame, mask: np.ndarray) -> set[str]:
    """The ids of the items ``mask`` leaves out."""
    return set(items["item_id"].astype(str).to_numpy()[~mask].tolist())


def allowed_index(mask: np.ndarray, within: Iterable[int] | None = None) -> np.ndarray:
    """Item indices ``mask`` allows (among ``within`` when given)."""
    idx = np.flatnonzero(mask).astype(np.int64)
    if within is not None:
        idx = np.intersect1d(idx, np.asarray(list(within), dtype=np.int64))
    return idx


@dataclass
class RulesStage:
    """Drop every entry the ``mask`` (over the catalogue) blocks; order and scores of the rest unchanged."""

    mask: np.ndarray

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = (candidates >= 0) & (candidates < len(self.mask))
        keep = np.where(inside, self.mask[np.clip(candidates, 0, len(self.mask) - 1)], False)
        return compact(candidates, scores, keep)
