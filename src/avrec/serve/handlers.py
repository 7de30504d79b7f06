"""Every error as a JSON object ``{"error": message, "detail": ...}``: 422 for a malformed request (the
message names the field), the status of a :class:`~avrec.serve.errors.ServiceError`, 400 for other
:class:`~avrec.errors.AvrecError`, and 500 with only the exception's type for anything unexpected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from avrec.errors import AvrecError
from avrec.serve.errors import ServiceError
from avrec.serve.schemas import ID_PATTERN, ID_RULE
from avrec.serve.stores.group_commit import Durable

log = logging.getLogger("avrec.serve")


def error_response(status: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


async def durable_json(payload: dict[str, Any], pending: list[Durable]) -> Response:
    """The answer of a list endpoint once the writes it made are durable (its impression, committed with
    the other requests' in one transaction while the event loop serves them), serialised by orjson.

    The payload is already the response model's shape (the service builds it), so FastAPI's validation
    and serialisation of it would only cost time: about a fifth of a cached /recommend.
    """
    return await durable_bytes(orjson.dumps(payload), pending)


async def durable_bytes(body: bytes, pending: list[Durable]) -> Response:
    """A finished JSON ``body``, sent once the writes it made are durable (as :func:`durable_json`)."""
    await wait_durable(pending)
    return Response(body, media_type="application/json")


async def wait_durable(pending: list[Durable]) -> None:
    """Wait, without blocking the event loop, until every write in ``pending`` committed (or raise its error)."""
    for future in pending:
        if isinstance(future, asyncio.Future):
            await future
        elif future.done():
            future.result()
        else:
            await asyncio.wrap_future(future)


def validation_message(errors: list[dict]) -> str:
    """One line naming the first three problems: ``invalid request: query.k: ...``."""
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ())
                       if p not in ("body", "one", "batch") and not str(p).startswith("function-"))
        msg = e.get("msg", "invalid")
        if e.get("type") == "string_pattern_mismatch" and (e.get("ctx") or {}).get("pattern") == ID_PATTERN:
            msg = f"not a valid id ({ID_RULE})"
        parts.append(f"{loc or 'body'}: {msg}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + "; ".join(parts) + more


def _jsonable_errors(errors: list[dict]) -> list[dict]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors[:20]]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError):
        errors = list(exc.errors())
        return error_response(422, validation_message(errors), _jsonable_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, message)

    @app.exception_handler(ServiceError)
    async def _on_service(request: Request, exc: ServiceError):
        return error_response(exc.status, str(exc))

    @app.exception_handler(AvrecError)
    async def _on_avrec(request: Request, exc: AvrecError):
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _on_internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")
