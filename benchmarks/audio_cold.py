"""What audio adds for cold items: a semi-synthetic benchmark on real Debian game music.

Real: the clips (every soundtrack of wesnoth/hyperrogue/drascula/asc-music that is installed, 20 s from the
middle of each track) and their titles. Synthetic: the listening. Each clip's librosa descriptors are split in
two halves; users' tastes are random directions in the top principal components of the *truth* half (chroma,
key, spectral shape, loudness, tempo), and each user plays 12 clips drawn from a softmax over that utility.
The models see only the other half (MFCC statistics and duration), through ``item_vectors/audio.parquet``,
so they must generalise from correlated sound features, not read the truth back. Text is deliberately thin:
the track title only (no artist, no game). Protocol: cold-item split (25% of clips held out, users rank among
them), NDCG@10, mean ± std over seeds.

The musicnn rows use the pretrained MTT tagger (avrec.encoders.musicnn) on the same clips: its 250 numbers
(penultimate layer + 50 tag probabilities) as the audio vector, or its top-3 tags as text (``heard_tags``).
It hears the whole clip, so unlike the descriptor rows it is not kept away from what generates the tastes;
those rows answer "does a pretrained tagger capture what these listeners follow", not "generalise from
the other half".

    nice -n 19 python benchmarks/audio_cold.py [--seeds 3] [--hybrid-seeds 2] [--seconds 20]

Writes benchmarks/results/audio_cold.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_SIDE = ("mfcc_", "log_duration")  # what the models see; the rest generates the tastes


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--render", action="store_true", help="only rewrite audio_cold.md from audio_cold.json")
    ap.add_argument("--hybrid-seeds", type=int, default=None, help="seeds with the hybrid rows (default: all)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "avrec-audio-bench"))
    args = ap.parse_args()
    if args.render:
        (RESULTS / "audio_cold.md").write_text(render(json.loads((RESULTS / "audio_cold.json").read_text())))
        return 0

    from avrec.data.io import load_folder, write_folder
    from avrec.data.splits import cold_item_split
    from avrec.data.vectors import attach_folder, write_vector_file
    from avrec.encoders.audio import DESCRIPTOR_NAMES
    from avrec.encoders.modalities import extract_modality
    from avrec.eval.evaluate import evaluate_model
    from avrec.models.registry import create_model
    from avrec.testing.media import build_audio_catalogue, taste_interactions

    work = Path(args.work)
    cache = str(work / "cache")
    catalogue = build_audio_catalogue(work / "catalogue", n_tracks=200, seconds=args.seconds)
    items = pd.read_csv(catalogue / "items.csv", dtype=str).fillna("")
    started = time.perf_counter()
    audio = extract_modality(attach_folder(items.copy(), catalogue), "audio", "audio-descriptors", "none")
    throughput = len(items) / (time.perf_counter() - started)
    musicnn, musicnn_rate = _musicnn(catalogue, items, cache)
    heard = _heard(musicnn)
    fingerprint = hashlib.sha256("\n".join(items["source"]).encode()).hexdigest()[:12]
    seen_cols = [i for i, n in enumerate(DESCRIPTOR_NAMES) if n.startswith(MODEL_SIDE)]
    truth_cols = [i for i in range(len(DESCRIPTOR_NAMES)) if i not in seen_cols]
    thin = items[["item_id", "title", "media_type"]]  # no artist, no game, no audio path: text alone is thin

    rows: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        inter = taste_interactions(items["item_id"].tolist(), audio.matrix[:, truth_cols], n_users=args.users,
                                   per_user=12, seed=seed)
        # two folders: the models read item_vectors/ at fit time, so the text-only one must not have it
        text_ds = load_folder(write_folder(thin, inter, work / f"seed{seed}-text"))
        fused_folder = write_folder(thin, inter, work / f"seed{seed}-audio")
        write_vector_file(fused_folder / "item_vectors" / "audio.parquet", items["item_id"], audio.matrix[:, seen_cols])
        fused_ds = load_folder(fused_folder)
        split_t = cold_item_split(text_ds, cold_share=0.25, valid_share=0.15, seed=seed)
        split_f = cold_item_split(fused_ds, cold_share=0.25, valid_share=0.15, seed=seed)
        mnn_folder = write_folder(thin, inter, work / f"seed{seed}-musicnn")
        write_vector_file(mnn_folder / "item_vectors" / "audio.parquet", items["item_id"], musicnn)
        split_m = cold_item_split(load_folder(mnn_folder), cold_share=0.25, valid_share=0.15, seed=seed)
        heard_ds = load_folder(write_folder(thin.assign(heard_tags=heard), inter, work / f"seed{seed}-heard"))
        split_h = cold_item_split(heard_ds, cold_share=0.25, valid_share=0.15, seed=seed)
        assert all(np.array_equal(split_t.test_candidates, x.test_candidates) for x in (split_f, split_m, split_h))
        tiny = dict(max_steps=300, eval_every=25, dim=32, hidden=64, batch_users=64, embedding_cache=cache, seed=seed)
        runs = {
            "content: text only": ("content", split_t, {"embedding_cache": cache}),
            "content: audio only": ("content", split_f, {"embedding_cache": cache, "use_text": False}),
            "content: text + audio": ("content", split_f, {"embedding_cache": cache}),
            "content: musicnn only": ("content", split_m, {"embedding_cache": cache, "use_text": False}),
            "content: text + musicnn": ("content", split_m, {"embedding_cache": cache}),
            "content: text + heard tags": ("content", split_h, {"embedding_cache": cache}),
            "hybrid: text only": ("hybrid", split_t, tiny),
            "hybrid: audio only": ("hybrid", split_f, tiny | {"use_lm": False, "use_words": False,
                                                             "use_tokens": False}),
            "hybrid: text + audio": ("hybrid", split_f, tiny),
            "hybrid: text + musicnn": ("hybrid", split_m, tiny),
        }
        if args.hybrid_seeds is not None and seed >= args.hybrid_seeds:
            runs = {k: v for k, v in runs.items() if not k.startswith("hybrid")}
        for label, (name, split, cfg) in runs.items():
            model = create_model(name, **cfg).fit(split.train, valid=split.valid,
                                                  valid_candidates=split.valid_candidates)
            ndcg = float(evaluate_model(model, split)["ndcg@10"])
            rows.setdefault(label, []).append(ndcg)
            print(f"seed {seed} {label:24s} NDCG@10 {ndcg:.4f}", file=sys.stderr)
        # reference: random ranking of the same cold candidates
        rng = np.random.default_rng(seed)
        rows.setdefault("random", []).append(_random_ndcg(split_t, rng))

    table = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for k, v in rows.items()}
    ratio = {f"{m}: text + {a}": table[f"{m}: text + {a}"]["mean"] / max(table[f"{m}: text only"]["mean"], 1e-9)
             for m in ("content", "hybrid") for a in ("audio", "musicnn", "heard tags")
             if f"{m}: text + {a}" in table}
    out = {"benchmark": "audio_cold", "clips": len(items), "catalogue_fingerprint": fingerprint,
           "clip_seconds": args.seconds, "users": args.users, "hybrid_seeds": args.hybrid_seeds or args.seeds,
           "seeds": args.seeds, "protocol": "cold_item_split(cold_share=0.25, valid_share=0.15), NDCG@10",
           "model_side_descriptors": [DESCRIPTOR_NAMES[i] for i in seen_cols],
           "truth_side_descriptors": [DESCRIPTOR_NAMES[i] for i in truth_cols],
           "extractor": audio.source, "extractor_clips_per_second": throughput,
           "musicnn_clips_per_second": musicnn_rate, "heard_tags_examples": dict(zip(items["title"][:5], heard[:5])),
           "results": table,
           "fused_over_text": ratio, "target": "fused >= 1.3x text-only on cold items",
           "discrepancy_note": "text-only 0.3042 (first note) vs 0.2563: different catalogues (86 vs 89 clips; the "
                               "rebuilt one gained 3 HyperRogue tracks), so different users and cold split; both "
                               "reproduce exactly; the fingerprint above now names the catalogue",
           "target_met": {m: r >= 1.3 for m, r in ratio.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audio_cold.json").write_text(json.dumps(out, indent=2))
    text = render(out)
    (RESULTS / "audio_cold.md").write_text(text)
    print(text)
    return 0


def render(out: dict) -> str:
    """The Markdown table of a result dict (``--render`` rewrites it from the JSON without a rerun)."""
    table, ratio = out["results"], out["fused_over_text"]
    rand = table["random"]["mean"]
    lines = ["# Audio for cold items (semi-synthetic, real clips)", "",
             f"{out['clips']} real clips ({out['clip_seconds']:g} s) from Debian game soundtracks; {out['users']} "
             f"synthetic users whose tastes follow the clips' chroma/key/spectral/loudness/tempo descriptors; the "
             f"models see only the MFCC statistics and duration (item_vectors/audio.parquet) and the track title. "
             f"Cold-item protocol, NDCG@10 over {out['seeds']} seeds (hybrid rows: {out['hybrid_seeds']}). "
             f"musicnn rows: the pretrained MTT tagger's 250 numbers as the audio vector, or its top-3 tags as "
             f"text; it hears the whole clip (see the script's docstring). Catalogue {out['catalogue_fingerprint']}.",
             "", "| model | NDCG@10 (mean ± std) |", "|---|---|"]
    lines += [f"| {k} | {v['mean']:.4f} ± {v['std']:.4f} |" for k, v in table.items()]
    lines += ["", *(f"- {m} / {m.split(':')[0]}: text only = {r:.2f}× (target 1.3×: "
                    f"{'met' if r >= 1.3 else 'not met'})" for m, r in ratio.items())]
    for m in ("content", "hybrid"):
        text, fused, alone = (table[f"{m}: {x}"]["mean"] for x in ("text only", "text + audio", "audio only"))
        lines.append(f"- caveat, {m}: text only is {text / rand:.2f}× random (the titles carry almost no taste "
                     f"signal, so the ratio's denominator is near chance); text + audio is {fused / alone:.2f}× "
                     f"audio only (the text dilutes the audio here)")
    lines += [f"- extractor {out['extractor']}: {out['extractor_clips_per_second']:.2f} clips/s on this CPU "
              "(one process, uncached)",
              f"- musicnn-mtt: {out['musicnn_clips_per_second']:.2f} clips/s (16 clips, uncached, 2 shared cores "
              "under load)",
              f"- {out['discrepancy_note']}",
              "", "Synthetic: the users and their plays. Real: the audio, its descriptors and the titles."]
    return "\n".join(lines) + "\n"


def _musicnn(catalogue: Path, items: pd.DataFrame, cache: str) -> tuple[np.ndarray, float]:
    """musicnn-mtt vectors of every clip (through the benchmark's cache) and its uncached clips/s on 16."""
    from avrec.data.vectors import attach_folder
    from avrec.encoders.modalities import extract_modality

    sample = attach_folder(items.head(16).copy(), catalogue)
    started = time.perf_counter()
    extract_modality(sample, "audio", "musicnn-mtt", "none")
    rate = len(sample) / (time.perf_counter() - started)
    mv = extract_modality(attach_folder(items.copy(), catalogue), "audio", "musicnn-mtt", cache)
    assert mv.present.all(), "musicnn could not read every clip"
    return mv.matrix, rate


def _heard(vectors: np.ndarray) -> list[str]:
    from avrec.encoders.musicnn import top_tags
    from avrec.encoders.musicnn_convert import MTT_LABELS

    return ["|".join(top_tags(v, MTT_LABELS, k=3)) for v in vectors]


def _random_ndcg(split, rng: np.random.Generator, k: int = 10, repeats: int = 20) -> float:
    """NDCG@k of a uniformly random order of the same cold candidates."""
    from avrec.eval.metrics import hit_matrix, ndcg_at_k

    truth = split.test.matrix(binary=True).tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    n_relevant = np.diff(truth[users].indptr)
    values = []
    for _ in range(repeats):
        top = np.stack([rng.permutation(split.test_candidates)[:k] for _ in users])
        values.append(float(ndcg_at_k(hit_matrix(top, truth[users]), n_relevant, k).mean()))
    return float(np.mean(values))


if __name__ == "__main__":
    sys.exit(main())
