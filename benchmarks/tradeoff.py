"""Accuracy–exposure trade-off of the re-ranking stages (issue 18): NDCG@10 against the Gini index of
exposure, the long-tail share and miscalibration, for a fitted model with and without each stage.

For each dataset the model is fitted on the train part of the seeded random 8:1:1 split; each user's top
``--depth`` list (seen items excluded) is re-ranked by :class:`avrec.pipeline.calibration.PopularityPenalty`
over a grid of β and by :class:`avrec.pipeline.calibration.Calibrate` over a grid of λ. The setting of
each stage is tuned on validation (the largest one within ``--tolerance`` of the unchanged lists'
validation NDCG@10) and reported on test. Writes benchmarks/results/tradeoff.{json,md,png}.

    AVREC_DATA=../shared/data nice -n 10 .venv/bin/python benchmarks/tradeoff.py [--datasets ml-latest-small,lastfm-2k]
        [--model als|ease] [--depth 100] [--tolerance 0.02]

The model is ALS (128 factors, as in accuracy.py) by default: the hybrid takes 4-15 minutes per fit here.
Another model writes its own files, ``tradeoff_<model>.{json,md,png}`` (``--model ease``: EASE, λ=500).
On Last.fm the calibration mix is over each artist's tags, limited to the 30 most frequent tags.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BETAS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
LAMBDAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
MODEL_SETTINGS = {"als": {"factors": 128, "regularization": 50.0, "alpha": 10.0},
                  "ease": {"l2": 500.0}}  # the settings tune_baselines.py chose on validation
SETUP = {
    "ml-latest-small": {"data": {}, "field": "genres", "max_values": None},
    "lastfm-2k": {"data": {"weighting": "log"}, "field": "tags", "max_values": 30},
}


def top_values(items, column: str, n: int | None):
    """``items`` with ``column`` restricted to its ``n`` most frequent values (None: unchanged)."""
    if n is None:
        return items
    counts = items[column].fillna("").astype(str).str.split("|").explode().str.strip()
    keep = set(counts[counts != ""].value_counts().index[:n])
    out = items.copy()
    out[column] = [ "|".join(v for v in str(c).split("|") if v.strip() in keep) for c in items[column].fillna("")]
    return out


def lists_for(model, split, part: str, depth: int):
    """(users, their truth rows, their training rows, top-``depth`` candidates and scores) for one part."""
    truth = split.part(part).matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    exclude = split.train.matrix(binary=True)
    if part == "test":
        exclude = exclude + split.valid.matrix(binary=True)
    cands, scores = model.topk_indices(users, depth, exclude=exclude[users])
    return users, truth[users], split.train.matrix(binary=True)[users], cands, scores


def measure(stage, inputs, items, popularity, tail, dist_sparse, k: int = 10) -> dict:
    from avrec.eval.beyond import exposure_counts, gini_index, long_tail_share, miscalibration
    from avrec.eval.metrics import per_user_metrics
    from avrec.pipeline.stages import Context

    users, truth, history, cands, scores = inputs
    ctx = Context(k, user_idx=np.arange(len(users)))
    c, _ = stage.apply(ctx, cands, scores.astype(np.float64)) if stage is not None else (cands, scores)
    top = c[:, :k]
    mis, _ = miscalibration(top, history, dist_sparse)
    return {
        "ndcg@10": float(per_user_metrics(top, truth, k)["ndcg"].mean()),
        "gini@10": gini_index(exposure_counts(top, len(items))),
        "tail@10": long_tail_share(top, tail),
        "miscal@10": mis,
        "coverage@10": float(len(np.unique(top[top >= 0])) / len(items)),
    }


def run_dataset(name: str, model_name: str, depth: int, tolerance: float) -> dict:
    import scipy.sparse as sp

    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig
    from avrec.data.splits import random_split
    from avrec.eval.beyond import long_tail_mask
    from avrec.models.registry import create_model
    from avrec.pipeline.calibration import Calibrate, PopularityPenalty, genre_distributions
    from avrec.seeding import seed_everything

    seed_everything(2026)
    setup = SETUP[name]
    ds = load_dataset(name, DataConfig(**setup["data"]))
    split = random_split(ds, seed=2026)
    t0 = time.perf_counter()
    model = create_model(model_name, **MODEL_SETTINGS.get(model_name, {}))
    model.fit(split.train, valid=split.valid)
    fit_s = time.perf_counter() - t0
    items = top_values(split.train.items, setup["field"], setup["max_values"])
    dist = genre_distributions(items, setup["field"])
    dist_sparse = sp.csr_matrix(dist)
    popularity = split.train.item_counts()
    tail = long_tail_mask(popularity, 0.8)
    inputs = {part: lists_for(model, split, part, depth) for part in ("valid", "test")}

    def penalty(beta):
        return PopularityPenalty(beta, popularity) if beta > 0 else None

    def calibrate(lam, part):
        hist = inputs[part][2]
        return Calibrate(lam, depth, dist, lambda ctx: hist[ctx.user_idx]) if lam > 0 else None

    out: dict = {"dataset": name, "model": model_name, "fit_seconds": round(fit_s, 1), "depth": depth,
                 "tolerance": tolerance, "calibration_field": setup["field"], "users_test": len(inputs["test"][0]),
                 "stages": {}}
    grids = {"popularity_penalty": (BETAS, lambda v, part: penalty(v)), "calibration": (LAMBDAS, calibrate)}
    for stage_name, (grid, make) in grids.items():
        t1 = time.perf_counter()
        curve = []
        for v in grid:
            valid = measure(make(v, "valid"), inputs["valid"], items, popularity, tail, dist_sparse)
            test = measure(make(v, "test"), inputs["test"], items, popularity, tail, dist_sparse)
            curve.append({"value": v, "valid_ndcg@10": valid["ndcg@10"], **test})
        base = curve[0]
        floor = (1 - tolerance) * base["valid_ndcg@10"]
        chosen = max((p for p in curve if p["valid_ndcg@10"] >= floor), key=lambda p: p["value"])
        out["stages"][stage_name] = {
            "curve": curve, "chosen": chosen, "seconds": round(time.perf_counter() - t1, 1),
            "ndcg_change": chosen["ndcg@10"] / base["ndcg@10"] - 1 if base["ndcg@10"] else 0.0,
            "tail_change": (chosen["tail@10"] / base["tail@10"] - 1) if base["tail@10"] else None,
        }
        print(f"{name} {stage_name}: chosen {chosen['value']} NDCG {base['ndcg@10']:.4f} -> {chosen['ndcg@10']:.4f}, "
              f"tail {base['tail@10']:.4f} -> {chosen['tail@10']:.4f}, gini {base['gini@10']:.4f} -> "
              f"{chosen['gini@10']:.4f}, miscal {base['miscal@10']:.4f} -> {chosen['miscal@10']:.4f}", flush=True)
    return out


def write_markdown(results: list[dict], path: Path) -> None:
    lines = ["# Accuracy–exposure trade-off of the re-ranking stages", "",
             "Generated by `benchmarks/tradeoff.py`. Random 8:1:1 split, seed 2026; each stage's setting is the "
             "largest whose *validation* NDCG@10 is within the tolerance of the unchanged lists; numbers are on "
             "*test*. Long tail: the 80% of items with the fewest training users. Gini over the whole catalogue.",
             ""]
    for r in results:
        lines += [f"## {r['dataset']} — {r['model']} (fit {r['fit_seconds']} s, re-ranking the top {r['depth']}, "
                  f"{r['users_test']} test users, calibration on {r['calibration_field']})", ""]
        lines += ["| stage | setting | NDCG@10 | ΔNDCG | long-tail share | Δtail | Gini | miscal (KL) | coverage |",
                  "|---|---|---|---|---|---|---|---|---|"]
        first = True
        for stage, s in r["stages"].items():
            base = s["curve"][0]
            if first:
                lines.append(f"| none | – | {base['ndcg@10']:.4f} | – | {base['tail@10']:.4f} | – | "
                             f"{base['gini@10']:.4f} | {base['miscal@10']:.4f} | {base['coverage@10']:.4f} |")
                first = False
            c = s["chosen"]
            tail = "n/a (baseline 0)" if s["tail_change"] is None else f"{s['tail_change']:+.1%}"
            lines.append(f"| {stage} | {c['value']} | {c['ndcg@10']:.4f} | {s['ndcg_change']:+.2%} "
                         f"| {c['tail@10']:.4f} | {tail} | {c['gini@10']:.4f} | {c['miscal@10']:.4f} "
                         f"| {c['coverage@10']:.4f} |")
        lines += ["", "Full curves (test):", ""]
        for stage, s in r["stages"].items():
            lines.append(f"- {stage}: " + "; ".join(
                f"{p['value']}: NDCG {p['ndcg@10']:.4f}, tail {p['tail@10']:.4f}, Gini {p['gini@10']:.4f}, "
                f"KL {p['miscal@10']:.3f}" for p in s["curve"]))
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(13, 3.8 * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        for stage, s in r["stages"].items():
            xs = [p["ndcg@10"] for p in s["curve"]]
            for ax, key, label in zip(row, ("tail@10", "gini@10", "miscal@10"),
                                      ("long-tail share", "Gini of exposure", "miscalibration (KL)")):
                ax.plot([p[key] for p in s["curve"]], xs, marker="o", label=stage)
                ax.scatter([s["chosen"][key]], [s["chosen"]["ndcg@10"]], s=120, facecolors="none", edgecolors="k")
                ax.set_xlabel(label)
                ax.set_ylabel("NDCG@10 (test)")
                ax.set_title(f"{r['dataset']} ({r['model']})")
        base = r["stages"]["popularity_penalty"]["curve"][0]["ndcg@10"]
        for ax in row:
            ax.axhline(0.98 * base, color="grey", ls="--", lw=0.8, label="−2% NDCG")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="ml-latest-small,lastfm-2k")
    p.add_argument("--model", default="als")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    warnings.simplefilter("ignore")
    from threadpoolctl import threadpool_limits

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(1):
        results = [run_dataset(d, args.model, args.depth, args.tolerance) for d in args.datasets.split(",")]
    stem = "tradeoff" if args.model == "als" else f"tradeoff_{args.model}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out / f"{stem}.md")
    plot(results, out / f"{stem}.png")
    print(f"wrote {out / stem}.json, .md, .png")


if __name__ == "__main__":
    main()
