"""Event stores: the interface (:class:`EventStore`) and its SQLite and PostgreSQL backends.

``open_store(target)`` (or ``EventStore(target)``) opens a ``postgresql://`` URL with
:class:`~avrec.serve.stores.postgres.PostgresStore` and anything else as a SQLite file with
:class:`~avrec.serve.stores.sqlite.SqliteStore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avrec.serve.stores.base import (
    DEFAULT_RATING_THRESHOLD,
    EVENT_TYPES,
    NEGATIVE_EVENTS,
    POSITIVE_EVENTS,
    Event,
    EventStore,
    StoreUnavailable,
    is_postgres_url,
)
from avrec.serve.stores.postgres import PostgresStore
from avrec.serve.stores.sqlite import SqliteStore


def open_store(target: str | Path, **options: Any) -> EventStore:
    """The store ``target`` names: a ``postgresql://`` URL or a SQLite file path (created when absent)."""
    return EventStore(str(target) if is_postgres_url(str(target)) else Path(target), **options)


__all__ = ["DEFAULT_RATING_THRESHOLD", "EVENT_TYPES", "Event", "EventStore", "NEGATIVE_EVENTS", "POSITIVE_EVENTS",
           "PostgresStore", "SqliteStore", "StoreUnavailable", "is_postgres_url", "open_store"]
