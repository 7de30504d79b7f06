"""avrec against peer libraries (RecBole, LightFM, implicit, Cornac) on identical split files.

Protocol
- Splits are built once by avrec and written as files (``Split.save``) under
  ``benchmarks/work/splits/<dataset>-<warm|cold>/``: ml-latest-small enriched with TMDB overview, keywords and
  tagline and the hetrec directors/tags (every rating is a positive), and hetrec Last.fm 2k (play counts,
  weight 1 + log1p(plays)). Warm: per-user random 8:1:1, seed 2026. Cold: 20% of the items (and 10% more for
  validation) lose all their interactions, seed 2026; users rank among the held-out items only.
- Every contender runs as a child process (its own virtual environment for the peers), reads those files,
  fits on train.csv and writes top-K lists for the validation and test users, once per hyper-parameter
  variant it tries (``benchmarks/peers/common.py``).
- Every list is scored here by avrec's own metric code (``evaluate_recommendations``, K=10, seen items
  excluded, cold lists restricted to the candidates). The variant with the best validation NDCG@10 is
  selected and its test metrics are reported, with its fit time and the child's peak resident memory
  (``ru_maxrss`` from ``wait4``, covering data loading, the whole search and list writing). Every child
  runs single-threaded (OMP/MKL/OpenBLAS threads = 1, each library's thread option = 1): the benchmark
  machine has two shared cores, and oversubscribed OpenMP/torch threads made fits up to 10× slower.

Run ``make bench-peers`` (sets up the peer environments first) or
``python benchmarks/peers.py [--datasets ...] [--only ...] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PEERS = BENCH / "peers"
WORK = BENCH / "work"
RESULTS = BENCH / "results"
SEED = 2026
K = 10
DATASETS = ("ml-latest-small", "lastfm-2k")
METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit@10")


@dataclass(frozen=True)
class Contender:
    """One model of one library, run through one runner script in one environment."""

    key: str
    label: str
    env: str  # "main" or the suffix of .venv-<env>
    runner: str
    model: str
    protocols: tuple[str, ...] = ("warm",)
    timeout_s: int = 3600
    datasets: tuple[str, ...] = DATASETS


CONTENDERS: list[Contender] = [
    # avrec's own models (main .venv; tfidf/content/hybrid only when registered)
    Contender("avrec-pop", "avrec pop", "main", "run_avrec.py", "pop"),
    Contender("avrec-itemknn", "avrec itemknn", "main", "run_avrec.py", "itemknn"),
    Contender("avrec-ease", "avrec ease", "main", "run_avrec.py", "ease"),
    Contender("avrec-als", "avrec als", "main", "run_avrec.py", "als"),
    Contender("avrec-bpr", "avrec bpr", "main", "run_avrec.py", "bpr"),
    Contender("avrec-tfidf", "avrec tfidf", "main", "run_avrec.py", "tfidf", ("warm", "cold")),
    Contender("avrec-content", "avrec content", "main", "run_avrec.py", "content", ("warm", "cold")),
    Contender("avrec-kgpath", "avrec kgpath", "main", "run_avrec.py", "kgpath", ("warm", "cold")),
    Contender("avrec-hybrid", "avrec hybrid", "main", "run_avrec.py", "hybrid", ("warm", "cold")),
    # implicit (a dependency of avrec, so it runs from the main .venv through the same file runner)
    Contender("implicit-als", "implicit ALS", "main", "run_implicit.py", "als"),
    Contender("implicit-bpr", "implicit BPR", "main", "run_implicit.py", "bpr"),
    # LightFM
    Contender("lightfm-warp", "LightFM WARP", "lightfm", "run_lightfm.py", "warp"),
    Contender("lightfm-warp-features", "LightFM WARP + item features", "lightfm", "run_lightfm.py", "warp-features", ("warm", "cold")),
    Contender("lightfm-warp-features-notags", "LightFM WARP + item features without crowd tags", "lightfm", "run_lightfm.py",
              "warp-features-notags", ("cold",), datasets=("ml-latest-small",)),
    # RecBole (warm only)
    Contender("recbole-bpr", "RecBole BPR", "recbole", "run_recbole.py", "BPR"),
    Contender("recbole-lightgcn", "RecBole LightGCN", "recbole", "run_recbole.py", "LightGCN"),
    Contender("recbole-ease", "RecBole EASE", "recbole", "run_recbole.py", "EASE"),
    Contender("recbole-multivae", "RecBole MultiVAE", "recbole", "run_recbole.py", "MultiVAE"),
    Contender("recbole-slimelastic", "RecBole SLIMElastic", "recbole", "run_recbole.py", "SLIMElastic", timeout_s=1200),
    # Cornac
    Contender("cornac-bpr", "Cornac BPR", "cornac", "run_cornac.py", "BPR"),
    Contender("cornac-ctr", "Cornac CTR (text)", "cornac", "run_cornac.py", "CTR", ("warm", "cold")),
]


# ---- splits -----------------------------------------------------------------------------------
def load(dataset: str):
    """The dataset as this benchmark uses it (see the module docstring)."""
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig

    data_dir = os.environ.get("AVREC_DATA") or str(ROOT.parent / "shared" / "data")
    if dataset == "ml-latest-small":
        return load_dataset(dataset, DataConfig(enrich=["tmdb", "hetrec"]), data_dir=data_dir)
    if dataset == "lastfm-2k":
        return load_dataset(dataset, DataConfig(weighting="log"), data_dir=data_dir)
    raise SystemExit(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")


def split_folder(dataset: str, protocol: str) -> Path:
    return WORK / "splits" / f"{dataset}-{protocol}"


def ensure_splits(dataset: str) -> dict[str, Path]:
    """Write the warm and cold split files once (reused while meta.json exists)."""
    from avrec.data.splits import cold_item_split, random_split

    folders = {p: split_folder(dataset, p) for p in ("warm", "cold")}
    if all((f / "meta.json").exists() for f in folders.values()):
        return folders
    ds = load(dataset)
    random_split(ds, (0.8, 0.1, 0.1), seed=SEED).save(folders["warm"])
    cold_item_split(ds, cold_share=0.2, valid_share=0.1, seed=SEED).save(folders["cold"])
    return folders


# ---- running one contender --------------------------------------------------------------------
def python_for(env: str) -> Path:
    return Path(sys.executable) if env == "main" else ROOT / f".venv-{env}" / "bin" / "python"


def env_problem(env: str) -> str | None:
    """Why an environment cannot run, from the setup script's log, or None when it looks usable."""
    if env == "main":
        return None
    status = WORK / "envs" / f"{env}.status"
    if status.exists() and status.read_text().strip() != "ok":
        return status.read_text().strip()
    if not python_for(env).exists():
        return f".venv-{env} missing: run benchmarks/peers/setup_envs.sh"
    return None


def run_child(cmd: list[str], log: Path, timeout_s: int) -> tuple[int, float, float]:
    """Run ``cmd`` with output to ``log``; returns (exit code, wall seconds, peak RSS in MB)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024.0


def log_tail(log: Path, n: int = 3) -> str:
    """The last meaningful lines of a child's log (the error a table row shows)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    errs = [ln for ln in lines if "Error" in ln or "error" in ln]
    return " | ".join((errs[-1:] if errs else lines[-n:]))[:400]


def score(contender: Contender, dataset: str, protocol: str, quick: bool, max_epochs: int = 0) -> dict:
    """Run one contender on one split and score every variant it wrote; returns a result row."""
    from avrec.data.splits import Split
    from avrec.eval.evaluate import evaluate_recommendations

    row: dict = {"contender": contender.key, "label": contender.label, "dataset": dataset, "protocol": protocol}
    problem = env_problem(contender.env)
    if problem:
        return row | {"status": "not run", "error": problem}
    folder = split_folder(dataset, protocol)
    out = WORK / "runs" / f"{dataset}-{protocol}" / contender.key
    if out.exists():
        for f in sorted(out.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
    cmd = [str(python_for(contender.env)), str(PEERS / contender.runner), "--split", str(folder), "--out", str(out),
           "--model", contender.model] + (["--quick"] if quick else []) + (["--max-epochs", str(max_epochs)] if max_epochs else [])
    print(f"[{dataset}/{protocol}] {contender.key}: {' '.join(cmd[1:])}", flush=True)
    log = WORK / "logs" / f"{dataset}-{protocol}-{contender.key}.log"
    rc, wall, peak = run_child(["nice", "-n", "10", *cmd], log, contender.timeout_s)
    row |= {"wall_s": round(wall, 1), "peak_mb": round(peak, 1), "log": str(log.relative_to(ROOT))}
    info_path = out / "info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"variants": [], "errors": []}
    row["library"] = f"{info.get('library', '?')} {info.get('version', '')}".strip()
    if rc == 3:  # the runner's "not available here" exit code (e.g. a model not registered)
        return row | {"status": "not run", "error": log_tail(log, 1)}
    if not info["variants"]:
        return row | {"status": "failed", "error": f"exit {rc}: {log_tail(log)}"}
    split = Split.load(folder)
    tried = []
    for v in info["variants"]:
        recs = pd.read_csv(out / v["label"] / "valid.csv", dtype={"user_id": str, "item_id": str})
        ndcg = evaluate_recommendations(recs, split, k=K, part="valid")["ndcg@10"]
        tried.append({"params": v["params"], "valid_ndcg@10": round(ndcg, 5), "fit_s": v["fit_s"]})
    best_i = max(range(len(tried)), key=lambda i: tried[i]["valid_ndcg@10"])
    best = info["variants"][best_i]
    recs = pd.read_csv(out / best["label"] / "test.csv", dtype={"user_id": str, "item_id": str})
    metrics = evaluate_recommendations(recs, split, k=K, part="test")
    row |= {
        "status": "ok" if rc == 0 else f"partial (exit {rc})",
        **{m: round(metrics[m], 5) for m in METRICS},
        "test_users": int(metrics["users"]),
        "fit_s": best["fit_s"],
        "params": best["params"],
        "valid_ndcg@10": tried[best_i]["valid_ndcg@10"],
        "variants": tried,
        "search_note": info.get("search_note", ""),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if rc != 0:
        row["error"] = log_tail(log)
    return row


# ---- reporting --------------------------------------------------------------------------------
def fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def summary_table(results: dict) -> list[str]:
    """Best avrec model vs best peer per dataset × protocol (test NDCG@10), as markdown lines."""
    lines = ["| dataset | protocol | best avrec model | NDCG@10 | best peer | NDCG@10 |", "|---|---|---|---:|---|---:|"]
    for dataset in DATASETS:
        for protocol in ("warm", "cold"):
            sel = [r for r in results["rows"] if r["dataset"] == dataset and r["protocol"] == protocol and "ndcg@10" in r]
            ours = max((r for r in sel if r["contender"].startswith("avrec")), key=lambda r: r["ndcg@10"], default=None)
            peer = max((r for r in sel if not r["contender"].startswith("avrec")), key=lambda r: r["ndcg@10"], default=None)
            if ours or peer:
                cell = lambda r: (r["label"], f"{r['ndcg@10']:.4f}") if r else ("—", "—")  # noqa: E731
                lines.append(f"| {dataset} | {protocol} | {' | '.join(cell(ours))} | {' | '.join(cell(peer))} |")
    return lines


def write_markdown(results: dict, path: Path) -> None:
    """One table per dataset × protocol, best NDCG@10 first; failed or skipped contenders say why."""
    doc = __doc__.split("Run ``make")[0].strip()
    lines = ["# avrec vs peer libraries", "", "## Protocol", "", doc.split("\n", 1)[1].strip(), "",
             f"Environment: {results.get('machine', '')}. Generated by `benchmarks/peers.py` at {results.get('updated', '')}.", "",
             "## Summary", ""] + summary_table(results) + [""]
    rows = results["rows"]
    for dataset in DATASETS:
        for protocol in ("warm", "cold"):
            sel = [r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol]
            if not sel:
                continue
            ok = sorted((r for r in sel if "ndcg@10" in r), key=lambda r: -r["ndcg@10"])
            bad = [r for r in sel if "ndcg@10" not in r]
            lines += [f"## {dataset} — {protocol}" + (" (ranked among held-out cold items)" if protocol == "cold" else " (full ranking)"), ""]
            lines += ["| contender | NDCG@10 | Recall@10 | MRR@10 | Hit@10 | fit s | peak MB | tuned params (best on validation) |",
                      "|---|---:|---:|---:|---:|---:|---:|---|"]
            for r in ok:
                note = "" if r["status"] == "ok" else f" ({r['status']})"
                lines.append(
                    f"| {r['label']}{note} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['mrr@10']:.4f} | {r['hit@10']:.4f} "
                    f"| {r['fit_s']:.1f} | {r['peak_mb']:.0f} | {fmt_params(r['params']) or 'defaults'} ({len(r['variants'])} tried) |"
                )
            for r in bad:
                lines.append(f"| {r['label']} | — | — | — | — | — | — | {r['status']}: {r.get('error', '')} |")
            done = {r["contender"] for r in sel}
            for c in CONTENDERS:
                if protocol in c.protocols and dataset in c.datasets and c.key not in done:
                    lines.append(f"| {c.label} | — | — | — | — | — | — | not in this recorded run: {results.get('missing_reason', 'not run yet')} |")
            lines.append("")
    searches = {}
    for r in rows:
        if r.get("search_note") and r.get("library"):
            lib = r["library"].split()[0]
            # the newest run's note describes the search in force (rows from older runs may predate it)
            if lib not in searches or r.get("finished", "") >= searches[lib][0]:
                searches[lib] = (r.get("finished", ""), r["search_note"])
    if searches:
        lines += ["## What was tuned", "",
                  "Each contender's variants were fitted on train and compared on the validation part (NDCG@10, avrec's "
                  "metric); fit s is the selected variant's fit time, peak MB the whole child process's.", ""]
        for lib, (_, note) in sorted(searches.items()):
            lines += [f"**{lib}**", "", note, ""]
    notes = results.get("notes", [])
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(lines))


def write_chart(results: dict, path: Path) -> None:
    """Horizontal bars of test NDCG@10, one panel per dataset × protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, p) for d in DATASETS for p in ("warm", "cold")
              if any(r["dataset"] == d and r["protocol"] == p and "ndcg@10" in r for r in results["rows"])]
    if not panels:
        return
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(14, 5.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (d, p) in zip(axes.ravel(), panels):
        sel = sorted((r for r in results["rows"] if r["dataset"] == d and r["protocol"] == p and "ndcg@10" in r),
                     key=lambda r: r["ndcg@10"])
        colors = ["#d62728" if r["contender"].startswith("avrec") else "#1f77b4" for r in sel]
        ax.barh([r["label"] for r in sel], [r["ndcg@10"] for r in sel], color=colors)
        for y, r in enumerate(sel):
            ax.text(r["ndcg@10"], y, f" {r['ndcg@10']:.3f}", va="center", fontsize=7)
        ax.set_title(f"{d} — {p}", fontsize=10)
        ax.set_xlabel("test NDCG@10")
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlim(0, max(r["ndcg@10"] for r in sel) * 1.25)
    fig.suptitle("avrec (red) vs peer libraries (blue), identical split files, avrec's metric code", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    import platform

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPU cores, {platform.machine()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark avrec against RecBole, LightFM, implicit and Cornac on identical splits.")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--only", nargs="+", default=None, help="contender keys or prefixes (e.g. lightfm recbole-ease avrec)")
    p.add_argument("--protocols", nargs="+", default=["warm", "cold"], choices=["warm", "cold"])
    p.add_argument("--quick", action="store_true", help="fewer epochs and a smaller search (smoke run)")
    p.add_argument("--max-epochs", type=int, default=0, help="cap every runner's training epochs (0: each runner's own budget)")
    p.add_argument("--fresh", action="store_true", help="drop earlier results instead of merging into them")
    p.add_argument("--results", default=str(RESULTS / "peers"), help="output path stem (.md, .json, .png)")
    p.add_argument("--list", action="store_true", help="list the contender keys and exit")
    p.add_argument("--report", action="store_true", help="only rewrite the .md and .png from the existing .json")
    p.add_argument("--merge-from", nargs="+", default=[], metavar="JSON",
                   help="fold the rows of other result files (e.g. from runs with another --results) into this one first")
    args = p.parse_args(argv)
    if args.list:
        for c in CONTENDERS:
            print(f"{c.key:30s} {c.env:8s} {','.join(c.protocols):10s} {','.join(c.datasets)}")
        return 0
    chosen = [c for c in CONTENDERS if not args.only or any(c.key == o or c.key.startswith(o) for o in args.only)]
    if not chosen:
        raise SystemExit(f"--only matched no contender; see --list")
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path = stem.with_suffix(".json")
    results = {"rows": [], "notes": []}
    if json_path.exists() and not args.fresh:
        results = json.loads(json_path.read_text())
    results["protocol"] = __doc__.split("Run ``make")[0].strip()
    results["machine"] = machine()
    for other in args.merge_from:
        for row in json.loads(Path(other).read_text())["rows"]:
            key = (row["contender"], row["dataset"], row["protocol"])
            results["rows"] = [r for r in results["rows"] if (r["contender"], r["dataset"], r["protocol"]) != key] + [row]
    if args.merge_from:
        json_path.write_text(json.dumps(results, indent=1))
    if args.report:
        write_markdown(results, stem.with_suffix(".md"))
        write_chart(results, stem.with_suffix(".png"))
        return 0
    for dataset in args.datasets:
        ensure_splits(dataset)
        for protocol in args.protocols:
            for c in chosen:
                if protocol not in c.protocols or dataset not in c.datasets:
                    continue
                try:
                    row = score(c, dataset, protocol, args.quick, args.max_epochs)
                except Exception as e:  # one contender's failure must not lose the others' results
                    traceback.print_exc()
                    row = {"contender": c.key, "label": c.label, "dataset": dataset, "protocol": protocol,
                           "status": "failed", "error": f"{type(e).__name__}: {e}"}
                row["quick"] = args.quick
                if args.max_epochs:
                    row["max_epochs"] = args.max_epochs
                results["rows"] = [r for r in results["rows"]
                                   if (r["contender"], r["dataset"], r["protocol"]) != (c.key, dataset, protocol)] + [row]
                results["updated"] = time.strftime("%Y-%m-%d %H:%M")
                json_path.write_text(json.dumps(results, indent=1))
                write_markdown(results, stem.with_suffix(".md"))
                summary = {m: row.get(m) for m in ("status", "ndcg@10", "fit_s", "peak_mb")}
                print(f"  -> {summary} {row.get('error', '')}", flush=True)
    write_chart(results, stem.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
