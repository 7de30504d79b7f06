"""Media extractors by name: the built-in ones, or ``"module:attribute"`` for one of the user's own.

A plug-in is any object (or a class/factory that makes one) with ``extractor_id``, ``dim``, ``modality``
and ``extract(paths) -> (len(paths), dim) array`` (see :class:`avrec.encoders.extract.MediaExtractor`),
e.g. an open-clip image model on a machine that has its weights. ``auto`` picks, per modality, the first
built-in extractor that is installed (audio: the musicnn MTT tagger, else the librosa descriptors).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from avrec.encoders.extract import MediaExtractor
from avrec.errors import ConfigError

__all__ = ["AUTO", "EXTRACTORS", "make_extractor"]


def _audio_descriptors() -> MediaExtractor:
    from avrec.encoders.audio import AudioDescriptors

    return AudioDescriptors()


def _musicnn(dataset: str) -> Callable[[], MediaExtractor]:
    def make() -> MediaExtractor:
        from avrec.encoders.musicnn import MusicnnTagger

        return MusicnnTagger(dataset)

    return make


def _video_descriptors() -> MediaExtractor:
    from avrec.encoders.video import VideoDescriptors

    return VideoDescriptors()


def _image_descriptors() -> MediaExtractor:
    from avrec.encoders.video import ImageDescriptors

    return ImageDescriptors()


#: Built-in extractors by name; ``auto`` per modality picks the first that is installed.
EXTRACTORS: dict[str, Callable[[], MediaExtractor]] = {
    "musicnn-mtt": _musicnn("mtt"),  # pretrained MagnaTagATune tagger (PyTorch port, weights shipped)
    "musicnn-msd": _musicnn("msd"),  # pretrained Million Song Dataset tagger
    "audio-descriptors": _audio_descriptors,
    "video-descriptors": _video_descriptors,
    "image-descriptors": _image_descriptors,
}
EXTRACTORS["musicnn"] = EXTRACTORS["musicnn-mtt"]
AUTO = {"audio": ("musicnn-mtt", "audio-descriptors"), "video": ("video-descriptors",), "image": ("image-descriptors",)}


def make_extractor(name: str, modality: str) -> MediaExtractor:
    """The extractor called ``name`` (``auto``: the best installed one for ``modality``; ``module:attr``: a plug-in)."""
    if name in ("", "auto"):
        if modality not in AUTO:
            raise ConfigError(f"no built-in extractor for modality {modality!r} (known: {', '.join(AUTO)})")
        errors = []
        for candidate in AUTO[modality]:
            try:
                return EXTRACTORS[candidate]()
            except ConfigError as exc:  # not installed: try the next one
                errors.append(str(exc))
        raise ConfigError(f"no {modality} extractor is installed: {'; '.join(errors)}")
    if name in EXTRACTORS:
        extractor = EXTRACTORS[name]()
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"extractor {name!r}: cannot import {attr!r} from {module!r} ({exc})") from None
        extractor = obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "extract")) else obj
    else:
        raise ConfigError(f"unknown extractor {name!r} (known: auto, {', '.join(EXTRACTORS)}, or module:attribute)")
    if not isinstance(extractor, MediaExtractor):
        raise ConfigError(f"extractor {name!r} lacks extractor_id, dim, modality or extract()")
    if extractor.modality != modality:
        raise ConfigError(f"extractor {name!r} reads {extractor.modality}, not {modality}")
    return extractor


