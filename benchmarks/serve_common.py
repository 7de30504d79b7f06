"""Shared helpers for the serving benchmarks: fit a benchmark model, start `avrec serve`, write results."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"
URL_LINE = re.compile(r"open (http://127\.0\.0\.1:\d+)/")


def ensure_model(model: str, folder: Path | None = None) -> Path:
    """A model fitted on all of ml-latest-small (embedded), cached under benchmarks/work/."""
    folder = folder or WORK / f"serve-{model}"
    if not (folder / "config.json").exists():
        import warnings

        from avrec.data.builtin import load_dataset
        from avrec.models.registry import create_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_dataset("ml-latest-small")
        print(f"fitting {model} on {data.name} -> {folder}", file=sys.stderr)
        create_model(model).fit(data).save(folder)
    return folder


class Server:
    """`avrec serve` in a subprocess on a free loopback port; ``url`` once it listens."""

    def __init__(self, model_dir: Path, *extra: str, api_key: str = "bench-key") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="avrec-bench-"))
        self.store = self.tmp / "events.sqlite3"
        env = dict(os.environ, AVREC_API_KEY=api_key, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "avrec.cli", "serve", str(model_dir), "--port", "0", "--store", str(self.store),
               "--watch-interval", "0", *extra]
        self.log = open(self.tmp / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.url = self._wait_url()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _wait_url(self, timeout: float = 300) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line and self.proc.poll() is not None:
                break
            m = URL_LINE.search(line)
            if m:
                return m.group(1)
        self.proc.kill()
        raise RuntimeError(f"avrec serve did not start: {(self.tmp / 'server.log').read_text()[-2000:]}")

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (MiB)."""
        import psutil

        p = psutil.Process(self.proc.pid)
        procs = [p, *p.children(recursive=True)]
        return sum(q.memory_info().rss for q in procs if q.is_running()) / 2**20

    def pss_mb(self) -> float:
        """Proportional set size of the server and its children (MiB): pages shared between worker
        processes (the memory-mapped model files) are counted once, split between them."""
        import psutil

        p = psutil.Process(self.proc.pid)
        total = 0
        for q in [p, *p.children(recursive=True)]:
            try:
                total += q.memory_full_info().pss
            except (psutil.Error, AttributeError):
                total += q.memory_info().rss
        return total / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server and its children."""
        import psutil

        p = psutil.Process(self.proc.pid)
        total = 0.0
        for q in [p, *p.children(recursive=True)]:
            t = q.cpu_times()
            total += t.user + t.system
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


BARE_APP = """
import os, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = open(os.environ["BARE_BODY"], "rb").read()

async def recommend(request):
    return Response(BODY, media_type="application/json")

app = Starlette(routes=[Route("/recommend", recommend)])
config = uvicorn.Config(app, host="127.0.0.1", port=int(os.environ["BARE_PORT"]), log_level="warning", access_log=False)
server = uvicorn.Server(config)
print("open http://127.0.0.1:%d/" % config.port, flush=True)
server.run()
"""


class BareServer(Server):
    """The framework's floor: uvicorn (same loop and parser as `avrec serve`) + Starlette returning ``body``."""

    def __init__(self, body: bytes) -> None:  # noqa: D107 (no super().__init__: a different command)
        import socket

        self.tmp = Path(tempfile.mkdtemp(prefix="avrec-bare-"))
        (self.tmp / "body.json").write_bytes(body)
        (self.tmp / "bare.py").write_text(BARE_APP)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, BARE_BODY=str(self.tmp / "body.json"), BARE_PORT=str(port), PYTHONUNBUFFERED="1")
        self.log = open(self.tmp / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(self.tmp / "bare.py")], stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        self.url = self._wait_url()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        deadline = time.time() + 30  # the line is printed before uvicorn binds: wait until it accepts
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)


def wait_for_search(server: Server, timeout: float = 900, in_a_row: int = 8) -> str:
    """Block until the server's search index is built and its pool warm-up (``serve.warm_pools``) has
    finished (either would otherwise share the cores with the measurement); returns the search's final
    state (ready, or unavailable when search is off). Each look is a new connection, and ``in_a_row``
    looks must agree, so every worker of ``--workers N`` has finished."""
    import httpx

    deadline = time.time() + timeout
    agreed, state = 0, "building"
    while time.time() < deadline:
        try:
            health = httpx.get(server.url + "/health", timeout=60).json()
            warming = not (health.get("pool_warmup") or {"done": True})["done"]
            state = "building" if warming else health["search"]
        except httpx.TransportError:  # workers still loading the model
            state = "building"
        agreed = agreed + 1 if state != "building" else 0
        if agreed >= in_a_row:
            return state
        time.sleep(2 if state == "building" else 0.05)
    return "building"


def fsync_ms(folder: Path, n: int = 200) -> dict[str, float]:
    """p50/p99 of one fsync after an 8 KiB append in ``folder`` (where the server's store lives): the
    floor of a durable commit, which every impression and feedback waits for."""
    import numpy as np

    path = Path(folder) / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 8192)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    a = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
    }


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(f"wrote {RESULTS / name}.json and .md", file=sys.stderr)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    import numpy as np

    if not latencies_s:
        return {"p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    a = np.asarray(latencies_s) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


PYSPY_IDLE = ("select (", "epoll", "wait (threading", "_worker (concurrent", "get (queue", "_loop (avrec/serve/stores")


def py_spy_summary(raw: Path, top: int = 30) -> dict[str, Any]:
    """Top functions by inclusive and by own share of the busy samples of a ``py-spy record --format raw``
    file (idle threads waiting on a select, a lock or a queue are left out)."""
    import collections

    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first frame names the thread
        if not frames or any(k in frames[-1] for k in PYSPY_IDLE):
            continue
        n = int(count)
        busy += n
        names = [re.sub(r":\d+\)$", ")", re.sub(r"\s*\(/\S*?/(site-packages|src)/", " (", f)) for f in frames]
        for f in set(names):
            inclusive[f] += n
        own[names[-1]] += n
    share = lambda c: [(f, round(100 * n / max(busy, 1), 1)) for f, n in c.most_common(top)]  # noqa: E731
    return {"busy_samples": busy, "inclusive_pct": share(inclusive), "self_pct": share(own)}
