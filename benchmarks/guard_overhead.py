"""What the request guard (rate limit, key scopes, body cap, timeout, security headers) costs per request.

The same tiny ASGI endpoint is called in-process (no sockets, no HTTP parsing) bare and behind
:class:`~avrec.serve.middleware.RequestGuard` in three settings, interleaved round by round in one run,
so the differences are the guard's own CPU time:

- ``guard, defaults``: security headers and the 30 s read timeout on; no rate limit; a GET (no key needed)
- ``guard, rate limit``: plus a token bucket per client address
- ``guard, keyed write``: a POST that needs the write scope, with a hashed key and a per-key rate limit

    python benchmarks/guard_overhead.py [--requests 20000] [--rounds 5]

Writes benchmarks/results/guard_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import types
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.routing import Route

from avrec.serve.config import ServeConfig
from avrec.serve.middleware import RequestGuard
from avrec.serve.security import hash_key

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
KEY = "bench-key"


async def endpoint(scope, receive, send) -> None:
    await JSONResponse({"ok": True})(scope, receive, send)


def variants() -> dict:
    def route(request):  # only for matching: the guard never calls it
        return None

    write_route = Route("/feedback", route, methods=["POST"])
    read_route = Route("/recommend", route, methods=["GET"])
    keys = [{"name": "ingest", "hash": hash_key(KEY), "scopes": ["write"], "rate": 1e9}]
    plain = types.SimpleNamespace(config=ServeConfig())
    limited = types.SimpleNamespace(config=ServeConfig(rate_limit=1e9))
    keyed = types.SimpleNamespace(config=ServeConfig(api_keys=keys, rate_limit=1e9))
    routes = [read_route, write_route]
    return {
        "bare": (endpoint, "GET", "/recommend", []),
        "guard, defaults": (RequestGuard(endpoint, plain, routes, [write_route]), "GET", "/recommend", []),
        "guard, rate limit": (RequestGuard(endpoint, limited, routes, [write_route]), "GET", "/recommend", []),
        "guard, keyed write": (RequestGuard(endpoint, keyed, routes, [write_route]), "POST", "/feedback",
                               [(b"x-api-key", KEY.encode())]),
    }


async def run(app, method: str, path: str, headers: list, n: int) -> float:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        return None

    start = time.perf_counter()
    for _ in range(n):
        scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b"",
                 "client": ("127.0.0.1", 5000), "root_path": ""}
        await app(scope, receive, send)
    return (time.perf_counter() - start) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    apps = variants()
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved: each round runs every variant once
        for name, (app, method, path, headers) in apps.items():
            t = asyncio.run(run(app, method, path, headers, args.requests))
            best[name] = min(best.get(name, t), t)
    rows = [{"variant": name, "us_per_request": round(t * 1e6, 2),
             "guard_us": round((t - best["bare"]) * 1e6, 2), "ratio_to_bare": round(t / best["bare"], 2)}
            for name, t in best.items()]
    result = {"command": "python benchmarks/guard_overhead.py " + " ".join(sys.argv[1:]),
              "requests": args.requests, "rounds": args.rounds, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "guard_overhead.json").write_text(json.dumps(result, indent=2))
    lines = ["# Request guard overhead (in-process ASGI calls, best of the rounds)", "",
             f"`{result['command']}`: {args.requests} requests × {args.rounds} interleaved rounds.", "",
             "| variant | µs per request | guard's µs | × bare |", "|---|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['us_per_request']:.2f} | {r['guard_us']:.2f} | {r['ratio_to_bare']:.2f} |"
              for r in rows]
    (OUT / "guard_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
