"""Text encoders, an on-disk embedding cache for item documents, and where an encoder's weights are."""

from avrec.encoders.cache import EmbeddingCache, encode_texts
from avrec.encoders.resolve import ModelNotFoundError, resolve_encoder_path
from avrec.encoders.text import TextEncoder
from avrec.encoders.vectors import unit_rows

__all__ = ["TextEncoder", "EmbeddingCache", "encode_texts", "ModelNotFoundError", "resolve_encoder_path", "unit_rows"]
