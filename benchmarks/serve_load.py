"""Load test of GET /recommend: p50/p99 latency and throughput at concurrency 16 on ml-latest-small.

Starts `avrec serve` (EASE fitted on all of ml-latest-small, search off) in a subprocess on a free
loopback port and drives it with `wrk` (Debian package; light on CPU, so the server gets the cores) or,
without wrk, an asyncio httpx client. Users are drawn at random: 90 % known users, 10 % unknown ones
(the popularity fallback). Target: >= 300 req/s with 0 errors on 2 cores.

    nice -n 10 python benchmarks/serve_load.py [--duration 30] [--concurrency 16] [--model ease]

Writes benchmarks/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import Server, ensure_model, machine, percentiles, write_results  # noqa: E402


def user_pool(model_dir: Path, n_unknown_share: float = 0.1, seed: int = 0) -> list[str]:
    import pandas as pd

    users = pd.read_parquet(model_dir / "catalog" / "users.parquet")["user_id"].astype(str).tolist()
    rng = random.Random(seed)
    unknown = [f"visitor-{i}" for i in range(max(1, int(len(users) * n_unknown_share / (1 - n_unknown_share))))]
    pool = users + unknown
    rng.shuffle(pool)
    return pool


WRK_SCRIPT = """
local users = {%s}
local n = #users
math.randomseed(%d)
request = function()
  return wrk.format("GET", "/recommend?k=10&user_id=" .. users[math.random(1, n)])
end
"""


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, users: list[str], concurrency: int, duration: int) -> dict:
    lua = WRK_SCRIPT % (",".join(f'"{u}"' for u in users), 7)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    cmd = ["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{duration}s", "--latency", "--timeout", "10s",
           "-s", f.name, url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        lat[f"p{pct}_ms"] = round(_wrk_ms(value, unit), 2)
    m = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    requests = int(m.group(1))
    elapsed = float(m.group(2)) * (60 if m.group(3) == "m" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", out)
    if mx:
        lat["max_ms"] = round(_wrk_ms(mx.group(1), mx.group(2)), 2)
    return {"client": "wrk", "requests": requests, "seconds": elapsed, "errors": errors,
            "throughput_rps": round(requests / elapsed, 1), **lat, "raw": out}


async def _httpx_load(url: str, users: list[str], concurrency: int, duration: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                user = users[rng.randrange(len(users))]
                t = time.perf_counter()
                try:
                    r = await client.get("/recommend", params={"user_id": user, "k": 10})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"client": "httpx", "requests": len(latencies), "seconds": round(elapsed, 2), "errors": errors,
            "throughput_rps": round(len(latencies) / elapsed, 1), **percentiles(latencies)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ease")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=int, default=30, help="seconds of measured load")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    ap.add_argument("--name", default="serve_load")
    args = ap.parse_args(argv)

    model_dir = ensure_model(args.model, args.model_dir)
    users = user_pool(model_dir)
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    extra = ["--no-search"]
    info = machine()
    server = Server(model_dir, *extra)
    try:
        rss_start = server.rss_mb()
        if client == "wrk":
            run_wrk(server.url, users, args.concurrency, args.warmup)
            cpu0 = server.cpu_seconds()
            result = run_wrk(server.url, users, args.concurrency, args.duration)
        else:
            asyncio.run(_httpx_load(server.url, users, args.concurrency, args.warmup))
            cpu0 = server.cpu_seconds()
            result = asyncio.run(_httpx_load(server.url, users, args.concurrency, args.duration))
        cpu_ms = (server.cpu_seconds() - cpu0) * 1000 / max(result["requests"], 1)
        result["server_cpu_ms_per_request"] = round(cpu_ms, 3)
        # cores the server kept busy on average (event loop, worker threads, BLAS)
        result["server_cores_busy"] = round(cpu_ms * result["throughput_rps"] / 1000, 2)
        rss_end = server.rss_mb()
        import httpx

        metrics = httpx.get(server.url + "/metrics").text
        health = httpx.get(server.url + "/health").json()
    finally:
        server.stop()
    raw = result.pop("raw", None)
    payload = {
        "benchmark": "GET /recommend load", "dataset": "ml-latest-small", "model": health["model"],
        "concurrency": args.concurrency, "known_user_share": 0.9, "k": 10, "server_args": extra,
        **result, "server_rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1)},
        "target": {"throughput_rps": 300, "errors": 0},
        "meets_target": result["throughput_rps"] >= 300 and result["errors"] == 0,
        "machine": info,
        "server_5xx": sum(int(n) for n in re.findall(r'status="5\d\d"} (\d+)', metrics)),
        "command": "nice -n 10 python benchmarks/serve_load.py " + " ".join(argv or sys.argv[1:]),
    }
    md = f"""# /recommend under load ({payload['dataset']}, {payload['model']})

| client | concurrency | requests | seconds | throughput (req/s) | p50 ms | p90 ms | p99 ms | errors | server RSS MiB |
|---|---|---|---|---|---|---|---|---|---|
| {result['client']} | {args.concurrency} | {result['requests']} | {result['seconds']} | {result['throughput_rps']} | {result.get('p50_ms')} | {result.get('p90_ms')} | {result.get('p99_ms')} | {result['errors']} | {payload['server_rss_mb']['end']} |

Target: >= 300 req/s and 0 errors -> {'met' if payload['meets_target'] else 'NOT met'}.
Server CPU per request: {result['server_cpu_ms_per_request']} ms; the server kept {result['server_cores_busy']} of the
{info['cpus']} cores busy (wrk used the rest).
Machine: {info['cpus']} CPUs, load average at start {info['loadavg_at_start']} (shared with other work).
Command: `{payload['command']}`; server args {extra}.
"""
    if raw:
        md += "\n```\n" + raw.strip() + "\n```\n"
    write_results(args.name, payload, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
