"""Prometheus-style metrics: request counters and latency histograms per route template, and service gauges."""

from __future__ import annotations

import threading
import time

from avrec.serve.policy_stats import prometheus_lines
from avrec.serve.service import RecommenderService


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
        assert state.model.user_ids is not None  # a served model is fitted
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
                  f'avrec_model_info{{model="{self._label(state.model.name)}",'
                  f'version="{self._label(state.version or "")}"}} 1']
        lines += prometheus_lines(service.explorer.impressions, service.config.rewards, self._label)
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
        start = scope["avrec.arrived"] = time.perf_counter()  # avrec.serve.changes: checks made after it count
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
