"""``/similar/{item_id}?by=...``: neighbours in one kind of content instead of the model's own item space.

``by=model`` (the default) is the model's similarity; ``by=text`` the text-search index; ``by=audio`` /
``video`` / ``image`` / any ``item_vectors/<name>.parquet`` modality is cosine similarity of the items'
standardised vectors of that modality (vector files, else media files through the embedding cache, with the
extractor the model was fitted with). Items without the modality are never returned; asking for a modality
the catalogue lacks, or for an item that lacks it, is a 400 naming what is available.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from avrec.errors import ConfigError, DataError
from avrec.serve.errors import ServiceError

__all__ = ["ModalityNeighbours"]


def _fitted_extractors(model: Any) -> dict[str, str]:
    """The extractor per modality the model was fitted with (hybrid or content), else {}."""
    for owner in (getattr(model, "featurizer", None), model):
        blocks = getattr(owner, "modalities", None) if owner is not None else None
        if blocks is not None and hasattr(blocks, "extractors"):
            return {m: e for m, e in blocks.extractors.items() if e}
    return dict(getattr(getattr(model, "config", None), "extractors", None) or {})


class ModalityNeighbours:
    """Unit vectors per (served state, catalogue size, modality), built on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vectors: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray]] = {}

    def available(self, state: Any) -> list[str]:
        from avrec.encoders.modalities import modalities_of

        return modalities_of(state.catalog)

    def _unit(self, state: Any, modality: str) -> tuple[np.ndarray, np.ndarray]:
        key = (id(state), len(state.catalog), modality)
        with self._lock:
            if key not in self._vectors:
                from avrec.encoders.modalities import ModalityBlocks, item_modalities

                extractors = _fitted_extractors(state.model)
                cache = getattr(getattr(state.model, "config", None), "embedding_cache", None)
                try:
                    mv = item_modalities(state.catalog, [modality], extractors, cache)[modality]
                except (ConfigError, DataError) as exc:
                    raise ServiceError(f"by={modality}: {exc}") from None
                blocks = ModalityBlocks.fit({modality: mv}, extractors)
                unit = blocks.normalised(modality, mv) if blocks.names else np.zeros_like(mv.matrix)
                self._vectors = {k: v for k, v in self._vectors.items() if k[0] == id(state)}
                self._vectors[key] = (unit, mv.present.copy())
            return self._vectors[key]

    def neighbours(self, state: Any, row: int, item_id: str, modality: str, n: int,
                   allowed: np.ndarray | None) -> list[dict[str, Any]]:
        """Up to ``n`` items closest to catalogue row ``row`` in ``modality`` (``allowed``: rule mask or None)."""
        names = self.available(state)
        if modality not in names:
            have = ", ".join(["model", "text", *names])
            raise ServiceError(f"by={modality!r}: this catalogue has no such modality (by: {have})")
        unit, present = self._unit(state, modality)
        if not present[row]:
            raise ServiceError(f"item {item_id!r} has no {modality} (no file or vector for it)")
        scores = (unit @ unit[row]).astype(np.float64)
        keep = present.copy()
        keep[row] = False
        if allowed is not None:
            keep[: len(allowed)] &= allowed[: len(keep)]
        scores[~keep] = -np.inf
        top = np.argsort(-scores, kind="stable")[: min(n, int(keep.sum()))]
        return [{"item_id": str(state.catalog_ids[i]), "score": float(scores[i]), "title": state.title(int(i))}
                for i in top]
