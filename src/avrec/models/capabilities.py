"""What a model can do, stated once per model instead of probed with ``hasattr``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    """What a model can do; composite models derive theirs from their parts."""

    #: scores items that have no interactions (content-aware), so cold-item evaluation is meaningful
    cold_items: bool = False
    #: ``add_items`` makes new items recommendable without a retrain
    add_items: bool = False
    #: ``score_histories(seen[u])`` equals ``score_users(u)``: a user is fully described by their history,
    #: so folding in feedback or new users needs no retrain
    exact_fold_in: bool = False
    #: ``item_vectors()`` gives compact (items × d) vectors, d small enough for vector search
    item_vectors: bool = False
    #: ``encode_query(text)`` places free text in the item space (natural-language search)
    text_queries: bool = False
    #: the model holds a knowledge graph (``kg``, ``item_features``, ``entity_contributions``)
    knowledge_graph: bool = False
