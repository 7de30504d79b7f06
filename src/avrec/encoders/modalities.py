"""Every non-text modality of a catalogue, as the content-aware models take them.

Per modality, in this order: the dataset folder's ``item_vectors/<modality>.parquet`` (bring your own:
CLIP, CLAP, in-house), else vectors extracted from the items' media files (``audio_path``, ``video_path``,
``image_path``/``poster_path``, ``media_path`` + ``media_type``) through the cache. :class:`ModalityBlocks`
standardises each modality on the catalogue it was fitted on and keeps those statistics, so new items
(a track added later with only its audio file) land in the same space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.vectors import MEDIA_COLUMNS, ModalityVectors, has_media, load_item_vectors, media_paths
from avrec.errors import ConfigError

__all__ = ["ModalityBlocks", "item_modalities", "modalities_of", "extract_modality"]


def modalities_of(items: pd.DataFrame, wanted: Sequence[str] = ("auto",)) -> list[str]:
    """The modalities ``wanted`` names (``auto``: every vector file and every media column present)."""
    wanted = list(wanted)
    if "none" in wanted or not wanted:
        return []
    if "auto" not in wanted:
        return wanted
    from avrec.data.vectors import folder_of, vector_files

    found = list(vector_files(folder_of(items)))
    found += [m for m in MEDIA_COLUMNS if m not in found and has_media(items, m)]
    return list(dict.fromkeys([*found, *(w for w in wanted if w != "auto")]))


def extract_modality(items: pd.DataFrame, modality: str, extractor: str = "auto", cache_root: str | None = None,
                     show_progress: bool = False, batch_size: int = 16) -> ModalityVectors:
    """Vectors of ``modality`` extracted from the items' media files (items without one are absent)."""
    from avrec.encoders.extract import extract_cached
    from avrec.encoders.media import make_extractor

    ext = make_extractor(extractor, modality)
    matrix, present = extract_cached(ext, media_paths(items, modality), cache_root, batch_size=batch_size,
                                     show_progress=show_progress, labels=items["item_id"].astype(str).tolist())
    return ModalityVectors(modality, matrix, present, ext.extractor_id)


def item_modalities(items: pd.DataFrame, wanted: Sequence[str] = ("auto",), extractors: dict[str, str] | None = None,
                    cache_root: str | None = None, show_progress: bool = False) -> dict[str, ModalityVectors]:
    """``{modality: vectors}`` for the catalogue ``items``: vector files first, then extraction from media."""
    names = modalities_of(items, wanted)
    if not names:
        return {}
    files = load_item_vectors(items)
    out: dict[str, ModalityVectors] = {}
    for m in names:
        if m in files:
            out[m] = files[m]
        elif m in MEDIA_COLUMNS:
            if has_media(items, m):
                out[m] = extract_modality(items, m, (extractors or {}).get(m, "auto"), cache_root, show_progress)
        else:
            raise ConfigError(f"modality {m!r}: no item_vectors/{m}.parquet in the dataset folder and no media "
                              f"column for it (media modalities: {', '.join(MEDIA_COLUMNS)})")
    return out


@dataclass
class ModalityBlocks:
    """Per modality: the statistics that standardise it and where its vectors come from (file or extractor)."""

    names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    extractors: dict[str, str] = field(default_factory=dict)
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    scale: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, vectors: dict[str, ModalityVectors], extractors: dict[str, str] | None = None) -> ModalityBlocks:
        blocks = cls()
        for m, mv in vectors.items():
            rows = mv.matrix[mv.present]
            if len(rows) == 0:
                continue
            blocks.names.append(m)
            blocks.sources[m] = mv.source
            blocks.extractors[m] = "" if mv.source.endswith(".parquet") else (extractors or {}).get(m, "auto")
            blocks.mean[m] = rows.mean(axis=0).astype(np.float32)
            std = rows.std(axis=0).astype(np.float32)
            blocks.scale[m] = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        return blocks

    @property
    def dims(self) -> dict[str, int]:
        return {m: len(self.mean[m]) for m in self.names}

    def normalised(self, m: str, mv: ModalityVectors) -> np.ndarray:
        """Standardised, L2-normalised rows of modality ``m``; zero rows where absent."""
        z = (mv.matrix - self.mean[m]) / self.scale[m]
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-9)
        return np.where(mv.present[:, None], z, 0.0).astype(np.float32)

    def vectors_for(self, items: pd.DataFrame, cache_root: str | None = None) -> dict[str, ModalityVectors]:
        """This fit's modalities for other items (new ones): extracted from their media files when the
        modality came from an extractor; absent when it came from a vector file that does not list them."""
        out = {}
        for m in self.names:
            ext = self.extractors.get(m, "")
            if ext and has_media(items, m):
                mv = extract_modality(items, m, ext, cache_root)
                if mv.source != self.sources[m]:
                    raise ConfigError(f"modality {m!r} was fitted with {self.sources[m]!r}, now {mv.source!r}: refit")
                out[m] = mv
            else:
                dim = len(self.mean[m])
                out[m] = ModalityVectors(m, np.zeros((len(items), dim), np.float32), np.zeros(len(items), bool), "")
        return out

    def sparse(self, vectors: dict[str, ModalityVectors], n_rows: int, weight: float = 1.0) -> sp.csr_matrix:
        """The modalities side by side as a sparse block (absent items have no entries in that modality)."""
        if not self.names:
            return sp.csr_matrix((n_rows, 0), dtype=np.float32)
        parts = [sp.csr_matrix(weight * self.normalised(m, vectors[m])) for m in self.names]
        return sp.csr_matrix(sp.hstack(parts), dtype=np.float32)

    def groups(self, offset: int) -> list[tuple[int, int]]:
        """Column ranges of each modality in :meth:`sparse`, shifted by ``offset``."""
        out, start = [], offset
        for m in self.names:
            out.append((start, start + len(self.mean[m])))
            start += len(self.mean[m])
        return out

    # ---- persistence (JSON meta + safetensors state) ----
    def meta(self) -> dict[str, Any]:
        return {"names": self.names, "sources": self.sources, "extractors": self.extractors}

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{m}.{k}": getattr(self, k)[m] for m in self.names for k in ("mean", "scale")}

    @classmethod
    def restore(cls, meta: dict[str, Any] | None, state: dict[str, np.ndarray], prefix: str) -> ModalityBlocks:
        if not meta:
            return cls()
        return cls(list(meta["names"]), dict(meta["sources"]), dict(meta["extractors"]),
                   {m: np.asarray(state[f"{prefix}.{m}.mean"]) for m in meta["names"]},
                   {m: np.asarray(state[f"{prefix}.{m}.scale"]) for m in meta["names"]})
