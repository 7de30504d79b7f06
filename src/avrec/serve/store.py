"""The event store's public names, where callers have always imported them from.

``EventStore(path_or_url)`` opens the SQLite backend for a file path and the PostgreSQL backend for a
``postgresql://`` URL; the implementations are in :mod:`avrec.serve.stores`.
"""

from __future__ import annotations

from avrec.serve.stores import (
    DEFAULT_RATING_THRESHOLD,
    EVENT_TYPES,
    NEGATIVE_EVENTS,
    POSITIVE_EVENTS,
    Event,
    EventStore,
    PostgresStore,
    SqliteStore,
    StoreUnavailable,
    is_postgres_url,
    open_store,
)

__all__ = ["DEFAULT_RATING_THRESHOLD", "EVENT_TYPES", "Event", "EventStore", "NEGATIVE_EVENTS", "POSITIVE_EVENTS",
           "PostgresStore", "SqliteStore", "StoreUnavailable", "is_postgres_url", "open_store"]
