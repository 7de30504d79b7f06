"""Group commit of feedback: acknowledged writes per second with and without it, side by side in one run.

For each backend (SQLite on the local disk, WAL + synchronous=FULL; PostgreSQL 15 from a throwaway
cluster on 127.0.0.1 with fsync on) and each number of concurrent writers (threads of one process, as a
server's request threads are), every writer calls ``add_events`` with one event in a loop for
``--seconds``; each call returns only after its commit. Reported: acknowledged events per second, commits,
events per commit, and the p50/p99 time to acknowledgement. The speed-up is the ratio of the two modes
measured in the same run on the same disk.

    python benchmarks/store_group_commit.py [--seconds 3] [--writers 1,8,32]

Writes benchmarks/results/store_group_commit.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL cluster of the tests

from avrec.serve.store import EventStore  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def run_cell(target: str, writers: int, group: bool, seconds: float) -> dict:
    store = EventStore(target, group_commit=group)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    stop = time.perf_counter() + seconds
    start_gate = threading.Barrier(writers)

    def write(n: int) -> None:
        start_gate.wait()
        own = latencies[n]
        while True:
            t = time.perf_counter()
            if t >= stop:
                return
            store.add_events([{"user_id": f"w{n}", "item_id": f"i{len(own)}", "event": "play"}])
            own.append(time.perf_counter() - t)

    before = store.count_events()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    acked = sum(len(x) for x in latencies)
    stored = store.count_events() - before
    stats = store.commit_stats()
    store.close()
    lat = np.concatenate([np.asarray(x) for x in latencies]) if acked else np.zeros(1)
    commits = stats["commits"] if group else acked
    return {"writers": writers, "group_commit": group, "acked": acked, "stored": stored,
            "events_per_s": round(acked / wall, 1), "commits": commits,
            "events_per_commit": round(acked / max(commits, 1), 2),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--writers", default="1,8,32")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    writers = [int(w) for w in args.writers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="avrec-gc-", dir=ROOT / "benchmarks"))  # the real disk, not a tmpfs
    cluster = None
    targets = {"sqlite": lambda n: str(work / f"s{n}.sqlite3")}
    why_no_pg = "skipped (--no-postgres)"
    if not args.no_postgres:
        from pg_fixtures import _start_own

        cluster, why_no_pg = _start_own()
        if cluster is not None:
            targets["postgresql"] = lambda n: cluster.new_database()
    rows = []
    try:
        n = 0
        for backend, make in targets.items():
            for w in writers:
                for group in (False, True):  # side by side: same disk, same minute
                    n += 1
                    row = run_cell(make(n), w, group, args.seconds)
                    assert row["stored"] == row["acked"], row  # every acknowledged event is stored
                    rows.append({"backend": backend, **row})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    speedups = {}
    for backend in targets:
        for w in writers:
            off = next(r for r in rows if r["backend"] == backend and r["writers"] == w and not r["group_commit"])
            on = next(r for r in rows if r["backend"] == backend and r["writers"] == w and r["group_commit"])
            speedups[f"{backend}/{w}"] = round(on["events_per_s"] / off["events_per_s"], 2)
    result = {"command": "python benchmarks/store_group_commit.py " + " ".join(sys.argv[1:]),
              "seconds": args.seconds, "machine": f"{platform.machine()}, {platform.python_version()}",
              "postgres": "ran" if "postgresql" in targets else why_no_pg, "rows": rows, "speedup": speedups}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "store_group_commit.json").write_text(json.dumps(result, indent=2))
    lines = ["# Group commit of feedback (acknowledged = committed)", "",
             f"`{result['command']}`; {args.seconds:g} s per cell; one event per add_events call; "
             f"PostgreSQL: {result['postgres']}.", "",
             "| backend | writers | group commit | events/s | commits | events/commit | p50 ms | p99 ms | speed-up |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sp = f"{speedups[r['backend'] + '/' + str(r['writers'])]:.2f}×" if r["group_commit"] else ""
        lines.append(f"| {r['backend']} | {r['writers']} | {'on' if r['group_commit'] else 'off'} | "
                     f"{r['events_per_s']:.0f} | {r['commits']} | {r['events_per_commit']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {sp} |")
    (OUT / "store_group_commit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
