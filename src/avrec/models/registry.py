"""String registry of models: ``avrec fit --model NAME`` and ``Recommender.load`` look names up here.

Entries are import strings (``"module:Class"``) so that asking for ``ease`` does not import torch or
transformers. Three sources, first match wins:

1. :func:`register` calls (at run time);
2. the built-in table below (the models of this package);
3. the ``avrec.models`` entry-point group of every installed distribution, read on the first lookup
   that needs it and cached. Models of higher layers (the ``pipeline``) and third-party plug-ins
   register there, so this module never imports them::

       [project.entry-points."avrec.models"]
       mymodel = "mypackage.module:MyModel"
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from avrec.errors import ConfigError

#: the entry-point group that plug-in models (and avrec's own ``pipeline``) register under
ENTRY_POINT_GROUP = "avrec.models"

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
    "contentpop": "avrec.models.contentpop:ContentPopularity",
    "seqknn": "avrec.models.seqknn:SeqKNN",
}
_plugins: dict[str, str] | None = None


def register(name: str, target: str) -> None:
    """Register a model class under ``name`` given as ``"module:Class"``."""
    _MODELS[name] = target


def plugin_models() -> dict[str, str]:
    """Name → ``"module:Class"`` of the installed ``avrec.models`` entry points (read once, cached)."""
    global _plugins
    if _plugins is None:
        found: dict[str, str] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name, ep.value)  # a distribution seen twice (stale metadata): the first
        _plugins = found
    return _plugins


def _targets() -> dict[str, str]:
    return {**plugin_models(), **_MODELS}


def available_models() -> list[str]:
    return sorted(_targets())


def default_retriever() -> str:
    """The retriever a multi-stage model or ranker training uses by default: ``hybrid`` when registered,
    else ``ease``."""
    return "hybrid" if "hybrid" in _targets() else "ease"


def get_model_class(name: str) -> Any:
    """The class registered under ``name``; a ConfigError lists the valid names otherwise."""
    target = _MODELS.get(name) or plugin_models().get(name)
    if target is None:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def create_model(name: str, config: Any = None, **overrides: Any) -> Any:
    """Instantiate the model registered under ``name``."""
    return get_model_class(name)(config, **overrides)
