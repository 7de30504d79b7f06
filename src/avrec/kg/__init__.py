"""Knowledge graph of items and metadata entities (see :mod:`avrec.kg.graph`)."""

from avrec.kg.graph import (
    KnowledgeGraph,
    build_kg,
    decade_of,
    entity_fields,
    field_values,
    kg_item_features,
    load_kg,
    normalize_value,
)

__all__ = [
    "KnowledgeGraph",
    "build_kg",
    "decade_of",
    "entity_fields",
    "field_values",
    "kg_item_features",
    "load_kg",
    "normalize_value",
]
