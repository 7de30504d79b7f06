"""Cost curves (issue 16): fit time, peak RSS, recommend latency and model size of every model against size.

    python benchmarks/scale.py                       # the default grid, every model
    python benchmarks/scale.py --cells 10000x1000000,100000x5000000 --models als,hybrid
    python benchmarks/scale.py --report              # rebuild the table and plot from the JSON
    python benchmarks/scale.py --cells 1000000x20000000 --models hybrid --set models.hybrid.encoder=default@bf16

Each (items × interactions) cell is a synthetic folder (``avrec data synth``, users = interactions / 20,
seed 2026) under ``benchmarks/work/scale`` (generated once, reused). Each model runs in its own process
(``--one``), so its peak RSS (``ru_maxrss``) is its own: load the folder (columnar Parquet), ``check_size``
(a refusal is recorded with its line), fit, save, then ``recommend`` for one user (p50/p99 over 50 users)
and for a batch of 1,000 users (3 runs), k = 10. Cells run one model at a time; a model that failed or
ran past ``--timeout`` at a size is not tried at bigger ones in the same run (a refusal is cheap and is
recorded at every size; a cell asked for again replaces its row). ``--set KEY=VALUE`` takes the settings
``avrec fit --set`` takes (e.g. the encoder key an ``avrec embed`` run filled the cache with); they are recorded
in the row. The hybrid's folder is kept, and ``avrec recommend`` runs on it as a new user would (one
process per call, model loading included): one user, and 1,000 users to a CSV. Results:
``benchmarks/results/scale.json``, ``scale.md`` and ``scale.png`` (log-log fit time and
peak RSS against interactions, with slopes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "scale"
RESULTS = ROOT / "results"
#: models whose fitted folders stay under benchmarks/work/scale/models (for `avrec recommend`)
KEEP = ("hybrid",)
MODELS = ["pop", "als", "bpr", "ease", "itemknn", "seqknn", "tfidf", "kgpath", "contentpop", "content", "hybrid"]
CELLS = [(10_000, 1_000_000), (100_000, 5_000_000), (1_000_000, 20_000_000), (1_000_000, 1_000_000),
         (1_000_000, 5_000_000), (100_000, 1_000_000)]
SEED = 2026


def cell_folder(items: int, interactions: int) -> Path:
    """The synthetic folder of one cell, generated once."""
    from avrec.data.synth import SynthConfig, synthesize

    folder = WORK / f"i{items}_m{interactions}"
    if not (folder / "synth.json").exists():
        started = time.perf_counter()
        synthesize(folder, SynthConfig(items, max(1, interactions // 20), interactions, seed=SEED), force=True)
        print(f"synth {folder.name}: {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_one(model_name: str, folder: Path, out: Path, sets: list[str] | None = None) -> dict:
    """Load, check, fit, save and time recommendations of one model (in this process)."""
    from avrec.data.io import load_folder
    from avrec.errors import ScaleError
    from avrec.models.base import Recommender
    from avrec.models.registry import create_model
    from avrec.models.scale import Size

    warnings.simplefilter("ignore")
    row: dict = {"model": model_name}
    started = time.perf_counter()
    dataset = load_folder(folder)
    row["load_s"] = round(time.perf_counter() - started, 2)
    row["load_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    row.update(users=dataset.n_users, items=dataset.n_items, interactions=dataset.n_interactions)
    if sets:
        from avrec.cli.settings import load_settings, resolve_settings

        row["settings"] = list(sets)
        model = create_model(model_name, resolve_settings(load_settings(None, sets), [model_name]).models[model_name])
    else:
        model = create_model(model_name)
    try:
        model.check_size(Size.of(dataset))
        started = time.perf_counter()
        model.fit(dataset)
        row["fit_s"] = round(time.perf_counter() - started, 2)
    except ScaleError as e:
        row["refused"] = str(e)
        row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
        return row
    row["fit_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    if model_name == "hybrid":
        row["scale_plan"] = model.report.get("scale_plan", {})
        row["skipped_components"] = model.report.get("skipped_components", {})
        row["lm_dim"] = model.report.get("lm_dim", 0)  # 0: the towers ran without LM vectors
        row["warm_components"] = list(model.warm_components)
        row["cold_components"] = list(model.cold_components)
        row["encoder"] = model.config.encoder
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    model.save(out)
    row["save_s"] = round(time.perf_counter() - started, 2)
    row["model_mb"] = round(folder_bytes(out) / 1e6, 1)
    del model
    started = time.perf_counter()
    model = Recommender.load(out)
    row["load_model_s"] = round(time.perf_counter() - started, 2)
    rng = np.random.default_rng(0)
    users = dataset.user_ids[rng.choice(dataset.n_users, min(1050, dataset.n_users), replace=False)]
    model.recommend([users[0]], k=10)  # warm-up (lazy caches)
    single = []
    for u in users[:50]:
        t = time.perf_counter()
        model.recommend([u], k=10)
        single.append(time.perf_counter() - t)
    row["one_user_p50_ms"] = round(1000 * float(np.percentile(single, 50)), 2)
    row["one_user_p99_ms"] = round(1000 * float(np.percentile(single, 99)), 2)
    batch = list(users[50:1050]) or list(users)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        model.recommend(batch, k=10)
        runs.append(time.perf_counter() - t)
    row["batch_users"] = len(batch)
    row["batch_1000_s"] = round(float(np.median(runs)), 3)
    if model_name in KEEP:
        users_file(out).write_text("\n".join(str(u) for u in batch) + "\n")
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine while this ran (2 cores)
    return row


def users_file(out: Path) -> Path:
    """The 1,000 users of a kept model's batch, beside its folder (``avrec recommend --users``)."""
    return out.parent / f"{out.name}_users.txt"


def timed(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (GB) of one command (``/usr/bin/time -v``), or its error."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = round(time.perf_counter() - started, 2)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    kb = [ln.split(":")[-1] for ln in proc.stderr.splitlines() if "Maximum resident set size" in ln]
    return {"s": wall, "rss_gb": round(int(kb[0]) / 1e6, 2) if kb else None}


def cli_recommend(out: Path) -> dict:
    """``avrec recommend`` on a kept model folder, as a new user runs it: one user, then 1,000 to a CSV."""
    avrec = str(Path(sys.executable).parent / "avrec")
    users = users_file(out).read_text().split()
    one = timed([avrec, "recommend", str(out), "--user", users[0], "--k", "10"])
    csv = out.parent / f"{out.name}_recs.csv"
    many = timed([avrec, "recommend", str(out), "--users", str(users_file(out)), "--k", "10", "--out", str(csv)])
    lines = len(csv.read_text().splitlines()) - 1 if csv.exists() else 0
    return {"cli_recommend_1_user": one, "cli_recommend_1000_users": {**many, "rows": lines}}


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def save_results(rows: list[dict], path: Path) -> None:
    meta = {"command": "python benchmarks/scale.py", "seed": SEED, "cpus": os.cpu_count(),
            "note": "one model at a time on a 2-core machine shared with other work; users = interactions / 20"}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def slope(xs: list[float], ys: list[float]) -> float | None:
    """The log-log slope (cost ∝ size^slope) by least squares, or None with fewer than two sizes."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def report(rows: list[dict]) -> None:
    """scale.md (every row and the slopes) and scale.png (log-log)."""
    lines = ["# How big can it go: cost curves", "",
             "Synthetic folders (`avrec data synth`, users = interactions / 20, seed 2026), one model per process "
             "on this 2-core, 24 GB machine (shared with other work while measured). `python benchmarks/scale.py`.",
             "Peak RSS includes loading the dataset. Latency: `recommend`, k = 10, seen items excluded; one user "
             "p50/p99 over 50 users, a batch of 1,000 users (median of 3). Load avg: the machine's 1-minute load "
             "average when the row finished (2 cores; blank for rows measured before it was recorded).", "",
             "| model | items | interactions | load s | fit s | peak RSS GB | 1 user p50 ms | p99 ms | 1,000 users s "
             "| model MB | load avg | outcome |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (MODELS.index(r["model"]) if r["model"] in MODELS else 99,
                                         r.get("cell_items", 0), r.get("cell_interactions", 0))):
        outcome = ("refused: " + r["refused"]) if "refused" in r else r.get("error", "fitted")
        if r["model"] == "hybrid" and "fit_s" in r and "lm_dim" in r:
            outcome += (f"; LM vectors: {r['lm_dim']}-d ({r.get('encoder', '')})" if r["lm_dim"] else
                        "; without LM vectors") + (f"; warm: {', '.join(['towers', *r['warm_components']])}; "
                                                   f"cold: {', '.join(['towers', *r['cold_components']])}")
        lines.append(f"| {r['model']} | {r.get('cell_items', 0):,} | {r.get('cell_interactions', 0):,} | "
                     f"{r.get('load_s', '')} | {r.get('fit_s', '')} | {r.get('peak_rss_gb', '')} | "
                     f"{r.get('one_user_p50_ms', '')} | {r.get('one_user_p99_ms', '')} | {r.get('batch_1000_s', '')} | "
                     f"{r.get('model_mb', '')} | {r.get('load_avg_1m', '')} | {outcome} |")
    cli = [r for r in rows if "cli_recommend_1_user" in r]
    if cli:
        lines += ["", "## `avrec recommend` on the saved model (one process per call, model loading included)", "",
                  "| model | items | interactions | settings | 1 user: s | peak RSS GB | 1,000 users to CSV: s "
                  "| peak RSS GB |", "|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in cli:
            one, many = r["cli_recommend_1_user"], r["cli_recommend_1000_users"]
            lines.append(f"| {r['model']} | {r['cell_items']:,} | {r['cell_interactions']:,} | "
                         f"{' '.join(r.get('settings', [])) or 'defaults'} | {one.get('s', one.get('error'))} | "
                         f"{one.get('rss_gb', '')} | {many.get('s', many.get('error'))} | {many.get('rss_gb', '')} |")
    lines += ["", "## How cost grows (log-log slope against interactions, over the fitted sizes)", "",
              "| model | sizes | fit time slope | peak RSS slope | largest fitted |", "|---|---:|---:|---:|---|"]
    fitted = [r for r in rows if "fit_s" in r]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab10").colors  # ten colours for eleven models: the hybrid is drawn in black
    for n, name in enumerate(MODELS):
        mine = sorted((r for r in fitted if r["model"] == name), key=lambda r: r["cell_interactions"])
        if not mine:
            continue
        x = [r["cell_interactions"] for r in mine]
        t = [max(r["fit_s"], 1e-3) for r in mine]
        m = [r["peak_rss_gb"] for r in mine]
        st, sm = slope(x, t), slope(x, m)
        big = max(mine, key=lambda r: (r["cell_items"], r["cell_interactions"]))
        lines.append(f"| {name} | {len(mine)} | {_fmt(st)} | {_fmt(sm)} | {big['cell_items']:,} items × "
                     f"{big['cell_interactions']:,} |")
        label = name if st is None else f"{name} (slope {st:.2f})"
        colour = "black" if name == "hybrid" else colours[n % len(colours)]
        ax_t.plot(x, t, "o-", color=colour, label=label)
        ax_m.plot(x, m, "o-", color=colour, label=name if sm is None else f"{name} (slope {sm:.2f})")
    for ax, what in ((ax_t, "fit time (s)"), (ax_m, "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("avrec cost curves on synthetic data (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)
    lines += ["", "Slopes are fitted over cells that differ in both items and interactions (the grid's diagonal "
              "and the 1M-item row), so they mix the two; a slope of 1 is linear in the data.",
              "Encoder throughput (what an `avrec embed` run costs before a fit) is in "
              "[encoder_speed.md](encoder_speed.md).", "", "![cost curves](scale.png)", ""]
    (RESULTS / "scale.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(f"{i}x{m}" for i, m in CELLS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per model and cell")
    parser.add_argument("--report", action="store_true", help="only rebuild scale.md and scale.png")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model settings as `avrec fit --set` takes them (repeatable)")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = run_one(args.one[0], Path(args.one[1]), Path(args.one[2]), args.set)
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    path = RESULTS / "scale.json"
    rows = load_results(path)
    if args.report:
        report(rows)
        return 0
    cells = [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",") if c]
    stopped: dict[str, str] = {}  # a model that failed or ran out of time at a size is not tried at bigger ones
    for items, interactions in sorted(cells, key=lambda c: (c[1], c[0])):
        folder = cell_folder(items, interactions)
        for name in [m for m in args.models.split(",") if m]:
            if name in stopped:
                print(f"{name} @ {items}x{interactions}: not tried ({stopped[name]})", flush=True)
                continue
            out = WORK / "models" / f"{name}_{folder.name}"
            cmd = [sys.executable, __file__, "--one", name, str(folder), str(out),
                   *[f"--set={kv}" for kv in args.set]]
            started = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                row = json.loads(found[-1][7:]) if found else {
                    "model": name, "error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
            except subprocess.TimeoutExpired:
                row = {"model": name, "error": f"ran past {args.timeout} s"}
            row.update(cell_items=items, cell_interactions=interactions,
                       wall_s=round(time.perf_counter() - started, 1))
            if "error" in row:
                stopped[name] = f"failed at {items}x{interactions}: {row['error']}"
            elif name in KEEP and "fit_s" in row:
                row.update(cli_recommend(out))
            if name not in KEEP:  # the hybrid's folders stay for `avrec recommend` (see the report)
                shutil.rmtree(out, ignore_errors=True)
            rows = [r for r in rows if not (r["model"] == name and r.get("cell_items") == items
                                             and r.get("cell_interactions") == interactions)] + [row]
            save_results(rows, path)
            print(json.dumps({k: v for k, v in row.items() if k not in ("scale_plan",)}), flush=True)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
