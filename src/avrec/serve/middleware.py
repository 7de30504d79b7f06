"""ASGI middleware and request plumbing that run before a route: :class:`RequestGuard` applies the rate
limit, the API key scopes, the body size limit (before the body is read), the request timeout and the
security headers; :class:`InlineReads` runs quick reads on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from avrec.serve.handlers import error_response
from avrec.serve.limits import Deadlines, RateLimiter, retry_after
from avrec.serve.security import DOCS_CSP, DOCS_PATHS, ApiKey, security_headers
from avrec.serve.service import RecommenderService

#: (method, path) pairs whose route scope is remembered
SCOPE_MEMO = 4096


class RequestGuard:
    """Pure ASGI middleware that refuses a request before its body is read, and bounds how long it runs.

    FastAPI reads and parses a body before any dependency runs, so a key check in a dependency came after
    a 100 MB upload had been buffered and parsed. Here, in order: a client over its rate limit
    (``config.rate_limit``, per API key or per client address) gets 429 with ``Retry-After``; a route
    that needs a scope (``key_routes``: write, ``/admin/…``: admin, every other API route: read when
    ``config.read_requires_key``) without a key that has it gets 401/403; a ``Content-Length`` over
    ``config.max_body_bytes`` gets 413; a chunked body (no length) is counted while it streams in and gets
    413 as soon as it passes the limit, so at most the limit is ever held. Reads that run past
    ``config.request_timeout`` get 504 (writes run to completion: a write cut off at a deadline might
    still commit, and the client could not tell it from a failed one). Refusals carry the usual JSON
    error body and ``Connection: close`` when a body is left unread. Every response gets the security
    headers (:func:`~avrec.serve.security.security_headers`).

    Per request this adds a dict lookup per check that is on and one token bucket update; the route
    scopes are resolved once, here.
    """

    #: always reachable without a key and never rate limited (load balancer health checks)
    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app, service: RecommenderService, routes: list, key_routes: list) -> None:
        self.app = app
        self.service = service
        self.routes = routes  # the API's routes: refusals are labelled with theirs in the metrics
        self.key_routes = key_routes  # those of them that need the API key
        config = service.config
        key_set = set(map(id, key_routes))
        read_routes = [r for r in routes if id(r) not in key_set and getattr(r, "path", "") not in self.OPEN_PATHS
                       and getattr(r, "include_in_schema", True)]
        # (route, scope) in matching order: writes and admin first, reads only when they need a key
        self.scoped = [(r, "admin" if getattr(r, "path", "").startswith("/admin") else "write") for r in key_routes]
        if config.read_requires_key:
            self.scoped += [(r, "read") for r in read_routes]
        self._scope_memo: dict[tuple[str, str, str], tuple[Any, str | None]] = {}
        self.limiter = RateLimiter(config.rate_limit, config.rate_burst or None) if config.rate_limit > 0 else None
        self.keyed_rates = any(k.get("rate") is not None for k in config.api_keys)
        self.timeout = float(config.request_timeout or 0)
        self.deadlines = Deadlines(self.timeout) if self.timeout > 0 else None
        if config.security_headers:
            self.headers = security_headers(config.content_security_policy)
            self.docs_headers = security_headers(DOCS_CSP)
        else:
            self.headers = self.docs_headers = []

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

    def _scope_of(self, scope) -> tuple[Any, str | None]:
        """The first scoped route that matches (and the scope it needs), memoised per method and path: a
        route's match depends on nothing else, so a repeated path costs one dict lookup."""
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        hit = self._scope_memo.get(key)
        if hit is not None:
            return hit
        hit = (None, None)
        for route, needed in self.scoped:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                hit = (route, needed)
                break
        if len(self._scope_memo) >= SCOPE_MEMO:
            self._scope_memo.clear()  # bounded: paths with ids in them are many
        self._scope_memo[key] = hit
        return hit

    async def _refuse(self, scope, receive, send, status: int, message: str, unread_body: bool,
                      headers: dict[str, str] | None = None) -> None:
        if "route" not in scope:
            route = self._route(scope, self.routes)
            if route is not None:
                scope["route"] = route  # the metrics label
        response = error_response(status, message)
        if unread_body:
            response.headers["connection"] = "close"
        for k, v in (headers or {}).items():
            response.headers[k] = v
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"].startswith(DOCS_PATHS) else self.headers
        started = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        route, needed = self._scope_of(scope) if self.scoped else (None, None)
        if self.deadlines is None or needed in ("write", "admin"):
            await self._guarded(scope, receive, send_with_headers, route, needed)
            return
        task = self.deadlines.enter()
        try:
            await self._guarded(scope, receive, send_with_headers, route, needed)
        except asyncio.CancelledError:
            if not self.deadlines.leave(task):
                raise  # cancelled for another reason (the client left, shutdown)
            task.uncancel()  # type: ignore[union-attr]  # leave() is True only for a task
            if not started:
                await self._refuse(scope, receive, send_with_headers, 504,
                                   f"the request took longer than {self.timeout:g} s (serve setting request_timeout)",
                                   unread_body=True)
        finally:
            self.deadlines.leave(task)

    async def _guarded(self, scope, receive, send, route, needed: str | None) -> None:
        config = self.service.config
        length_header = self._header(scope, b"content-length")
        chunked = length_header is None and self._header(scope, b"transfer-encoding") is not None
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = None  # the server answers a malformed length itself
        has_body = chunked or bool(length)
        given = self._header(scope, b"x-api-key") if (needed or self.limiter or self.keyed_rates) else None
        key = config.keyring().identify(given) if given else None  # one hash per request
        if self.limiter is not None or self.keyed_rates:
            wait = self._rate_wait(scope, key)
            if wait > 0:
                await self._refuse(scope, receive, send, 429, f"too many requests: over the rate limit; retry in "
                                   f"{wait:.2f} s (serve setting rate_limit)", unread_body=has_body,
                                   headers={"retry-after": retry_after(wait)})
                return
        if needed is not None:
            problem = config.keyring().check(key, needed)
            if problem is not None:
                scope["route"] = route
                await self._refuse(scope, receive, send, *problem, unread_body=has_body)
                return
        limit = int(config.max_body_bytes or 0)
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

    def _rate_wait(self, scope, key: ApiKey | None) -> float:
        """Seconds until this client may send again (0: now): its key's bucket, else its address's."""
        if scope["path"] in self.OPEN_PATHS:
            return 0.0
        if key is not None:
            if key.rate is not None:
                return self._keyed().take("key:" + key.name, key.rate)
            return self.limiter.take("key:" + key.name) if self.limiter is not None else 0.0
        if self.limiter is None:
            return 0.0
        client = scope.get("client")
        return self.limiter.take("ip:" + (client[0] if client else "?"))

    def _keyed(self) -> RateLimiter:
        if self.limiter is not None:
            return self.limiter
        self.limiter = RateLimiter(0.0)  # default unlimited; buckets only for keys with their own rate
        return self.limiter


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
