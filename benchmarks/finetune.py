"""Benchmark of issue 4: the fine-tuned cross-encoder pipeline against its retriever alone, and the
effect of MLM / contrastive encoder adaptation on the hybrid model, on ml-latest-small (TMDB + hetrec
enriched), warm (random_split, seed 2026) and cold (cold_item_split(0.2, 0.1), seed 2026).

Writes benchmarks/results/finetune.json (sections merge across runs) and finetune.md.

    AVREC_DATA=/work/shared/data nice -n 10 .venv/bin/python benchmarks/finetune.py --sections pipeline
    AVREC_DATA=/work/shared/data nice -n 10 .venv/bin/python benchmarks/finetune.py --sections adapt
    ... --sections adapt --dataset lastfm-2k --protocols cold      # the same on Last.fm
    ... --sections adapt --split-seed 2027 --protocols cold        # another split (kept apart in the results)

On a shared CPU the cross-encoder is scored only on the retriever's top-N for a seeded subset of test
users (``--eval-users``); the retriever is evaluated on exactly the same users.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load(protocol: str, dataset: str = "ml-latest-small", seed: int = 2026):
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig
    from avrec.data.splits import cold_item_split, random_split

    enrich = ["tmdb", "hetrec"] if dataset == "ml-latest-small" else []
    ds = load_dataset(dataset, DataConfig(enrich=enrich))
    split = random_split(ds, seed=seed) if protocol == "warm" else cold_item_split(ds, 0.2, 0.1, seed=seed)
    return ds, split


def user_subset(split, n: int, seed: int = 2026):
    """The split with its test part restricted to ``n`` seeded test users (all when n = 0)."""
    from avrec.data.splits import Split

    truth = split.test.matrix(binary=True)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if n and len(users) > n:
        users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
    test = split.test.subset(np.isin(split.test.user_idx, users))
    return Split(split.train, split.valid, test, method=split.method, seed=split.seed,
                 valid_candidates=split.valid_candidates, test_candidates=split.test_candidates), len(users)


def section_pipeline(args) -> dict:
    from avrec.eval.evaluate import evaluate_model
    from avrec.models.registry import default_retriever
    from avrec.models.registry import create_model

    retriever_name = args.retriever if args.retriever != "auto" else default_retriever()
    out = {}
    for protocol in args.protocols:
        log(f"pipeline/{protocol}: loading")
        ds, split = load(protocol)
        sub, n_users = user_subset(split, args.eval_users)
        t = time.perf_counter()
        retr = create_model(retriever_name, **json.loads(args.retriever_config))
        retr.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
        fit_retr = time.perf_counter() - t
        log(f"pipeline/{protocol}: {retriever_name} fitted in {fit_retr:.0f}s")
        m_retr = evaluate_model(retr, sub, k=10)
        log(f"pipeline/{protocol}: retriever NDCG@10 {m_retr['ndcg@10']:.4f} on {n_users} users")
        config = dict(
            retriever=retriever_name, n_candidates=args.n_candidates, eval_users=args.es_users,
            tune_users=args.tune_users, threads=args.threads,
            ranker={"model": "default", "max_length": args.max_length, "user_max_tokens": args.user_tokens,
                    "finetune": args.finetune},
            pairs={"max_users": args.pair_users, "positives_per_user": 1, "hard_negatives": 2,
                   "random_negatives": 1},
            train={"batch_size": 16, "lr": 3e-5, "epochs": 1, "eval_every": args.eval_every, "patience": 3,
                   "max_minutes": args.train_minutes, "log_every": 10},
        )
        pipe = create_model("pipeline", **config).use_retriever(retr)
        t = time.perf_counter()
        pipe.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
        fit_pipe = time.perf_counter() - t
        log(f"pipeline/{protocol}: ranker trained + tuned in {fit_pipe:.0f}s: {pipe.fit_report.get('tuning', {}).get('blend_weight')}")
        t = time.perf_counter()
        m_pipe = evaluate_model(pipe, sub, k=10)
        eval_s = time.perf_counter() - t
        rep = pipe.fit_report
        ranker = rep.get("ranker", {})
        tuning = dict(rep.get("tuning", {}))
        tuning.pop("grid", None)
        out[protocol] = {
            "retriever": retriever_name,
            "test_users": n_users,
            "retriever_metrics": {k: m_retr[k] for k in ("ndcg@10", "recall@10", "diversity@10") if k in m_retr},
            "pipeline_metrics": {k: m_pipe[k] for k in ("ndcg@10", "recall@10", "diversity@10") if k in m_pipe},
            "ndcg_gain_pct": 100 * (m_pipe["ndcg@10"] / max(m_retr["ndcg@10"], 1e-12) - 1),
            "tuning": tuning,
            "grid": rep.get("tuning", {}).get("grid"),
            "ranker_training": {k: ranker.get(k) for k in ("steps", "seconds", "peak_rss_mb", "pairs", "positives",
                                                           "negatives", "users", "best_metric", "best_step",
                                                           "stopped_early", "evals")},
            "first_losses": ranker.get("losses", [])[:10],
            "last_losses": ranker.get("losses", [])[-10:],
            "seconds": {"retriever_fit": fit_retr, "pipeline_fit": fit_pipe,
                        "tuning": rep.get("tuning_seconds"), "pipeline_eval": eval_s},
            "peak_rss_mb": peak_mb(),
        }
        log(f"pipeline/{protocol}: {json.dumps(out[protocol]['pipeline_metrics'])} vs {json.dumps(out[protocol]['retriever_metrics'])}")
        write({"pipeline": {**load_results().get("pipeline", {}), protocol: out[protocol], "settings": vars_of(args)}})
    return out


def ensure_mlm(docs: list[str], args, out: Path) -> dict | None:
    """Train the MLM encoder into ``out`` unless a checkpoint is there; its training record, or None."""
    from avrec.finetune.mlm import MLMConfig, train_mlm

    if (out / "config.json").exists():
        return None
    t = time.perf_counter()
    _, r = train_mlm(docs, MLMConfig(max_length=args.adapt_max_length, max_docs=args.mlm_docs,
                                     train={"max_minutes": args.train_minutes, "eval_every": 50,
                                            "log_every": 10}), out)
    return {"seconds": time.perf_counter() - t, "steps": r.steps, "peak_rss_mb": r.peak_rss_mb,
            "evals": r.evals, "first_loss": r.losses[:5], "last_loss": r.losses[-5:]}


def ensure_contrastive(docs: list[str], train, args, out: Path, eval_every: int) -> dict | None:
    """Train the contrastive encoder on ``train``'s co-consumed pairs into ``out`` unless it is there."""
    from avrec.finetune.contrastive import ContrastiveConfig, train_contrastive
    from avrec.finetune.data import co_consumed_pairs

    if (out / "config.json").exists():
        return None
    pairs = co_consumed_pairs(train, max_pairs=args.contrastive_pairs)
    t = time.perf_counter()
    _, r = train_contrastive(docs, pairs, ContrastiveConfig(
        max_length=args.adapt_max_length,
        train={"max_minutes": args.train_minutes, "eval_every": eval_every, "log_every": 10}), out)
    return {"seconds": time.perf_counter() - t, "steps": r.steps, "pairs": int(len(pairs)),
            "peak_rss_mb": r.peak_rss_mb, "evals": r.evals}


def section_adapt(args) -> dict:
    """Hybrid warm/cold NDCG@10 with the default encoder, an MLM-adapted one and a contrastive one."""
    from avrec.data.documents import build_documents
    from avrec.eval.evaluate import evaluate_model
    from avrec.models.registry import available_models, create_model

    if "hybrid" not in available_models():
        return {"skipped": "the hybrid model is not registered"}
    work = Path(args.work or tempfile.mkdtemp(prefix="avrec-adapt-"))
    key = "adapt" if args.dataset == "ml-latest-small" else f"adapt@{args.dataset}"
    if args.split_seed != 2026:
        key += f"#seed{args.split_seed}"
    res = dict(load_results().get(key, {}))
    res["settings"] = vars_of(args)
    base_cfg = {"max_length": args.adapt_max_length, **json.loads(args.retriever_config)}
    encoders: dict[str, dict[str, str]] = {}
    ds, _ = load("warm", args.dataset)
    docs = build_documents(ds.items)
    mlm_dir = work / ("mlm" if args.dataset == "ml-latest-small" else f"mlm-{args.dataset}")  # text only: any split
    record = ensure_mlm(docs, args, mlm_dir)
    if record:
        res["mlm_training"] = record
        write({key: res})
    for protocol in args.protocols:
        _, split = load(protocol, args.dataset, args.split_seed)
        con_dir = work / (f"contrastive-{protocol}" if key == "adapt"
                          else f"contrastive-{args.dataset}-seed{args.split_seed}-{protocol}")
        record = ensure_contrastive(docs, split.train, args, con_dir, eval_every=40)
        if record:
            res[f"contrastive_training_{protocol}"] = record
            write({key: res})
        encoders[protocol] = {"default": "default", "mlm": str(mlm_dir), "contrastive": str(con_dir)}
        rows = dict(res.get(protocol, {}))
        for name, enc in encoders[protocol].items():
            if name in rows:
                continue
            t = time.perf_counter()
            model = create_model("hybrid", encoder=enc, **base_cfg)
            model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
            m = evaluate_model(model, split, k=10)
            rows[name] = {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"], "fit_seconds": time.perf_counter() - t}
            log(f"adapt/{protocol}/{name}: NDCG@10 {m['ndcg@10']:.4f}")
            res[protocol] = rows
            write({key: res})
    return res


def _text_profile_model(vectors: np.ndarray):
    """A text-only recommender: a user's profile is the mean vector of the items they liked, items are
    ranked by cosine to it. It isolates what the encoder contributes (warm and cold alike)."""
    from avrec.models.base import Capabilities, Recommender

    class TextProfile(Recommender):
        name = "text-profile"
        # item vectors come from text, so cold items are scored too
        CAPABILITIES = Capabilities(cold_items=True, exact_fold_in=True)

        def _fit(self, dataset, valid, valid_candidates):
            v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            self.v = v.astype(np.float32)

        def _score(self, user_idx, item_idx):
            return self._score_history(self.seen[user_idx], item_idx)

        def _score_history(self, history, item_idx):
            prof = np.asarray(history @ self.v)
            prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)
            v = self.v if item_idx is None else self.v[item_idx]
            return prof @ v.T

    return TextProfile()


def section_adapt_text(args) -> dict:
    """Encoder adaptation measured on a text-only profile recommender (no collaborative signal), warm and
    cold: default MiniLM vs MLM-adapted vs contrastive (trained on each protocol's training pairs)."""
    from avrec.data.documents import build_documents
    from avrec.encoders import TextEncoder
    from avrec.eval.evaluate import evaluate_model

    work = Path(args.work or tempfile.mkdtemp(prefix="avrec-adapt-"))
    work.mkdir(parents=True, exist_ok=True)
    res = dict(load_results().get("adapt_text", {}))
    res["settings"] = vars_of(args)
    ds, _ = load("warm")
    docs = build_documents(ds.items)
    vec_cache: dict[str, np.ndarray] = {}

    def vectors(enc: str) -> np.ndarray:
        if enc not in vec_cache:
            t = time.perf_counter()
            vec_cache[enc] = TextEncoder(enc, max_length=args.adapt_max_length, batch_size=32).encode(docs, show_progress=False)
            log(f"adapt_text: encoded {len(docs)} docs with {enc} in {time.perf_counter() - t:.0f}s")
        return vec_cache[enc]

    mlm_dir = work / "mlm"
    record = ensure_mlm(docs, args, mlm_dir)
    if record:
        res["mlm_training"] = record
        write({"adapt_text": res})
    for protocol in args.protocols:
        _, split = load(protocol)
        con_dir = work / f"contrastive-{protocol}"
        record = ensure_contrastive(docs, split.train, args, con_dir, eval_every=30)
        if record:
            res[f"contrastive_training_{protocol}"] = record
            write({"adapt_text": res})
        rows = dict(res.get(protocol, {}))
        for name, enc in (("default", "default"), ("mlm", str(mlm_dir)), ("contrastive", str(con_dir))):
            model = _text_profile_model(vectors(enc)).fit(split.train)
            m = evaluate_model(model, split, k=10)
            rows[name] = {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"]}
            log(f"adapt_text/{protocol}/{name}: NDCG@10 {m['ndcg@10']:.4f}")
            res[protocol] = rows
            write({"adapt_text": res})
        vec_cache.pop(str(con_dir), None)
    return res


def vars_of(args) -> dict:
    d = dict(vars(args))
    d["threads"] = args.threads
    d["cpu"] = platform.processor() or platform.machine()
    d["cpu_count"] = os.cpu_count()
    d["python"] = platform.python_version()
    return d


def load_results() -> dict:
    path = RESULTS / "finetune.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write(update: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**load_results(), **update}
    (RESULTS / "finetune.json").write_text(json.dumps(data, indent=1, default=float))
    (RESULTS / "finetune.md").write_text(render(data))


def render(data: dict) -> str:
    lines = ["# Fine-tuning benchmark (issue 4)", "",
             "ml-latest-small enriched with TMDB + hetrec; warm = random_split(seed 2026), "
             "cold = cold_item_split(0.2, 0.1, seed 2026). CPU only (2 shared cores, torch threads as listed).", ""]
    pipe = data.get("pipeline", {})
    if pipe:
        s = pipe.get("settings", {})
        lines += ["## Pipeline (retrieve → cross-encoder → re-rank) vs its retriever", "",
                  f"Cross-encoder: all-MiniLM-L6-v2, max_length {s.get('max_length')}, fine-tune {s.get('finetune')}, "
                  f"top-N = {s.get('n_candidates')}, training pairs from up to {s.get('pair_users')} users, "
                  f"1 epoch (capped at {s.get('train_minutes')} min), torch threads {s.get('threads')}; "
                  f"test NDCG@10 on a seeded subset of {s.get('eval_users')} test users (retriever on the same users).", "",
                  "| protocol | retriever | NDCG@10 retriever | NDCG@10 pipeline | gain | blend w | MMR λ | "
                  "diversity@10 retr → pipe | ranker steps | ranker train s | tuning s | eval s | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in ("warm", "cold"):
            r = pipe.get(p)
            if not r:
                continue
            rt, pm, tr, sec = r["retriever_metrics"], r["pipeline_metrics"], r["ranker_training"], r["seconds"]
            lines.append(
                f"| {p} | {r['retriever']} | {rt['ndcg@10']:.4f} | {pm['ndcg@10']:.4f} | {r['ndcg_gain_pct']:+.1f}% | "
                f"{r['tuning'].get('blend_weight')} | {r['tuning'].get('mmr_lambda')} | "
                f"{rt.get('diversity@10', float('nan')):.3f} → {pm.get('diversity@10', float('nan')):.3f} | "
                f"{tr.get('steps')} | {tr.get('seconds') or 0:.0f} | {sec.get('tuning') or 0:.0f} | "
                f"{sec.get('pipeline_eval') or 0:.0f} | {r['peak_rss_mb']:.0f} |")
        for p in ("warm", "cold"):
            r = pipe.get(p)
            if r and r.get("grid"):
                lines += ["", f"Validation NDCG@10 grid ({p}, {r['tuning'].get('users')} users; "
                              "blend weight w × MMR λ):", "", "| w | λ | NDCG@10 |", "|---|---|---|"]
                lines += [f"| {w} | {lam} | {v:.4f} |" for w, lam, v in r["grid"] if lam in (1.0, min(x[1] for x in r["grid"]))]
    at = data.get("adapt_text", {})
    if at:
        s = at.get("settings", {})
        lines += ["", "## Encoder adaptation, measured on a text-only profile recommender", "",
                  "User profile = mean text vector of the user's training items; items ranked by cosine. No "
                  "collaborative signal, so the numbers isolate the encoder. MiniLM (all-MiniLM-L6-v2) at "
                  f"max_length {s.get('adapt_max_length')}; MLM on up to {s.get('mlm_docs')} item documents; "
                  f"contrastive on up to {s.get('contrastive_pairs')} co-consumed pairs from each protocol's "
                  f"training interactions; each run capped at {s.get('train_minutes')} min. Full test sets.", "",
                  "| protocol | default | MLM-adapted | contrastive |", "|---|---|---|---|"]
        for p in ("warm", "cold"):
            r = at.get(p)
            if r:
                cells = [f"{r[n]['ndcg@10']:.4f}" if n in r else "–" for n in ("default", "mlm", "contrastive")]
                lines.append(f"| {p} | " + " | ".join(cells) + " |")
        for key in sorted(k for k in at if "training" in k):
            v = at[key]
            lines.append(f"\n{key}: {v.get('steps')} steps in {v.get('seconds', 0):.0f}s, "
                         f"peak RSS {v.get('peak_rss_mb', 0):.0f} MB")
    for key in sorted(k for k in data if k == "adapt" or k.startswith(("adapt@", "adapt#"))):
        ad = data[key]
        s = ad.get("settings", {})
        name = s.get("dataset", "ml-latest-small") + f", split seed {s.get('split_seed', 2026)}"
        lines += ["", f"## Encoder adaptation: hybrid NDCG@10 with each encoder ({name})", "",
                  f"Encoder max_length {s.get('adapt_max_length')} for every row (the default row uses the same length); "
                  f"MLM on up to {s.get('mlm_docs')} item documents, contrastive on up to {s.get('contrastive_pairs')} "
                  f"co-consumed pairs of each protocol's training part, each capped at {s.get('train_minutes')} min.", "",
                  "| protocol | default | MLM-adapted | contrastive |", "|---|---|---|---|"]
        for p in ("warm", "cold"):
            r = ad.get(p)
            if r:
                cells = [f"{r[n]['ndcg@10']:.4f}" if n in r else "–" for n in ("default", "mlm", "contrastive")]
                lines.append(f"| {p} | " + " | ".join(cells) + " |")
        for tkey in sorted(k for k in ad if k.endswith("training") or "_training_" in k):
            v = ad[tkey]
            lines.append(f"\n{tkey}: {v.get('steps')} steps in {v.get('seconds', 0):.0f}s, peak RSS {v.get('peak_rss_mb', 0):.0f} MB")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="pipeline")
    ap.add_argument("--protocols", default="warm,cold")
    ap.add_argument("--retriever", default="auto")
    ap.add_argument("--retriever-config", default="{}")
    ap.add_argument("--n-candidates", type=int, default=30)
    ap.add_argument("--eval-users", type=int, default=100)
    ap.add_argument("--tune-users", type=int, default=100)
    ap.add_argument("--es-users", type=int, default=40, help="validation users for early stopping")
    ap.add_argument("--pair-users", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=60)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--user-tokens", type=int, default=48)
    ap.add_argument("--finetune", default="full")
    ap.add_argument("--train-minutes", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--adapt-max-length", type=int, default=64)
    ap.add_argument("--mlm-docs", type=int, default=3000)
    ap.add_argument("--contrastive-pairs", type=int, default=3000)
    ap.add_argument("--work", default="")
    ap.add_argument("--dataset", default="ml-latest-small", help="adapt section: ml-latest-small or lastfm-2k")
    ap.add_argument("--split-seed", type=int, default=2026, help="adapt section: seed of the warm/cold split")
    args = ap.parse_args()
    args.protocols = [p for p in args.protocols.split(",") if p]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("AVREC_DATA", str(ROOT.parent / "shared" / "data"))
    for section in args.sections.split(","):
        log(f"section {section}")
        {"pipeline": section_pipeline, "adapt": section_adapt, "adapt_text": section_adapt_text}[section](args)
    log("done")


if __name__ == "__main__":
    main()
