"""The hot reads without FastAPI's per-request work: ``GET /recommend`` and ``GET /similar/{item_id}``.

FastAPI solves each route's dependencies and validates every query parameter through pydantic on
every request: measured in-process, about 0.3 ms of a cached ``/recommend`` whose own work is 0.1 ms.
:class:`FastReads` is pure ASGI middleware inside the request guard (so the rate limit, the key scopes,
the timeouts, the security headers and the metrics apply as before) that answers these two routes
itself when their query string is plainly valid, and hands everything else to FastAPI unchanged.

"Plainly valid" is a strict subset of what the FastAPI routes accept, so an answer never differs:
only the routes' own parameter names, each at most once; ids of printable ASCII without whitespace at
either end (the API's id rule allows more; those go to FastAPI), ``k`` as plain digits within
``[1, MAX_K]``, booleans spelled ``true``/``false``/``1``/``0``. Anything else (a missing or malformed
parameter, an unknown one, percent-escapes that decode to other characters) is answered by the FastAPI
route, which gives the 422 naming the parameter. The OpenAPI schema is FastAPI's, untouched. Service
errors are answered as the app's error handlers answer them; anything unexpected propagates to the
app's 500 handler.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from avrec.errors import AvrecError
from avrec.serve.config import MAX_K
from avrec.serve.errors import ServiceError
from avrec.serve.handlers import error_response, wait_durable
from avrec.serve.middleware import InlineReads
from avrec.serve.service import RecommenderService
from avrec.serve.stores.group_commit import Durable, PendingWrites

#: the ids the fast path takes: printable ASCII, no space at either end, at most 256 characters
#: (every one of them passes the API's id rule, schemas.ID_PATTERN)
PLAIN_ID = re.compile(r"[!-~](?:[ -~]{0,254}[!-~])?")
PLAIN_K = re.compile(r"[1-9][0-9]{0,3}")
PLAIN_BY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BOOLS = {"true": True, "false": False, "1": True, "0": False}
JSON_HEADERS = [(b"content-type", b"application/json")]


def _plain_id(value: str) -> str | None:
    return value if PLAIN_ID.fullmatch(value) else None


def _plain_k(value: str) -> int | None:
    if not PLAIN_K.fullmatch(value):
        return None
    k = int(value)
    return k if k <= MAX_K else None


#: per route: parameter name -> (parser giving None for anything not plainly valid, keyword)
Parser = Callable[[str], Any]
RECOMMEND: dict[str, Parser] = {"user_id": _plain_id, "k": _plain_k, "explain": BOOLS.get, "details": BOOLS.get,
                                "profile": _plain_id}
SIMILAR: dict[str, Parser] = {"k": _plain_k, "profile": _plain_id,
                              "by": lambda v: v if PLAIN_BY.fullmatch(v) else None}


def plain_params(query_string: bytes, spec: dict[str, Parser]) -> dict[str, Any] | None:
    """The parsed parameters when every one is in ``spec``, given once and plainly valid; else None."""
    out: dict[str, Any] = {}
    if not query_string:
        return out
    # decoded as Starlette decodes it for FastAPI
    for name, raw in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        parse = spec.get(name)
        if parse is None or name in out:
            return None
        value = parse(raw)
        if value is None:
            return None
        out[name] = value
    return out


async def recommend_body(service: RecommenderService, inline: InlineReads, user_id: str, k: int, explain: bool,
                         details: bool, profile: str | None, pending: list[Durable], arrived: float | None) -> bytes:
    """The body of a GET /recommend (this fast path's and the FastAPI route's): one store check per loop
    turn, then the kept answer on the event loop (microseconds), or else the list built by
    :class:`InlineReads` (in the thread pool while builds cost more than its budget: milliseconds of
    scoring must not stall the loop)."""
    if arrived is not None:
        await service.changes.settle(arrived)  # one store check for the requests of a loop turn
    kept = service.recommend_kept(user_id, k=k, explain=explain, details=details, profile=profile, pending=pending,
                                  arrived=arrived)
    if kept is not None:
        return kept
    return await inline(f"recommend/{explain}/{details}", service.recommend_json, user_id, k=k, explain=explain,
                        details=details, profile=profile, pending=pending, arrived=arrived)


async def similar_body(service: RecommenderService, inline: InlineReads, item_id: str, k: int, profile: str | None,
                       by: str, pending: list[Durable]) -> bytes:
    """The body of a GET /similar/{item_id}, as :func:`recommend_body` gives /recommend's."""
    kept = service.similar_kept(item_id, k=k, profile=profile, by=by, pending=pending)
    if kept is not None:
        return kept
    return await inline("similar", service.similar_json, item_id, k=k, profile=profile, by=by, pending=pending)


class FastReads:
    """Pure ASGI middleware answering plainly valid ``GET /recommend`` and ``GET /similar/{id}``."""

    def __init__(self, app, service: RecommenderService, inline: InlineReads, routes: list) -> None:
        self.app = app
        self.service = service
        self.inline = inline
        by_path = {getattr(r, "path", None): r for r in routes if "GET" in (getattr(r, "methods", None) or ())}
        self.recommend_route = by_path.get("/recommend")
        self.similar_route = by_path.get("/similar/{item_id}")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path = scope["path"]
            if path == "/recommend" and self.recommend_route is not None:
                params = plain_params(scope["query_string"], RECOMMEND)
                if params is not None and "user_id" in params:
                    scope["route"] = self.recommend_route  # the metrics label
                    await self._answer(scope, receive, send, self._recommend, params)
                    return
            elif path.startswith("/similar/") and self.similar_route is not None:
                item_id = _plain_id(path[len("/similar/"):])
                params = plain_params(scope["query_string"], SIMILAR) if item_id and "/" not in item_id else None
                if params is not None:
                    scope["route"] = self.similar_route
                    await self._answer(scope, receive, send, self._similar, {"item_id": item_id, **params})
                    return
        await self.app(scope, receive, send)

    async def _recommend(self, scope, p: dict[str, Any], pending: list[Durable]) -> bytes:
        return await recommend_body(self.service, self.inline, p["user_id"], p.get("k", 10), p.get("explain", False),
                                    p.get("details", False), p.get("profile"), pending, scope.get("avrec.arrived"))

    async def _similar(self, scope, p: dict[str, Any], pending: list[Durable]) -> bytes:
        return await similar_body(self.service, self.inline, p["item_id"], p.get("k", 10), p.get("profile"),
                                  p.get("by", "model"), pending)

    async def _answer(self, scope, receive, send, run, params: dict[str, Any]) -> None:
        pending = PendingWrites(asyncio.get_running_loop())
        try:
            body = await run(scope, params, pending)
            await wait_durable(pending)
        except ServiceError as e:  # as the app's handlers answer them (handlers.install_error_handlers)
            await error_response(e.status, str(e))(scope, receive, send)
            return
        except AvrecError as e:
            await error_response(400, str(e))(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), *JSON_HEADERS]})
        await send({"type": "http.response.body", "body": body})
