"""Load test of GET /recommend at concurrency 16 on ml-latest-small, as ratios of the framework's floor.

In one run, one after another with the same client: a bare uvicorn + Starlette endpoint that returns a
same-sized JSON body (the most this machine's cores give through this framework), then `avrec serve`
with the model `make demo` serves (hybrid, search on; with --workers 1 and 2 processes) and with EASE
beside it. Each model is fitted on all of ml-latest-small (embedded). The client is `wrk` (Debian
package `wrk`; light on CPU, so the server gets the cores) or, without it, an asyncio httpx client.
Users are drawn at random: 90 % known users, 10 % unknown ones (the popularity fallback).

    nice -n 10 python benchmarks/serve_load.py [--duration 20] [--concurrency 16] [--models hybrid,ease]
        [--workers 1,2] [--unlogged-workers 1,2] [--profile 12]

Every answered list is an impression committed durably before the answer (one fsync per group
commit), so the run also measures the store disk's fsync time and the impressions per commit, and
serves the first model once more with ``serve.log_impressions = false`` (``--unlogged-workers``): what
the serving path gives without waiting for the disk.

Writes benchmarks/results/serve_load.{json,md} (and serve_profile.{json,md} with --profile).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import (  # noqa: E402
    BareServer,
    Server,
    ensure_model,
    fsync_ms,
    machine,
    percentiles,
    py_spy_summary,
    wait_for_search,
    write_results,
)


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
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
            "throughput_rps": round(requests / elapsed, 1), "client_cores_busy": round(client_cpu / elapsed, 2),
            **lat, "raw": out}


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


def measure(server: Server, users: list[str], client: str, concurrency: int, duration: int, warmup: int) -> dict:
    """Warm up, then load ``server`` for ``duration`` seconds; adds server CPU per request and RSS."""
    if client == "wrk":
        if warmup > 0:
            run_wrk(server.url, users, concurrency, warmup)
        cpu0 = server.cpu_seconds()
        result = run_wrk(server.url, users, concurrency, duration)
    else:
        if warmup > 0:
            asyncio.run(_httpx_load(server.url, users, concurrency, warmup))
        cpu0 = server.cpu_seconds()
        result = asyncio.run(_httpx_load(server.url, users, concurrency, duration))
    cpu_ms = (server.cpu_seconds() - cpu0) * 1000 / max(result["requests"], 1)
    result["server_cpu_ms_per_request"] = round(cpu_ms, 3)
    # cores the server kept busy on average (event loop, worker threads, BLAS)
    result["server_cores_busy"] = round(cpu_ms * result["throughput_rps"] / 1000, 2)
    result["server_rss_mb"] = round(server.rss_mb(), 1)
    result["server_pss_mb"] = round(server.pss_mb(), 1)
    result.pop("raw", None)
    return result


def profile(server: Server, users: list[str], client: str, concurrency: int, seconds: int) -> dict:
    """py-spy on the loaded server (all its processes) for ``seconds``, after the measured run (the
    sampling costs the server CPU, so it is never part of a measured figure)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = Path(tempfile.mkdtemp(prefix="avrec-prof-")) / "profile.raw"
    cmd = [spy, "record", "--pid", str(server.proc.pid), "--duration", str(seconds), "--rate", "200",
           "--format", "raw", "--output", str(raw), "--nonblocking", "--subprocesses"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    result = measure(server, users, client, concurrency, seconds - 2, 0) if client == "wrk" else {}
    proc.wait(timeout=seconds + 60)
    return {"load_during_profile": result, **py_spy_summary(raw, top=400)}


def profile_markdown(model: str, prof: dict, command: str) -> str:
    lines = [f"# Where a /recommend goes: py-spy on `avrec serve` ({model}) under wrk, concurrency 16", "",
             f"{prof['busy_samples']} busy samples at 200 Hz over every thread of the server (threads waiting on "
             "a select, a lock or a queue left out). Recorded after the measured run of serve_load.py, so the "
             "sampler's own cost is in no measured figure.", "",
             "| avrec function (inclusive: its own time and its callees') | share of busy samples |", "|---|---:|"]
    lines += [f"| `{f}` | {pct}% |" for f, pct in prof["inclusive_pct"] if "avrec/" in f and "cli/" not in f][:30]
    lines += ["", "| any function (own time) | share of busy samples |", "|---|---:|"]
    lines += [f"| `{f}` | {pct}% |" for f, pct in prof["self_pct"][:30]]
    lines += ["", f"Command: `{command}`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="hybrid,ease", help="avrec models to serve, in order (hybrid = the demo's)")
    ap.add_argument("--workers", default="1,2", help="worker counts to serve the first model with (--workers N)")
    ap.add_argument("--unlogged-workers", default="1,2",
                    help="worker counts to serve the first model with impressions not logged ('': none)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=int, default=20, help="seconds of measured load per server")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    ap.add_argument("--profile", type=int, default=0, help="seconds of py-spy on the first model after its run "
                                                           "(writes serve_profile.md; 0: none)")
    ap.add_argument("--name", default="serve_load")
    args = ap.parse_args(argv)
    import httpx

    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    info = machine()
    command = "nice -n 10 python benchmarks/serve_load.py " + " ".join(argv or sys.argv[1:])
    rows: list[dict] = []
    body = None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    runs = [(models[0], int(w), True) for w in args.workers.split(",")] + [(m, 1, True) for m in models[1:]]
    runs += [(models[0], int(w), False) for w in args.unlogged_workers.split(",") if w.strip()]
    fsync = None
    for name, workers, logged in runs:
        model_dir = ensure_model(name)
        users = user_pool(model_dir)
        extra = [] if logged else ["--set", "serve.log_impressions=false"]
        server = Server(model_dir, "--workers", str(workers), *extra)  # as `avrec serve` starts: search on
        try:
            fsync = fsync or fsync_ms(server.tmp)
            search = wait_for_search(server)
            health = httpx.get(server.url + "/health", timeout=600).json()
            body = body or httpx.get(server.url + "/recommend", params={"user_id": users[0], "k": 10}).content
            if args.warmup > 0:  # first lists of the users (pool cache misses) mostly fall in here
                if client == "wrk":
                    run_wrk(server.url, users, args.concurrency, args.warmup)
                else:
                    asyncio.run(_httpx_load(server.url, users, args.concurrency, args.warmup))
            before = httpx.get(server.url + "/health").json()
            result = measure(server, users, client, args.concurrency, args.duration, 0)
            after = httpx.get(server.url + "/health").json()
            metrics = httpx.get(server.url + "/metrics").text
            result["server_5xx"] = sum(int(n) for n in re.findall(r'status="5\d\d"} (\d+)', metrics))
            result["pool_cache"] = after.get("pool_cache")
            result["changes"] = after.get("changes")
            if workers == 1 and logged:  # one process: its /health counts every commit of the run
                commits = after["impression_commits"]["commits"] - before["impression_commits"]["commits"]
                carried = after["impression_commits"]["impressions"] - before["impression_commits"]["impressions"]
                result["impression_commits_per_s"] = round(commits / result["seconds"], 1)
                result["impressions_per_commit"] = round(carried / max(commits, 1), 2)
            if args.profile and workers == 1 and name == models[0] and logged:
                prof = profile(server, users, client, args.concurrency, args.profile)
                write_results("serve_profile", {"model": name, **prof, "machine": info, "command": command},
                              profile_markdown(name, prof, command))
        finally:
            server.stop()
        label = (f"avrec serve {health['model']} (search {search})" + (f", --workers {workers}" if workers > 1 else "")
                 + ("" if logged else ", impressions not logged"))
        rows.append({"server": label, "model": health["model"], "workers": workers, "impressions_logged": logged,
                     **result})
    bare = BareServer(body)
    try:
        result = measure(bare, ["x"], client, args.concurrency, args.duration, args.warmup)
    finally:
        bare.stop()
    rows.insert(0, {"server": f"bare uvicorn + Starlette, same {len(body)}-byte JSON body", "model": None,
                    "workers": 1, **result})
    floor = rows[0]["throughput_rps"]
    for r in rows:
        r["share_of_bare_throughput"] = round(r["throughput_rps"] / floor, 3)
    one = next((r for r in rows if r["model"] == "hybrid" and r["workers"] == 1 and r["impressions_logged"]), None)
    targets = {}
    if one is not None:
        targets = {"hybrid_share_of_bare_ge_0.5": one["share_of_bare_throughput"] >= 0.5,
                   "hybrid_cpu_ms_per_request_le_1": one["server_cpu_ms_per_request"] <= 1.0}
    payload = {
        "benchmark": "GET /recommend load", "dataset": "ml-latest-small", "concurrency": args.concurrency,
        "known_user_share": 0.9, "k": 10, "client": client, "duration_s": args.duration, "rows": rows,
        "targets_met": targets, "fsync_ms": fsync, "machine": info, "command": command,
    }
    lines = [
        f"# GET /recommend under load (ml-latest-small, concurrency {args.concurrency}, {client})", "",
        "| server | throughput (req/s) | share of bare | p50 ms | p99 ms | server CPU ms/request | errors | "
        "RSS MiB (sum) | PSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['server']} | {r['throughput_rps']} | {r['share_of_bare_throughput']:.1%} | "
                     f"{r.get('p50_ms')} | {r.get('p99_ms')} | {r['server_cpu_ms_per_request']} | {r['errors']} | "
                     f"{r['server_rss_mb']} | {r['server_pss_mb']} |")
    for logged in (True, False):
        scaling = [r for r in rows if r["model"] == models[0] and r.get("impressions_logged", True) == logged]
        if len(scaling) > 1:
            base = scaling[0]["throughput_rps"]
            lines += ["", f"Workers ({models[0]}, impressions {'logged' if logged else 'not logged'}): " + ", ".join(
                f"N={r['workers']} {r['throughput_rps']} req/s ({r['throughput_rps'] / base:.2f}x; cores busy: server "
                f"{r['server_cores_busy']}, wrk {r.get('client_cores_busy')})" for r in scaling) + "."]
    lines += ["", "RSS sums every process (shared pages counted in each); PSS splits shared pages between them."]
    if one is not None and fsync and "impressions_per_commit" in one:
        # facts only: the probe's fsync and the commit cycle differed between runs on this shared disk, so
        # no bound is derived from the probe
        lines += ["", f"The disk under the store: one fsync of an 8 KiB append took {fsync['p50_ms']} ms (p50; p99 "
                  f"{fsync['p99_ms']} ms) before the runs. Each answered list waits for its impression's group commit: "
                  f"{one['impression_commits_per_s']} commits/s carrying {one['impressions_per_commit']} impressions "
                  f"each in the hybrid run (one commit every "
                  f"{1000 / max(one['impression_commits_per_s'], 1e-9):.1f} ms), so its throughput is those two "
                  "multiplied."]
    if targets:
        lines += ["", "Targets (hybrid, one worker): throughput >= 50% of bare: "
                  f"{'met' if targets['hybrid_share_of_bare_ge_0.5'] else 'MISSED'} "
                  f"({one['share_of_bare_throughput']:.1%}); server CPU <= 1 ms/request: "
                  f"{'met' if targets['hybrid_cpu_ms_per_request_le_1'] else 'MISSED'} "
                  f"({one['server_cpu_ms_per_request']} ms)."]
    lines += ["", f"Measured one after another in one run, {args.duration} s each after {args.warmup} s of warm-up, "
              f"with the same client. Machine: {info['cpus']} CPUs shared by the server and the client, load average "
              f"at start {info['loadavg_at_start']}.", f"Command: `{command}`."]
    md = "\n".join(lines)
    write_results(args.name, payload, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
