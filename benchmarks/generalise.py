"""The generalisation protocol: avrec's default hybrid against the strongest references, on thin and rich
catalogues, warm and cold, three split seeds each (mean ± standard deviation), with ablations.

Variants (each a dataset as a new user would have it):
- ``ml-thin``: ml-latest-small as embedded, each item a title, its year and its genres, nothing else;
- ``ml-rich``: ml-latest-small enriched with TMDB (overview, keywords, tagline, ...) and hetrec (directors, tags);
- ``lastfm``: hetrec Last.fm 2k with its artist tags; ``lastfm-notags``: the artist name alone.
Protocols: warm (per-user random 8:1:1) and cold (20% of the items lose every interaction and are ranked among
themselves; 10% more for validation), seeds 2026, 1, 2. Full ranking, seen items excluded.

Contenders, all on the same split files (``benchmarks/work/generalise/splits``):
- ``hybrid``: ``avrec fit --model hybrid`` defaults, given the split's validation part;
- ``ease``: EASE with λ tuned on validation NDCG@10 (warm); ``als``: implicit ALS tuned on validation (warm);
- ``tfidf-ref``: the six-line TF-IDF profile (every item column joined, ``TfidfVectorizer(min_df=1,
  sublinear_tf=True)``, profile = sum of the user's rows, score = profile · item) (cold);
- ``lightfm``: LightFM WARP + item features from the peer benchmark's environment (cold; ``.venv-lightfm``,
  built by ``benchmarks/peers/setup_envs.sh lightfm``);
- ``component:<name>``: each model the hybrid fuses, as fitted inside it, scored alone;
- ``ablation:<what>``: the hybrid without a component (fusion re-tuned on validation), and without LM vectors
  (refitted with ``use_lm=false``), on the first seed;
- ``contrastive`` (row ``ablation:contrastive-lm``): the hybrid with its encoder adapted contrastively on the
  split's co-consumed training pairs (``avrec finetune contrastive``: 3,000 pairs, 64 tokens, at most 4
  minutes of training) instead of the frozen MiniLM, on the first seed.

Each cell runs in a child process. Results merge into ``benchmarks/results/generalise.json``; the markdown table
and the plot are rebuilt from it (``--report`` rebuilds them without running anything).

    AVREC_DATA=../shared/data .venv/bin/python benchmarks/generalise.py [--variants ml-thin,...]
        [--protocols warm,cold] [--seeds 2026,1,2] [--contenders hybrid,ease,als,tfidf-ref,lightfm,ablations]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work" / "generalise"
VARIANTS = ("ml-thin", "ml-rich", "lastfm", "lastfm-notags")
SEEDS = (2026, 1, 2)
WARM_REFERENCES = ("ease", "als")
COLD_REFERENCES = ("tfidf-ref", "lightfm")
EASE_GRID = (250.0, 500.0, 1000.0)
ALS_GRID = [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (10.0, 50.0) for a in (1.0, 10.0)]
#: Variants with the same interactions (only the item text differs): their warm splits are identical, so the
#: warm references (which read no text) run once, on the first, and are recorded for both.
SAME_INTERACTIONS = {"ml-rich": "ml-thin", "lastfm-notags": "lastfm"}


def load_variant(variant: str):
    from avrec.data.builtin import load_dataset
    from avrec.data.dataset import Dataset
    from avrec.data.io import DataConfig

    def keep(ds, columns):
        items = ds.items[[c for c in columns if c in ds.items.columns]].copy()
        return Dataset(items, ds.user_ids, ds.user_idx, ds.item_idx, ds.weight, ds.timestamp, name=f"{ds.name}-thin")

    if variant == "ml-thin":
        return keep(load_dataset("ml-latest-small"), ("item_id", "title", "year", "genres"))
    if variant == "ml-rich":
        return load_dataset("ml-latest-small", DataConfig(enrich=["tmdb", "hetrec"]))
    lastfm = load_dataset("lastfm-2k", DataConfig(weighting="log"))
    return lastfm if variant == "lastfm" else keep(lastfm, ("item_id", "title", "artist", "media_type"))


def split_folder(variant: str, protocol: str, seed: int) -> Path:
    """The split's files, written once (the same files for every contender, LightFM's runner included)."""
    from avrec.data.splits import cold_item_split, random_split

    folder = WORK / "splits" / f"{variant}-{protocol}-s{seed}"
    if not (folder / "meta.json").exists():
        ds = load_variant(variant)
        split = cold_item_split(ds, 0.2, 0.1, seed) if protocol == "cold" else random_split(ds, seed=seed)
        split.save(folder)
    return folder


def evaluate(model, split, ks=(10, 20)) -> dict:
    from avrec.eval.evaluate import evaluate_model

    return evaluate_model(model, split, k=list(ks))


def reference_tfidf(split) -> dict:
    """The six-line TF-IDF profile of the issue, scored with avrec's metric code."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    from avrec.eval.evaluate import evaluate_recommendations

    from avrec.data.fields import BEHAVIOUR_COLUMNS

    # every column, except what the dataset's own users did (user_tags would leak held-out interactions)
    items = split.train.items.drop(columns=[c for c in BEHAVIOUR_COLUMNS if c in split.train.items.columns])
    docs = items.fillna("").astype(str).agg(" ".join, axis=1).str.replace("|", " ")
    x = TfidfVectorizer(min_df=1, sublinear_tf=True).fit_transform(docs)
    seen = split.train.matrix(binary=True)  # the same history every model is fitted on
    truth = split.test.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    cands = split.test_candidates
    scores = (seen[users] @ x @ (x if cands is None else x[cands]).T).toarray()
    exclude = sp.csr_matrix(seen + split.valid.matrix(binary=True))[users]
    from avrec.eval.topk import rank_scores

    top, _ = rank_scores(scores.astype(np.float32), 20, exclude, cands)
    import pandas as pd

    rows = [(split.train.user_ids[u], split.train.item_ids[i], r + 1) for u, row in zip(users, top)
            for r, i in enumerate(row) if i >= 0]
    recs = pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])
    return evaluate_recommendations(recs, split, k=[10, 20], part="test")


def tuned(split, name: str, grid: list[dict]) -> tuple[dict, dict, list]:
    """Fit every setting of ``grid`` on train, keep the best on validation NDCG@10, score it on test."""
    from avrec.eval.evaluate import evaluate_model
    from avrec.models.registry import create_model

    tried, best = [], None
    for params in grid:
        model = create_model(name, **params).fit(split.train)
        v = evaluate_model(model, split, k=10, part="valid")["ndcg@10"]
        tried.append({"params": params, "valid_ndcg@10": round(v, 5)})
        if best is None or v > best[0]:
            best = (v, params, model)
    assert best is not None
    return evaluate(best[2], split), best[1], tried


def run_lightfm(split, folder: Path) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peers

    python = ROOT / ".venv-lightfm" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(".venv-lightfm missing: run benchmarks/peers/setup_envs.sh lightfm")
    out = WORK / "lightfm" / folder.name
    cmd = [str(python), str(ROOT / "benchmarks" / "peers" / "run_lightfm.py"), "--split", str(folder), "--out", str(out),
           "--model", "warp-features"]
    rc, wall, _ = peers.run_child(cmd, WORK / "logs" / f"lightfm-{folder.name}.log", 3600)
    import pandas as pd

    from avrec.eval.evaluate import evaluate_recommendations

    info = json.loads((out / "info.json").read_text())
    tried = []
    for v in info["variants"]:
        recs = pd.read_csv(out / v["label"] / "valid.csv", dtype={"user_id": str, "item_id": str})
        tried.append(evaluate_recommendations(recs, split, k=10, part="valid")["ndcg@10"])
    best = info["variants"][int(np.argmax(tried))]
    recs = pd.read_csv(out / best["label"] / "test.csv", dtype={"user_id": str, "item_id": str})
    return {"metrics": evaluate_recommendations(recs, split, k=[10, 20], part="test"), "params": best["params"],
            "fit_seconds": best["fit_s"], "wall_s": round(wall, 1), "exit": rc}


def run_contrastive(split, folder: Path) -> dict:
    """The default hybrid on an encoder adapted on this split's training pairs (trained once per split)."""
    from avrec.data.documents import build_documents
    from avrec.finetune.contrastive import ContrastiveConfig, train_contrastive
    from avrec.finetune.data import co_consumed_pairs
    from avrec.models.registry import create_model

    out, started, record = folder / "contrastive-encoder", time.perf_counter(), {}
    if not (out / "config.json").exists():
        pairs = co_consumed_pairs(split.train, max_pairs=3000)
        _, r = train_contrastive(build_documents(split.train.items), pairs, ContrastiveConfig(
            max_length=64, train={"max_minutes": 4.0, "eval_every": 40, "log_every": 10}), out)
        record = {"adapt_seconds": round(time.perf_counter() - started, 1), "adapt_steps": r.steps,
                  "adapt_pairs": int(len(pairs))}
    model = create_model("hybrid", encoder=str(out))
    model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
    return {"metrics": evaluate(model, split), **record}


def run_cell(variant: str, protocol: str, seed: int, contender: str) -> list[dict]:
    """One contender on one split (inside the child process); the hybrid also yields its components and,
    for ``ablations``, its ablations."""
    from avrec.data.splits import Split
    from avrec.models.registry import create_model
    from avrec.seeding import seed_everything

    seed_everything(2026)
    folder = split_folder(variant, protocol, seed)
    split = Split.load(folder)
    base = {"variant": variant, "protocol": protocol, "seed": seed}
    started = time.perf_counter()
    rows: list[dict] = []
    if contender == "tfidf-ref":
        rows.append(base | {"contender": contender, "metrics": reference_tfidf(split)})
    elif contender == "ease":
        m, params, tried = tuned(split, "ease", [{"l2": v, "max_items": 30000} for v in EASE_GRID])
        rows.append(base | {"contender": contender, "metrics": m, "params": params, "tried": tried})
    elif contender == "als":
        m, params, tried = tuned(split, "als", [dict(p, seed=2026) for p in ALS_GRID])
        rows.append(base | {"contender": contender, "metrics": m, "params": params, "tried": tried})
    elif contender == "lightfm":
        rows.append(base | {"contender": contender, **run_lightfm(split, folder)})
    elif contender == "contrastive":
        rows.append(base | {"contender": "ablation:contrastive-lm", **run_contrastive(split, folder)})
    elif contender in ("hybrid", "ablations"):
        model = create_model("hybrid")
        model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
        fit_s = time.perf_counter() - started
        report = {k: v for k, v in model.report.items() if k not in ("validation_curve", "refit_steps")}
        if contender == "hybrid":
            rows.append(base | {"contender": "hybrid", "metrics": evaluate(model, split), "fit_seconds": round(fit_s, 1),
                                "report": report})
            fused = model.cold_components if protocol == "cold" else model.warm_components
            others = [n for n in fused]
            rows.append(base | {"contender": "component:towers",
                                "metrics": evaluate(model.ablated(others, split.valid, split.valid_candidates), split)})
            for name in fused:
                rows.append(base | {"contender": f"component:{name}", "metrics": evaluate(model.components[name], split)})
        else:
            fused = model.cold_components if protocol == "cold" else model.warm_components
            for name in ["towers", *fused]:
                ablated = model.ablated([name], split.valid, split.valid_candidates)
                rows.append(base | {"contender": f"ablation:no-{name}", "metrics": evaluate(ablated, split)})
            no_lm = create_model("hybrid", use_lm=False,
                                 cold_blend=[n for n in model.config.cold_blend if n != "content"])
            no_lm.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
            rows.append(base | {"contender": "ablation:no-lm", "metrics": evaluate(no_lm, split)})
    else:
        raise SystemExit(f"unknown contender {contender!r}")
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for r in rows:
        r.setdefault("fit_seconds", round(time.perf_counter() - started, 1))
        r["peak_rss_mb"] = peak
    return rows


def run_in_child(variant: str, protocol: str, seed: int, contender: str) -> list[dict]:
    cmd = [sys.executable, __file__, "--cell", variant, protocol, str(seed), contender]
    log = WORK / "logs" / f"{variant}-{protocol}-s{seed}-{contender}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        tail = (log.read_text(errors="replace").strip().splitlines() or ["failed"])[-1]
        return [{"variant": variant, "protocol": protocol, "seed": seed, "contender": contender, "error": tail[:300]}]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def all_rows() -> list[dict]:
    """Rows of generalise.json and of every part written by runs side by side (a later file wins a key)."""
    merged = {}
    for path in [RESULTS / "generalise.json", *sorted(RESULTS.glob("generalise.part-*.json"))]:
        for r in json.loads(path.read_text()) if path.exists() else []:
            merged[(r["variant"], r["protocol"], r["seed"], r["contender"])] = r
    return list(merged.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--protocols", default="warm,cold")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--contenders", default="hybrid,ease,als,tfidf-ref,lightfm,ablations")
    parser.add_argument("--report", action="store_true", help="rebuild the table and plot from the JSON only")
    parser.add_argument("--skip-done", action="store_true", help="skip cells that already have rows without an error")
    parser.add_argument("--part", default="", help="write rows to generalise.part-PART.json (runs side by side "
                        "write their own parts; the report merges generalise.json with every part)")
    args = parser.parse_args()
    os.environ.setdefault("AVREC_DATA", str(ROOT.parent / "shared" / "data"))
    if args.cell:
        v, p, s, c = args.cell
        print(json.dumps(run_cell(v, p, int(s), c), default=float))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from generalise_report import write_report

    out = RESULTS / (f"generalise.part-{args.part}.json" if args.part else "generalise.json")
    rows = json.loads(out.read_text()) if out.exists() else []
    if not args.report:
        for variant in args.variants.split(","):
            for protocol in args.protocols.split(","):
                for seed in map(int, args.seeds.split(",")):
                    for contender in args.contenders.split(","):
                        if contender in WARM_REFERENCES and protocol != "warm":
                            continue
                        if contender in COLD_REFERENCES and protocol != "cold":
                            continue
                        if contender in ("ablations", "contrastive") and seed != SEEDS[0]:
                            continue
                        done = {(r["variant"], r["protocol"], r["seed"], r["contender"]) for r in all_rows()
                                if "metrics" in r}
                        head_name = {"ablations": "ablation:no-lm",
                                     "contrastive": "ablation:contrastive-lm"}.get(contender, contender)
                        if args.skip_done and (variant, protocol, seed, head_name) in done:
                            continue
                        t = time.perf_counter()
                        twin = SAME_INTERACTIONS.get(variant)
                        reuse = [r for r in [*rows, *all_rows()] if twin and contender in WARM_REFERENCES
                                 and r["variant"] == twin
                                 and r["protocol"] == protocol and r["seed"] == seed and r["contender"] == contender
                                 and "metrics" in r]
                        new = ([dict(reuse[0], variant=variant, same_as=twin)] if reuse
                               else run_in_child(variant, protocol, seed, contender))
                        names = {r["contender"] for r in new} | {contender}
                        rows = [r for r in rows if not (r["variant"] == variant and r["protocol"] == protocol
                                                        and r["seed"] == seed and r["contender"] in names)] + new
                        out.write_text(json.dumps(rows, indent=1, default=float))
                        head = new[0]
                        shown = head.get("metrics", {}).get("ndcg@10", head.get("error"))
                        print(f"{variant:14s} {protocol:4s} s{seed:<5d} {contender:10s} ndcg@10={shown} "
                              f"({time.perf_counter() - t:.0f}s)", flush=True)
    print(write_report(all_rows(), RESULTS / "generalise"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
