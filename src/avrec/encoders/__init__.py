"""Text encoders and an on-disk embedding cache for item documents."""

from avrec.encoders.cache import EmbeddingCache, encode_texts
from avrec.encoders.text import ModelNotFoundError, TextEncoder

__all__ = ["TextEncoder", "EmbeddingCache", "encode_texts", "ModelNotFoundError"]
