"""The hybrid's fused components: which models, built with which settings, fitted on which data.

Components that tune themselves on validation (the field-weighted ``tfidf``, ``contentpop``) get the
hybrid's validation part for the list they serve (the cold one for the cold blend); their tuned settings
are kept, so that the refit on all interactions (``avrec fit`` without a split) reuses them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from avrec.data.dataset import Dataset
from avrec.errors import DataWarning, NotApplicable, ScaleError
from avrec.models.base import Recommender
from avrec.models.scale import Size


@dataclass
class TuningParts:
    """Validation data for the components: the warm part, the cold part and the cold candidates."""

    warm: Dataset | None = None
    cold: Dataset | None = None
    cold_candidates: np.ndarray | None = None


@dataclass
class ComponentSet:
    models: dict[str, Recommender] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    tuned: dict[str, Any] = field(default_factory=dict)  # name -> the config a component tuned itself to


def make_component(name: str, cfg: Any, n_active_items: int, tuned: dict[str, Any]) -> Recommender | None:
    """A fresh component model (whether it fits the size is its own ``check_size``)."""
    from avrec.models.registry import create_model

    if name in tuned:
        return create_model(name, replace(tuned[name]))
    if name == "ease":  # above its item cap it refuses in check_size, and the reason is kept
        return create_model("ease", replace(cfg.ease))
    if name == "seqknn" and hasattr(cfg, "seqknn"):  # configs saved before the section get the defaults
        return create_model("seqknn", replace(cfg.seqknn))
    if name == "als":
        return create_model("als", replace(cfg.als, seed=cfg.seed))
    if name in ("itemknn", "kgpath"):
        return create_model(name, replace(getattr(cfg, name)))
    if name == "content":  # the same encoder and cached vectors as the item tower
        return create_model("content", encoder=cfg.encoder, embedding_cache=cfg.embedding_cache,
                            max_length=cfg.max_length, doc_fields=list(cfg.doc_fields),
                            modalities=list(cfg.modalities), extractors=dict(cfg.extractors))
    return create_model(name)


def fit_components(cfg: Any, train: Dataset, warm_items: np.ndarray, parts: TuningParts | None,
                   previous: ComponentSet | None) -> ComponentSet:
    """Fit every component of ``cfg.blend`` and ``cfg.cold_blend`` on ``train``; a component with nothing
    to work with (NotApplicable) or that refuses the size (ScaleError, checked before it allocates) is left
    out with one warning."""
    out = ComponentSet(tuned=dict(previous.tuned) if previous else {})
    size = Size.of(train)
    for name in dict.fromkeys([*cfg.blend, *cfg.cold_blend]):
        model = make_component(name, cfg, int(warm_items.sum()), out.tuned)
        if model is None:
            continue
        try:
            model.check_size(size)
        except ScaleError as e:
            out.skipped[name] = str(e)
            continue
        cold = name in cfg.cold_blend and name not in cfg.blend
        tuning = getattr(cfg, "component_tuning", True)
        valid = None if parts is None or name in out.tuned or not tuning else (parts.cold if cold else parts.warm)
        try:
            out.models[name] = model.fit(train, valid=valid,
                                         valid_candidates=parts.cold_candidates if (cold and parts) else None)
        except (NotApplicable, ScaleError) as e:  # nothing to work with, or too big here: left out of the blend
            out.skipped[name] = str(e)
            continue
        if valid is not None and name in ("tfidf", "contentpop", "seqknn"):
            out.tuned[name] = model.config
    for name, why in out.skipped.items():
        if previous is None or name not in previous.skipped:
            warnings.warn(DataWarning(f"hybrid: component {name!r} left out ({why})"), stacklevel=3)
    return out


__all__ = ["ComponentSet", "TuningParts", "fit_components", "make_component"]
