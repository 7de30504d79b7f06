"""FastAPI application factory: ``create_app(service)`` wires a
:class:`~avrec.serve.service.RecommenderService` to the routes of :mod:`avrec.serve.routers`, the error
handlers, the middleware, the metrics, the offline API docs and the web page.

Every error is a JSON object ``{"error": message, "detail": ...}`` with a 4xx status for bad input:
422 for a malformed request (the message names the field), 404 for an unknown item or user history,
401/403 for a request without a valid ``X-API-Key`` with the route's scope (checked before the body is
read), 409 for a duplicate item, 413 for a body over ``max_body_bytes``, 429 over the rate limit (with
``Retry-After``), 503 when the event store cannot write (nothing was stored), 504 for a read past
``request_timeout``. CORS is on for ``cors_origins`` only.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from avrec.serve.dependencies import write_routes
from avrec.serve.docs import docs_assets, install_docs
from avrec.serve.fastpath import FastReads
from avrec.serve.handlers import install_error_handlers
from avrec.serve.metrics import Metrics, MetricsMiddleware
from avrec.serve.middleware import InlineReads, RequestGuard
from avrec.serve.routers import ROUTERS
from avrec.serve.routers.web import STATIC_DIR
from avrec.serve.service import RecommenderService

log = logging.getLogger("avrec.serve")


def create_app(service: RecommenderService, *, watch: bool = True) -> FastAPI:
    """The FastAPI app serving ``service``; with ``watch`` it hot-reloads the model folder when it changes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if watch:
            service.start_watching()
        try:
            yield
        finally:
            service.close()

    assets = docs_assets()
    if assets is None:
        log.warning("fastapi-offline is not installed: /docs and /redoc load Swagger UI and ReDoc from a CDN")
    no_cdn_docs: dict[str, Any] = {"docs_url": None, "redoc_url": None} if assets is not None else {}
    app = FastAPI(
        title="avrec",
        description="Recommendations, search and feedback for audio and video catalogues.",
        version=_version(),
        lifespan=lifespan,
        **no_cdn_docs,
    )
    app.state.service = service
    app.state.metrics = metrics = Metrics()
    app.state.inline = InlineReads(service)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # the routers' own routes: FastAPI 0.165+ keeps an included router whole instead of copying its routes
    routes = [r for router in ROUTERS for r in router.routes]
    # innermost: the guard (keys, rate limit, timeouts, headers) and the metrics wrap the fast reads too
    app.add_middleware(FastReads, service=service, inline=app.state.inline, routes=routes)
    app.add_middleware(RequestGuard, service=service, routes=routes, key_routes=write_routes(routes))
    if service.config.cors_origins:  # outside the guard: a browser's preflight carries no key
        app.add_middleware(CORSMiddleware, allow_origins=list(service.config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["X-API-Key", "Content-Type"],
                           expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: refusals are counted too
    if assets is not None:
        install_docs(app, assets)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    from avrec import __version__

    return __version__


__all__ = ["create_app"]
