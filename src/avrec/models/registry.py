"""String registry of models: ``avrec fit --model NAME`` looks names up here.

Entries are import paths so that asking for ``ease`` does not import torch or transformers.
"""

from __future__ import annotations

import importlib

from avrec.errors import ConfigError

_MODELS: dict[str, str] = {
    "pop": "avrec.models.pop:Popularity",
    "itemknn": "avrec.models.itemknn:ItemKNN",
    "ease": "avrec.models.ease:EASE",
    "als": "avrec.models.als:ALS",
    "bpr": "avrec.models.bpr:BPR",
    "kgpath": "avrec.models.kgpath:KGPathScorer",
    "tfidf": "avrec.models.tfidf:TfidfKNN",
    "hybrid": "avrec.models.hybrid:Hybrid",
    "content": "avrec.models.content:ContentModel",
    "pipeline": "avrec.models.pipeline:Pipeline",
}


def register(name: str, target: str) -> None:
    """Register a model class under ``name`` given as ``"module:Class"``."""
    _MODELS[name] = target


def available_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str):
    """The class registered under ``name``; a ConfigError lists the valid names otherwise."""
    try:
        target = _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, config=None, **overrides):
    """Instantiate the model registered under ``name``."""
    return get_model_class(name)(config, **overrides)
