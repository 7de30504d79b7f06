"""What logging impressions costs a /recommend: the served hybrid with and without the impression log, side
by side in one run, under the same wrk load (concurrency 16), each profiled with py-spy per thread.

    python benchmarks/serve_impression_cost.py [--model hybrid] [--duration 20] [--spy-seconds 10]

For each server: throughput and server CPU per request (a measured run of ``--duration`` seconds), then a
py-spy recording (200 Hz, every thread, idle waits left out) under the same load; samples are turned into
microseconds of each thread and function per answered request, so the two servers compare directly. The
sampler slows the server, so the profiled run's figures are never the measured ones.

Writes benchmarks/results/serve_impression_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_common import PYSPY_IDLE, Server, ensure_model, machine, wait_for_search, write_results  # noqa: E402
from serve_load import measure, user_pool  # noqa: E402

RATE = 200
SERVERS = (("logged", []), ("unlogged", ["--set", "serve.log_impressions=false"]))


def _clean(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", re.sub(r"\s*\(/\S*?/(site-packages|src)/", " (", frame))


def spy(server: Server, users: list[str], seconds: int) -> dict:
    """Busy samples per thread and the main thread's per-function samples, with the requests answered."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = Path(tempfile.mkdtemp(prefix="avrec-prof-")) / "profile.raw"
    proc = subprocess.Popen([exe, "record", "--pid", str(server.proc.pid), "--duration", str(seconds), "--rate",
                             str(RATE), "--format", "raw", "--output", str(raw), "--threads", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    load = measure(server, users, "wrk", 16, seconds - 2, 0)
    proc.wait(timeout=seconds + 60)
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or len(frames) < 2 or any(k in frames[-1] for k in PYSPY_IDLE):
            continue
        thread = frames[0].split(":", 1)[-1].strip()
        threads[thread] += int(count)
        if thread == "MainThread":
            names = [_clean(f) for f in frames[1:]]
            own[names[-1]] += int(count)
            for name in set(names):
                inclusive[name] += int(count)
    # busy samples come from the loaded part of the recording (the server idles before and after it)
    per_request = 1e6 / RATE / max(load["requests"], 1)
    return {"load": load, "threads_us": {t: round(n * per_request, 1) for t, n in threads.most_common()},
            "own_us": {f: n * per_request for f, n in own.items()},
            "inclusive_us": {f: n * per_request for f, n in inclusive.items()}}


def diff_rows(a: dict[str, float], b: dict[str, float], top: int) -> list[tuple[str, float, float]]:
    keys = sorted(set(a) | set(b), key=lambda k: -(a.get(k, 0.0) - b.get(k, 0.0)))
    return [(k, round(a.get(k, 0.0), 1), round(b.get(k, 0.0), 1)) for k in keys[:top]]


def _top(us: dict[str, float], n: int = 60) -> dict[str, float]:
    return {k: round(x, 1) for k, x in sorted(us.items(), key=lambda kv: -kv[1])[:n]}


def markdown(rows: dict[str, dict], command: str) -> str:
    logged, unlogged = rows["logged"], rows["unlogged"]
    lines = ["# What the impression log costs a /recommend (served hybrid, wrk, concurrency 16)", "",
             "| server | req/s | server CPU ms/req | cores busy | p50 / p99 ms |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        m = r["measured"]
        lines.append(f"| {name} | {m['throughput_rps']:,.0f} | {m['server_cpu_ms_per_request']} | "
                     f"{m['server_cores_busy']} | {m.get('p50_ms')} / {m.get('p99_ms')} |")
    lines += ["", "Busy time of each thread per answered request (µs; py-spy, idle waits left out):", "",
              "| thread | logged | unlogged |", "|---|---:|---:|"]
    for t in dict.fromkeys([*logged["profile"]["threads_us"], *unlogged["profile"]["threads_us"]]):
        lines.append(f"| {t} | {logged['profile']['threads_us'].get(t, 0)} | "
                     f"{unlogged['profile']['threads_us'].get(t, 0)} |")
    for title, key in (("own time", "own_us"), ("inclusive time", "inclusive_us")):
        lines += ["", f"Main thread, by function ({title}), µs per request, largest difference first:", "",
                  "| function | logged | unlogged |", "|---|---:|---:|"]
        lines += [f"| `{f}` | {a} | {b} |"
                  for f, a, b in diff_rows(logged["profile"][key], unlogged["profile"][key], 15)]
    lines += ["", f"Command: `{command}`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hybrid")
    ap.add_argument("--duration", type=int, default=20, help="seconds of measured load per server")
    ap.add_argument("--spy-seconds", type=int, default=10, help="seconds of py-spy per server, after its run")
    ap.add_argument("--name", default="serve_impression_cost")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("error: needs wrk (Debian package wrk)", file=sys.stderr)
        return 2
    model_dir = ensure_model(args.model)
    users = user_pool(model_dir)
    rows: dict[str, dict] = {}
    for name, extra in SERVERS:
        server = Server(model_dir, "--workers", "1", *extra)
        try:
            wait_for_search(server)
            measured = measure(server, users, "wrk", 16, args.duration, 5)
            rows[name] = {"measured": measured, "profile": spy(server, users, args.spy_seconds)}
            print(name, measured["throughput_rps"], "req/s", file=sys.stderr)
        finally:
            server.stop()
    command = "python benchmarks/serve_impression_cost.py " + " ".join(argv or sys.argv[1:])
    payload = {"machine": machine(), "command": command,
               "rows": {k: {"measured": v["measured"],
                            "profile": {**v["profile"], "own_us": _top(v["profile"]["own_us"]),
                                        "inclusive_us": _top(v["profile"]["inclusive_us"])}}
                        for k, v in rows.items()}}
    write_results(args.name, payload, markdown(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
