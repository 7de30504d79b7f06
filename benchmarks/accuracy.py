"""Accuracy of every avrec model on warm and cold-item splits of ml-latest-small (TMDB + hetrec enriched)
and Last.fm, under the full-ranking protocol. Run by ``make bench`` (not by CI).

Each (dataset, protocol, model) cell is fitted in a fresh subprocess so that its peak memory (max RSS,
which includes loading the data) is its own. Writes benchmarks/results/accuracy.json, accuracy.md and accuracy.png.

    AVREC_DATA=../shared/data .venv/bin/python benchmarks/accuracy.py [--datasets ml-latest-small,lastfm-2k]
        [--protocols warm,cold] [--models pop,itemknn,ease,als,bpr,tfidf,hybrid]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WARM_MODELS = ["pop", "itemknn", "ease", "als", "bpr", "tfidf", "kgpath", "content", "hybrid"]
COLD_MODELS = ["pop", "tfidf", "kgpath", "content", "hybrid"]
#: Shown on the cold protocol although they cannot score items without interactions (evaluate_model's
#: explicit ``allow_cold_unaware`` opt-in): popularity is the tie-order reference row.
COLD_REFERENCE = {"pop"}
#: Per-dataset settings recorded with the results. ALS is the tuned configuration of the issue's
#: reference run (128 factors, regularisation 50, alpha 10).
MODEL_SETTINGS: dict[str, dict[str, dict]] = {
    "ml-latest-small": {"als": {"factors": 128, "regularization": 50.0, "alpha": 10.0}},
    "lastfm-2k": {"als": {"factors": 128, "regularization": 50.0, "alpha": 10.0}},
}


def data_config(dataset: str):
    from avrec.data.io import DataConfig

    if dataset.startswith("ml"):
        return DataConfig(enrich=["tmdb", "hetrec"])
    return DataConfig(weighting="log")


def make_split(dataset: str, protocol: str):
    from avrec.data.builtin import load_dataset
    from avrec.data.splits import cold_item_split, random_split

    ds = load_dataset(dataset, data_config(dataset))
    if protocol == "warm":
        return random_split(ds, seed=2026)
    return cold_item_split(ds, cold_share=0.2, valid_share=0.1, seed=2026)


def run_cell(dataset: str, protocol: str, model_name: str) -> dict:
    """Fit one model on one split and evaluate it (runs inside the child process)."""
    from avrec.eval.evaluate import evaluate_model
    from avrec.models.registry import create_model
    from avrec.seeding import seed_everything

    seed_everything(2026)
    split = make_split(dataset, protocol)
    settings = MODEL_SETTINGS.get(dataset, {}).get(model_name, {})
    model = create_model(model_name, **settings)
    started = time.perf_counter()
    model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
    fit_s = time.perf_counter() - started
    metrics = evaluate_model(model, split, k=[10, 20], allow_cold_unaware=model_name in COLD_REFERENCE)
    out = {"dataset": dataset, "protocol": protocol, "model": model_name, "settings": settings,
           "fit_seconds": round(fit_s, 2), "metrics": metrics,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    report = getattr(model, "report", None)
    if isinstance(report, dict):
        out["report"] = {k: v for k, v in report.items() if k not in ("validation_curve", "refit_steps")}
    return out


def run_in_child(dataset: str, protocol: str, model_name: str) -> dict:
    cmd = [sys.executable, __file__, "--cell", dataset, protocol, model_name]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"dataset": dataset, "protocol": protocol, "model": model_name, "error": err}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict]) -> str:
    lines = ["# Accuracy: full ranking, seen items excluded (cold: ranked among the held-out items)", "",
             "Command: `AVREC_DATA=../shared/data .venv/bin/python benchmarks/accuracy.py` (seed 2026; warm = per-user",
             "random 8:1:1; cold = 20% of items held out entirely, 10% more for validation).", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for protocol in ("warm", "cold"):
            cell = [r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol]
            if not cell:
                continue
            lines += [f"## {dataset} — {protocol}", "",
                      "| model | NDCG@10 | Recall@10 | MRR@10 | Hit@10 | NDCG@20 | coverage@10 | fit s | peak RSS MB |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in sorted(cell, key=lambda r: -r.get("metrics", {}).get("ndcg@10", -1)):
                if "error" in r:
                    lines.append(f"| {r['model']} | error: {r['error'][:80]} | | | | | | | |")
                    continue
                m = r["metrics"]
                lines.append(
                    f"| {r['model']} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['mrr@10']:.4f} | {m['hit@10']:.4f} | "
                    f"{m['ndcg@20']:.4f} | {m['coverage@10']:.3f} | {r['fit_seconds']:.1f} | {r.get('peak_rss_mb') or ''} |"
                )
            lines.append("")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(d, p) for d in dict.fromkeys(r["dataset"] for r in rows) for p in ("warm", "cold")
              if any(r["dataset"] == d and r["protocol"] == p for r in rows)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (d, p) in zip(axes[0], groups):
        cell = [r for r in rows if r["dataset"] == d and r["protocol"] == p and "metrics" in r]
        names = [r["model"] for r in cell]
        x = range(len(cell))
        ax.bar([i - 0.2 for i in x], [r["metrics"]["ndcg@10"] for r in cell], width=0.4, label="NDCG@10")
        ax.bar([i + 0.2 for i in x], [r["metrics"]["recall@10"] for r in cell], width=0.4, label="Recall@10")
        ax.set_xticks(list(x), names, rotation=45, ha="right")
        ax.set_title(f"{d} ({p})")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", nargs=3, metavar=("DATASET", "PROTOCOL", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--datasets", default="ml-latest-small,lastfm-2k")
    parser.add_argument("--protocols", default="warm,cold")
    parser.add_argument("--models", default="")
    parser.add_argument("--out", default=str(RESULTS / "accuracy"))
    args = parser.parse_args()
    os.environ.setdefault("AVREC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    if args.cell:
        print(json.dumps(run_cell(*args.cell), default=float))
        return 0
    from avrec.models.registry import available_models

    known = set(available_models())
    rows = []
    for dataset in args.datasets.split(","):
        for protocol in args.protocols.split(","):
            models = args.models.split(",") if args.models else (WARM_MODELS if protocol == "warm" else COLD_MODELS)
            for name in [m for m in models if m in known]:
                row = run_in_child(dataset, protocol, name)
                rows.append(row)
                shown = row.get("metrics", {}).get("ndcg@10", row.get("error"))
                print(f"{dataset:16s} {protocol:4s} {name:8s} ndcg@10={shown} fit={row.get('fit_seconds')}s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else []
    keys = {(r["dataset"], r["protocol"], r["model"]) for r in rows}
    merged = [r for r in previous if (r["dataset"], r["protocol"], r["model"]) not in keys] + rows
    out.with_suffix(".json").write_text(json.dumps(merged, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(merged))
    chart(merged, out.with_suffix(".png"))
    print(markdown(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
