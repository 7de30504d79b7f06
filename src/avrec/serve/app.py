"""FastAPI application factory: the HTTP API, the web page and Prometheus metrics.

``create_app(service)`` wires a :class:`~avrec.serve.service.RecommenderService` to the routes below.
Every error is a JSON object ``{"error": message, "detail": ...}`` with a 4xx status for bad input:
422 for a malformed request (the message names the field), 404 for an unknown item or user history,
401/403 for writes without a valid ``X-API-Key`` (checked before the body is read), 409 for a duplicate
item, 413 for a body over ``max_body_bytes``.
"""

from __future__ import annotations

import hmac
import importlib.util
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from avrec.errors import AvrecError
from avrec.serve.service import MAX_K, RecommenderService, ServeConfig, ServiceError
from avrec.serve.store import EVENT_TYPES

log = logging.getLogger("avrec.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BATCH = 10_000

#: Every id, in a body, the query string or the path: 1-256 characters, no control characters, no
#: whitespace at either end (the data loader strips ids, so a padded id could never match one).
ID_MAX_LENGTH = 256
ID_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
ID_RULE = "ids are 1-256 characters, without control characters or whitespace at either end"
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]
UserQ = Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ItemQ = Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
UserP = Annotated[str, PathParam(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ItemP = Annotated[str, PathParam(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]


# ---- request and response models -----------------------------------------------------------------
class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str
    explanation: str | None = None
    media_type: str | None = None
    genres: list[str] | None = None
    year: str | None = None


class RecommendResponse(BaseModel):
    user_id: str | None
    fallback: bool
    items: list[RecommendedItem]


class HistoryRequest(BaseModel):
    """An anonymous or new visitor: the items they played or liked, and items to leave out."""

    model_config = ConfigDict(extra="forbid")
    history: list[Id] = Field(default_factory=list, max_length=MAX_BATCH)
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_BATCH)
    k: int = Field(10, ge=1, le=MAX_K)
    explain: bool = False
    details: bool = False
    user_id: Id | None = None


class ScoredItem(BaseModel):
    item_id: str
    score: float
    title: str
    media_type: str | None = None
    genres: list[str] | None = None
    year: str | None = None


class SimilarResponse(BaseModel):
    item_id: str
    items: list[ScoredItem]


class SearchResponse(BaseModel):
    query: str
    user_id: str | None
    personalised: bool
    items: list[ScoredItem]


class ExplainResponse(BaseModel):
    user_id: str | None
    item_id: str
    text: str
    evidence: list[dict[str, Any]]


class FeedbackEvent(BaseModel):
    """One interaction: ``play``, ``like``, ``skip``, ``dislike`` or ``rate`` (with a ``value``)."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    event: Literal["play", "like", "skip", "dislike", "rate"]
    value: float | None = Field(None, allow_inf_nan=False)
    ts: float | None = Field(None, ge=0, allow_inf_nan=False, description="unix seconds; default now")

    @model_validator(mode="after")
    def _rate_needs_value(self) -> FeedbackEvent:
        if self.event == "rate" and self.value is None:
            raise ValueError("a 'rate' event needs a numeric 'value'")
        return self


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_BATCH)


def _one_or_batch(key: str):
    """Pick the batch model when the body has ``key`` (so errors name only the fields of the chosen form)."""
    return lambda v: "batch" if isinstance(v, dict) and key in v else "one"


FeedbackBody = Annotated[
    Annotated[FeedbackEvent, Tag("one")] | Annotated[FeedbackBatch, Tag("batch")],
    Discriminator(_one_or_batch("events")),
]


class FeedbackResponse(BaseModel):
    stored: int
    ids: list[int]


class NewItem(BaseModel):
    """A catalogue item: ``item_id`` plus metadata (strings; lists become ``|``-separated values)."""

    model_config = ConfigDict(extra="allow")
    item_id: Id
    title: str = ""
    media_type: str = ""
    genres: str | list[str] = ""

    @field_validator("genres")
    @classmethod
    def _join(cls, v):
        return "|".join(str(x) for x in v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _extras_are_text(self) -> NewItem:
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, list) and all(isinstance(x, (str, int, float)) for x in value):
                value = "|".join(str(x) for x in value)
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"field {key!r} must be text, a number or a list of text")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field {key!r} must be finite")
            self.model_extra[key] = str(value)
        return self

    def record(self) -> dict[str, str]:
        return {"item_id": self.item_id, "title": self.title, "media_type": self.media_type,
                "genres": self.genres, **(self.model_extra or {})}


class ItemsBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[NewItem] = Field(min_length=1, max_length=MAX_BATCH)


ItemsBody = Annotated[
    Annotated[NewItem, Tag("one")] | Annotated[ItemsBatch, Tag("batch")],
    Discriminator(_one_or_batch("items")),
]


class ItemsResponse(BaseModel):
    added: int
    recommendable: bool
    n_items: int


# ---- metrics -------------------------------------------------------------------------------------
class Metrics:
    """Request counters and latency histograms, rendered in the Prometheus text format (0.0.4)."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list[float]] = {}  # route -> bucket counts + [sum, count]
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.hist.get(route)
            if h is None:
                h = self.hist[route] = [0.0] * (len(self.BUCKETS) + 2)
            for i, b in enumerate(self.BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    @staticmethod
    def _label(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    def render(self, service: RecommenderService) -> str:
        lines = [
            "# HELP avrec_http_requests_total HTTP requests by method, route and status.",
            "# TYPE avrec_http_requests_total counter",
        ]
        with self._lock:
            requests = dict(self.requests)
            hist = {k: list(v) for k, v in self.hist.items()}
        for (method, route, status), n in sorted(requests.items()):
            lines.append(f'avrec_http_requests_total{{method="{method}",route="{self._label(route)}",'
                         f'status="{status}"}} {n}')
        lines += ["# HELP avrec_http_request_duration_seconds Request latency by route.",
                  "# TYPE avrec_http_request_duration_seconds histogram"]
        for route, h in sorted(hist.items()):
            r = self._label(route)
            for b, c in zip(self.BUCKETS, h):
                lines.append(f'avrec_http_request_duration_seconds_bucket{{route="{r}",le="{b}"}} {int(c)}')
            lines.append(f'avrec_http_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {int(h[-1])}')
            lines.append(f'avrec_http_request_duration_seconds_sum{{route="{r}"}} {h[-2]:.6f}')
            lines.append(f'avrec_http_request_duration_seconds_count{{route="{r}"}} {int(h[-1])}')
        state = service.state
        gauges = [
            ("avrec_events_stored", "Feedback events in the durable store.", service.store.count_events()),
            ("avrec_catalog_items", "Items in the served catalogue.", len(state.catalog)),
            ("avrec_model_users", "Users the served model was fitted on.", len(state.model.user_ids)),
            ("avrec_model_loaded_timestamp_seconds", "When the served model was loaded.", state.loaded_at),
            ("avrec_process_start_time_seconds", "When this server started.", self.started),
        ]
        for name, text, value in gauges:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value}"]
        lines += ["# HELP avrec_model_reloads_total Successful hot reloads of the model folder.",
                  "# TYPE avrec_model_reloads_total counter", f"avrec_model_reloads_total {service.reloads}",
                  "# HELP avrec_model_reload_errors_total Failed reload attempts (the old model kept serving).",
                  "# TYPE avrec_model_reload_errors_total counter",
                  f"avrec_model_reload_errors_total {service.reload_errors}",
                  "# HELP avrec_model_info The served model.", "# TYPE avrec_model_info gauge",
                  f'avrec_model_info{{model="{self._label(state.model.name)}"}} 1']
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request under its route template (bounded label set)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("static" if scope["path"].startswith("/static") else "unmatched")
            self.metrics.observe(scope["method"], path, status["code"], time.perf_counter() - start)


def key_problem(config: ServeConfig, given: str | None) -> tuple[int, str] | None:
    """Why a write with ``X-API-Key: given`` is refused, as (status, message); None when it may go on."""
    configured = config.effective_api_key()
    if configured is None:
        if config.insecure_dev:
            return None
        return (403, "writes are disabled: no API key is configured (set AVREC_API_KEY or serve.api_key, "
                     "or start a local demo with --insecure-dev)")
    if not given or not hmac.compare_digest(given.encode(), configured.encode()):
        return 401, "missing or wrong X-API-Key header"
    return None


class RequestGuard:
    """Pure ASGI middleware that refuses a request before its body is read.

    FastAPI reads and parses a body before any dependency runs, so a key check in a dependency came after
    a 100 MB upload had been buffered and parsed. Here, in order: a route that needs the API key
    (``key_routes``) without the right ``X-API-Key`` gets 401/403; a ``Content-Length`` over
    ``config.max_body_bytes`` gets 413; a chunked body (no length) is counted while it streams in and gets
    413 as soon as it passes the limit, so at most the limit is ever held. Refusals carry the usual JSON
    error body and ``Connection: close`` when a body is left unread.
    """

    def __init__(self, app, service: RecommenderService, key_routes: list, routes) -> None:
        self.app = app
        self.service = service
        self.key_routes = key_routes  # filled once the routes exist
        self.routes = routes  # callable: every route, to label refusals in the metrics

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
            route = self._route(scope, self.routes())
            if route is not None:
                scope["route"] = route  # the metrics label
        response = _error(status, message)
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
            problem = key_problem(self.service.config, self._header(scope, b"x-api-key"))
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


# ---- errors --------------------------------------------------------------------------------------
def _error(status: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


def _validation_message(errors: list[dict]) -> str:
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
        start = time.perf_counter()
        try:
            if slow:
                return await run_in_threadpool(fn, *args, **kwargs)
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - start
            if not slow or name not in self.mean_s or spent < self.mean_s[name]:
                # exponential mean; a pooled call only ever lowers it (its wall time includes queueing)
                self.mean_s[name] = 0.9 * self.mean_s.get(name, spent) + 0.1 * spent


# ---- the app -------------------------------------------------------------------------------------
DOCS_ASSETS_URL = "/docs-assets"


def docs_assets() -> Path | None:
    """The folder of Swagger UI and ReDoc files shipped by the ``fastapi-offline`` package (no CDN)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "static"
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
    return folder if all((folder / name).is_file() for name in needed) else None


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
    app = FastAPI(
        title="avrec",
        description="Recommendations, search and feedback for audio and video catalogues.",
        version=_version(),
        lifespan=lifespan,
        **({"docs_url": None, "redoc_url": None} if assets is not None else {}),
    )
    metrics = Metrics()
    app.state.service = service
    app.state.metrics = metrics
    key_routes: list = []
    app.add_middleware(RequestGuard, service=service, key_routes=key_routes, routes=lambda: app.router.routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: refusals are counted too
    inline = InlineReads(service)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError):
        errors = list(exc.errors())
        return _error(422, _validation_message(errors), _jsonable_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return _error(exc.status_code, message)

    @app.exception_handler(ServiceError)
    async def _on_service(request: Request, exc: ServiceError):
        return _error(exc.status, str(exc))

    @app.exception_handler(AvrecError)
    async def _on_avrec(request: Request, exc: AvrecError):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def _on_internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        """Write endpoints: the X-API-Key header must match the configured key.

        ``RequestGuard`` checks the same before the body is read; this keeps the header in the OpenAPI
        schema and guards a write route that the middleware would not know of.
        """
        problem = key_problem(service.config, x_api_key)
        if problem is not None:
            raise StarletteHTTPException(*problem)

    # ---- reads ----
    @app.get("/recommend", response_model=RecommendResponse, response_model_exclude_unset=True, tags=["recommend"])
    async def recommend(user_id: UserQ, k: K = 10, explain: bool = False, details: bool = False):
        """Top-k for a user; unknown users get popular items with ``fallback: true``."""
        return await inline(f"recommend/{explain}/{details}", service.recommend, user_id, k=k, explain=explain,
                            details=details)

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_unset=True, tags=["recommend"])
    async def recommend_history(body: HistoryRequest):
        """Top-k for an anonymous or new user from a history given in the body."""
        return await inline(f"history/{body.explain}/{body.details}", service.recommend_for_history, body.history,
                            k=body.k, exclude=body.exclude, explain=body.explain, details=body.details,
                            user_id=body.user_id)

    @app.get("/similar/{item_id}", response_model=SimilarResponse, response_model_exclude_unset=True,
             tags=["recommend"])
    async def similar(item_id: ItemP, k: K = 10):
        """Items most similar to one item."""
        return await inline("similar", service.similar, item_id, k=k)

    @app.get("/search", response_model=SearchResponse, response_model_exclude_unset=True, tags=["recommend"])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=1000, description="a natural-language request")],
        k: K = 10,
        user_id: Annotated[str | None, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)] = None,
        personal_weight: Annotated[float | None, Query(ge=0, le=1)] = None,
        details: bool = False,
    ):
        """Items matching a sentence, through the text encoder; ``user_id`` blends in that user's scores."""
        if not q.strip():
            raise StarletteHTTPException(422, "invalid request: query.q: must not be blank")
        return service.search(q, k=k, user_id=user_id, personal_weight=personal_weight, details=details)

    @app.get("/explain", response_model=ExplainResponse, tags=["recommend"])
    def explain(user_id: UserQ, item_id: ItemQ):
        """Why this item for this user: evidence and a sentence."""
        return service.explain(user_id, item_id)

    @app.get("/items/{item_id}", tags=["catalogue"])
    def get_item(item_id: ItemP) -> dict[str, Any]:
        """One item's metadata."""
        return service.item(item_id)

    @app.get("/users/{user_id}/history", tags=["users"])
    def history(user_id: UserP,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict[str, Any]:
        """A user's feedback (newest first) and training history."""
        return service.history(user_id, limit=limit)

    @app.get("/users", tags=["users"])
    def users(limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
              offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """User ids the service knows (the model's, then new users from the store)."""
        return service.users(limit=limit, offset=offset)

    # ---- writes ----
    @app.post("/feedback", response_model=FeedbackResponse, dependencies=[Depends(require_key)], tags=["write"])
    def feedback(body: Annotated[FeedbackBody, Body()]):
        """Store one event or ``{"events": [...]}``; answered once the events are durable."""
        events = body.events if isinstance(body, FeedbackBatch) else [body]
        return service.feedback([e.model_dump() for e in events])

    @app.post("/items", response_model=ItemsResponse, dependencies=[Depends(require_key)], tags=["write"])
    def add_items(body: Annotated[ItemsBody, Body()]):
        """Add one item or ``{"items": [...]}`` to the catalogue, searchable (and recommendable) at once."""
        items = body.items if isinstance(body, ItemsBatch) else [body]
        return service.add_items([it.record() for it in items])

    @app.post("/admin/reload", dependencies=[Depends(require_key)], tags=["admin"])
    def reload() -> dict[str, Any]:
        """Load the model folder again and swap it in without dropping requests."""
        return service.reload()

    # ---- operations ----
    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        return service.health()

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(service), media_type="text/plain; version=0.0.4; charset=utf-8")

    # the write routes RequestGuard checks the key of before reading their bodies
    key_routes.extend(r for r in app.routes
                      if any(d.call is require_key for d in getattr(getattr(r, "dependant", None), "dependencies", ())))

    # ---- API docs, served from this process (no CDN: they work offline) ----
    if assets is not None:
        app.mount(DOCS_ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
        oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

        @app.get("/docs", include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
                swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                oauth2_redirect_url=f"{root}{oauth2_redirect}",
                swagger_ui_parameters={"validatorUrl": None},  # no call to the online validator
            )

        @app.get(oauth2_redirect, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        @app.get("/redoc", include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
                redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False,
            )

    # ---- the web page ----
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    try:
        from avrec import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "0"


__all__ = ["create_app", "Metrics", "EVENT_TYPES"]
