"""Serving: the HTTP API (FastAPI), the durable event store (SQLite WAL) and the model holder.

Layout: ``config`` (ServeConfig), ``store`` (EventStore), ``state`` (one loaded model and what the API
derives from it; folder watching), ``search`` (the text-search index), ``updates`` (stored feedback as
model input), ``service`` (the RecommenderService facade); the HTTP side: ``schemas``, ``dependencies``,
``handlers``, ``middleware``, ``metrics``, ``docs``, ``routers/`` (one module per resource) and ``app``
(``create_app``, wiring only).
"""

from avrec.serve.config import ServeConfig
from avrec.serve.service import RecommenderService
from avrec.serve.store import EventStore

__all__ = ["EventStore", "RecommenderService", "ServeConfig", "create_app"]


def create_app(*args, **kwargs):
    """The FastAPI app (imported lazily so that the store works without FastAPI installed)."""
    from avrec.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
