"""ASGI middleware and request plumbing that run before a route: :class:`RequestGuard` refuses a write
without the API key, and a body over the size limit, before the body is read; :class:`InlineReads` runs
quick reads on the event loop.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from avrec.serve.handlers import error_response
from avrec.serve.service import RecommenderService


class RequestGuard:
    """Pure ASGI middleware that refuses a request before its body is read.

    FastAPI reads and parses a body before any dependency runs, so a key check in a dependency came after
    a 100 MB upload had been buffered and parsed. Here, in order: a route that needs the API key
    (``key_routes``) without the right ``X-API-Key`` gets 401/403; a ``Content-Length`` over
    ``config.max_body_bytes`` gets 413; a chunked body (no length) is counted while it streams in and gets
    413 as soon as it passes the limit, so at most the limit is ever held. Refusals carry the usual JSON
    error body and ``Connection: close`` when a body is left unread.
    """

    def __init__(self, app, service: RecommenderService, routes: list, key_routes: list) -> None:
        self.app = app
        self.service = service
        self.routes = routes  # the API's routes: refusals are labelled with theirs in the metrics
        self.key_routes = key_routes  # those of them that need the API key

    @staticmethod
    def _header(scope, name: bytes) -> str | None:
        for key, value in scope.get("headers", ()):
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    def _route(self, scope, candidates) -> Any:
        for route in candidates:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                return route
        return None

    async def _refuse(self, scope, receive, send, status: int, message: str, unread_body: bool) -> None:
        if "route" not in scope:
            route = self._route(scope, self.routes)
            if route is not None:
                scope["route"] = route  # the metrics label
        response = error_response(status, message)
        if unread_body:
            response.headers["connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length_header = self._header(scope, b"content-length")
        chunked = length_header is None and self._header(scope, b"transfer-encoding") is not None
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = None  # the server answers a malformed length itself
        has_body = chunked or bool(length)
        route = self._route(scope, self.key_routes) if self.key_routes else None
        if route is not None:
            problem = self.service.config.key_problem(self._header(scope, b"x-api-key"))
            if problem is not None:
                scope["route"] = route
                await self._refuse(scope, receive, send, *problem, unread_body=has_body)
                return
        limit = int(self.service.config.max_body_bytes or 0)
        if limit <= 0 or not has_body:
            await self.app(scope, receive, send)
            return
        too_big = f"request body too large: the limit is {limit} bytes (serve setting max_body_bytes)"
        if length is not None:
            if length > limit:
                await self._refuse(scope, receive, send, 413, too_big, unread_body=True)
                return
            await self.app(scope, receive, send)
            return
        # chunked: read up to the limit here, then hand the body on as one message
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, 413, too_big, unread_body=True)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        parts.clear()
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class InlineReads:
    """Runs quick reads on the event loop instead of a worker thread.

    Handing each request to the thread pool cost about a fifth of the server's CPU on 2 cores (measured:
    305 → 383 req/s for GET /recommend with EASE). A read runs inline only while its endpoint's recent mean
    time is under ``budget_s`` (a pipeline with a cross-encoder or an explanation goes to the pool, where
    torch releases the GIL) and no writer holds the model (adding items or reloading, which would block
    the loop).
    """

    def __init__(self, service: RecommenderService, budget_s: float = 0.004) -> None:
        self.service = service
        self.budget_s = budget_s
        self.mean_s: dict[str, float] = {}

    async def __call__(self, name: str, fn, /, *args, **kwargs):
        slow = self.mean_s.get(name, 0.0) > self.budget_s or self.service.state.lock.writer_pending
        cost = [0.0]

        def timed():
            # CPU time of the calling thread: a pooled call's wall time would include its wait in the
            # queue and for the GIL, and one slow first call would then keep an endpoint in the pool
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cost[0] = time.thread_time() - start

        try:
            return await run_in_threadpool(timed) if slow else timed()
        finally:
            self.mean_s[name] = 0.9 * self.mean_s.get(name, cost[0]) + 0.1 * cost[0]
