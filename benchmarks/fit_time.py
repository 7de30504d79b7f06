"""Wall time and peak memory of ``avrec fit DATASET --model hybrid`` with the embedding cache warm.

The first fit fills the embedding cache (its time is reported separately); the second is the measured one.
Writes benchmarks/results/fit_time.json and fit_time.md.

    .venv/bin/python benchmarks/fit_time.py [--dataset ml-latest-small] [--model hybrid]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def timed_fit(avrec: str, dataset: str, model: str, out: Path, extra: list[str]) -> dict:
    cmd = [avrec, "fit", dataset, "--model", model, "--out", str(out), "--run-dir", str(out) + "-run", *extra]
    # Run through a fresh child whose own max RSS is read with wait4, so earlier children do not count.
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {stderr.strip().splitlines()[-1:]}")
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "summary": stdout.strip().splitlines()[-1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--model", default="hybrid")
    parser.add_argument("--set", nargs="*", default=[], help="extra --set key=value for avrec fit")
    args = parser.parse_args()
    avrec = str(Path(sys.executable).with_name("avrec"))
    extra = [x for kv in args.set for x in ("--set", kv)]
    with tempfile.TemporaryDirectory() as tmp:
        first = timed_fit(avrec, args.dataset, args.model, Path(tmp) / "first", extra)
        second = timed_fit(avrec, args.dataset, args.model, Path(tmp) / "second", extra)
    load = os.getloadavg()[0]
    result = {"dataset": args.dataset, "model": args.model, "settings": args.set, "first_fit": first,
              "cached_fit": second, "cpus": os.cpu_count(), "load_average_1min_after": round(load, 2),
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fit_time.json").write_text(json.dumps(result, indent=1))
    md = [
        f"# `avrec fit {args.dataset} --model {args.model}`", "",
        "Command: `.venv/bin/python benchmarks/fit_time.py` (first fit fills the embedding cache; the second is measured).", "",
        "| run | wall s | CPU s | peak RSS MB |", "|---|---:|---:|---:|",
        f"| first (encodes the catalogue) | {first['wall_seconds']} | {first['cpu_seconds']} | {first['peak_rss_mb']} |",
        f"| cached embeddings | {second['wall_seconds']} | {second['cpu_seconds']} | {second['peak_rss_mb']} |", "",
        f"{os.cpu_count()} CPUs; 1-minute load average after the runs: {load:.1f} (other work on the machine inflates wall time;",
        "CPU seconds are less sensitive to it).",
    ]
    (RESULTS / "fit_time.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
