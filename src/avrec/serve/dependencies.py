"""FastAPI dependencies: the service a route works on, the inline-reads runner, and the API key of writes.

They are ``async`` so that FastAPI resolves them on the event loop: a plain ``def`` dependency would be
sent to the thread pool, the hop :class:`~avrec.serve.middleware.InlineReads` exists to avoid.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.exceptions import HTTPException

from avrec.serve.middleware import InlineReads
from avrec.serve.service import RecommenderService


async def get_service(request: Request) -> RecommenderService:
    return request.app.state.service


async def get_inline(request: Request) -> InlineReads:
    return request.app.state.inline


async def require_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Write endpoints: the X-API-Key header must match the configured key.

    ``RequestGuard`` checks the same before the body is read; this keeps the header in the OpenAPI schema
    and guards a write route that the middleware would not know of.
    """
    problem = request.app.state.service.config.key_problem(x_api_key)
    if problem is not None:
        raise HTTPException(*problem)


Service = Annotated[RecommenderService, Depends(get_service)]
Inline = Annotated[InlineReads, Depends(get_inline)]
#: the dependency list of a write route (``RequestGuard`` finds these routes by it)
WRITE = [Depends(require_key)]


def write_routes(routes: list) -> list:
    """The routes that need the API key: those whose dependencies include ``require_key``."""
    return [r for r in routes
            if any(d.call is require_key for d in getattr(getattr(r, "dependant", None), "dependencies", ()))]
