"""Serving: the HTTP API (FastAPI), the durable event store (SQLite WAL) and the model holder."""

from avrec.serve.service import RecommenderService, ServeConfig
from avrec.serve.store import EventStore

__all__ = ["RecommenderService", "ServeConfig", "EventStore", "create_app"]


def create_app(*args, **kwargs):
    """The FastAPI app (imported lazily so that the store works without FastAPI installed)."""
    from avrec.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
