"""What logging one impression costs the server: CPU per impression and impressions per second, side by side.

A served list waits for its impression's group commit (:mod:`avrec.serve.impressions`), so this CPU and
this commit cycle come on top of every answer. Sixteen asyncio clients on one event loop (as the
server's requests are) each log an impression the size of a served hybrid list (10 shown items, a
candidates record of 50 candidates with 6 features each) and wait until it is durable, in a loop. Three
write paths, interleaved in rounds on the same disk in one run:

- ``inline``: every row carries its whole candidates record and a random (uuid4) id, waited for through
  a thread future and ``asyncio.wrap_future`` (how avrec logged impressions before it stored records once);
- ``dedup, thread futures``: the current :class:`~avrec.serve.impressions.ImpressionLog` (record stored once
  in ``candidate_sets``, time-ordered ids), waited for through a thread future;
- ``dedup, loop futures``: the same with the request's event loop (what the server does): one wake-up of
  the loop per committed batch.

CPU is the process's user + system time per impression (the writer thread's SQLite work and fsync
calls included); bytes are the database file's growth per impression after a checkpoint.

    python benchmarks/impression_log.py [--impressions 6000] [--rounds 3]

Writes benchmarks/results/impression_log.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from avrec.serve.handlers import wait_durable
from avrec.serve.impressions import ImpressionLog
from avrec.serve.store import EventStore
from avrec.serve.stores.group_commit import GroupCommitter

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
CLIENTS = 16
MODES = ["inline", "dedup, thread futures", "dedup, loop futures"]


def served_row(log: ImpressionLog, rng: np.random.Generator) -> tuple:
    """An impression row shaped like one of the served hybrid's answers."""
    items = [{"item_id": str(int(rng.integers(1, 200_000))), "position": i, "score": float(rng.random()),
              "propensity": 1.0, "explored": False, "candidate": i} for i in range(10)]
    record = {"item_ids": [str(int(x)) for x in rng.integers(1, 200_000, 50)],
              "scores": rng.random(50).tolist(), "features": rng.random((50, 6)).tolist(),
              "feature_names": ["score", "rank", "popularity", "novelty", "age", "seen_genre"]}
    return log.row(user_id="u1", endpoint="recommend", policy="greedy", policy_version=1, model="hybrid",
                   model_version="v1", items=items, candidates=record, context={"k": 10})


def inline_committer(log: ImpressionLog) -> GroupCommitter:
    """The write path before candidate_sets: the whole record in every row, under a uuid4 id."""
    def write(rows: list[tuple]) -> list[None]:
        with log.store.transaction() as cur:
            cur.executemany("INSERT INTO impressions(impression_id, ts, user_id, endpoint, policy, policy_version, "
                            "model, model_version, items, candidates, context) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            rows)
        return [None] * len(rows)
    return GroupCommitter(write, name="inline-impressions")


def run_cell(mode: str, n: int, folder: Path) -> dict[str, Any]:
    store = EventStore(folder / f"{mode.replace(', ', '-').replace(' ', '-')}.sqlite3")
    log = ImpressionLog(store)
    row = served_row(log, np.random.default_rng(7))
    old = inline_committer(log) if mode == "inline" else None
    inline_row = (*row[:7], row[-1], row[8])  # the record's JSON where the reference was

    async def client(count: int) -> None:
        loop = asyncio.get_running_loop() if mode == "dedup, loop futures" else None
        for _ in range(count):
            if old is not None:
                durable = old.submit((uuid.uuid4().hex, time.time(), *inline_row))
            else:
                _, durable = log.submit_row(row, loop)
            await wait_durable([durable])

    async def main() -> None:
        await asyncio.gather(*[client(n // CLIENTS) for _ in range(CLIENTS)])

    def commits() -> int:
        return old.commits if old is not None else log.commit_stats()["commits"]

    size0, commits0 = store.size_bytes(), commits()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    asyncio.run(main())
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    done, commits = (n // CLIENTS) * CLIENTS, commits() - commits0
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = store.size_bytes() - size0
    if old is not None:
        old.close()
    store.close()
    return {"mode": mode, "impressions": done, "per_s": done / wall, "commits": commits,
            "per_commit": done / max(commits, 1),
            "cpu_us": ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / done * 1e6,
            "user_us": (r1.ru_utime - r0.ru_utime) / done * 1e6, "db_bytes": grown / done}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impressions", type=int, default=6000, help="impressions per cell")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three paths")
    ap.add_argument("--name", default="impression_log")
    args = ap.parse_args()
    if args.impressions < CLIENTS or args.rounds < 1:
        ap.error(f"--impressions must be at least {CLIENTS} and --rounds at least 1")
    cells: list[dict] = []
    folder = Path(tempfile.mkdtemp(prefix="avrec-implog-", dir=ROOT / "benchmarks"))
    try:
        for r in range(args.rounds):
            for mode in MODES:
                cells.append({"round": r, **run_cell(mode, args.impressions, folder)})
                print(f"round {r} {mode}: {cells[-1]['cpu_us']:.0f} us CPU, {cells[-1]['per_s']:.0f}/s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary = []
    for mode in MODES:
        mine = [c for c in cells if c["mode"] == mode]
        summary.append({"mode": mode, **{k: float(np.median([c[k] for c in mine]))
                                         for k in ("per_s", "per_commit", "cpu_us", "user_us", "db_bytes")}})
    base = summary[0]
    lines = ["# Logging one impression: CPU, rate and bytes of the three write paths", "",
             f"{CLIENTS} asyncio clients, {args.impressions} impressions per cell, {args.rounds} interleaved "
             f"rounds (medians); SQLite WAL, synchronous=FULL, on the benchmark's disk.", "",
             "| write path | CPU µs/impression | user µs | impressions/s | per commit | DB bytes/impression | "
             "CPU vs inline |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['mode']} | {s['cpu_us']:.0f} | {s['user_us']:.0f} | {s['per_s']:.0f} | "
                     f"{s['per_commit']:.1f} | {s['db_bytes']:.0f} | {s['cpu_us'] / base['cpu_us']:.2f}× |")
    lines += ["", f"Command: `python benchmarks/impression_log.py --impressions {args.impressions} --rounds "
              f"{args.rounds}`. Python {platform.python_version()}."]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps({"summary": summary, "cells": cells}, indent=1))
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
