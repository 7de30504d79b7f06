"""The tags a pretrained tagger hears in each item's audio file: ``"piano|ambient|slow"`` per item.

Written by ``avrec embed --modality audio --heard-tags`` to ``heard_tags.csv``, which
:func:`avrec.data.io.load_folder` adds to the items as the ``heard_tags`` text field (documents, TF-IDF, the
knowledge graph's ``heard`` entities, explanations that cite them as heard in the audio).
"""

from __future__ import annotations

import pandas as pd

from avrec.encoders.media import make_extractor
from avrec.encoders.modalities import extract_modality
from avrec.encoders.musicnn import top_tags
from avrec.errors import ConfigError

__all__ = ["heard_tags"]


def heard_tags(items: pd.DataFrame, extractor: str = "musicnn-mtt", k: int = 3, min_prob: float = 0.1,
               cache_root: str | None = None, show_progress: bool = False) -> list[str]:
    """Per item, the tags heard in its audio file as ``"piano|ambient|slow"`` ("" without a readable file)."""
    tagger = make_extractor(extractor, "audio")
    labels = getattr(tagger, "labels", None)
    if not labels:
        raise ConfigError(f"extractor {extractor!r} predicts no tags (use musicnn-mtt or musicnn-msd)")
    mv = extract_modality(items, "audio", extractor, cache_root, show_progress=show_progress)
    return ["|".join(top_tags(v, labels, k, min_prob)) if ok else "" for v, ok in zip(mv.matrix, mv.present)]
