"""Faithfulness of explanations: are 100% of them grounded in the data, and how many carry metadata or text?

For each model: fit on the training part of ml-latest-small (+ TMDB + hetrec, random split, seed 2026), draw
200 random users, take one random item of each one's top 10, explain it, and check independently of the
explainer (raw item fields, the training matrix, the item document) that
- every ``history_item`` is in that user's training history,
- every ``entity`` is named by the candidate's field and by each listed history item's field,
- every ``text`` span occurs verbatim in the candidate's item document,
- the JSON shape is exact.
Coverage is the share of explanations with at least one entity or text evidence. With ``--generate N`` it
also rewrites N explanations with SmolLM2 (the optional 'llm' extra) and reports how many rewrites the
verifier accepted (the rest fall back to the template).

    AVREC_DATA=/work/shared/data nice -n 10 python benchmarks/faithfulness.py [--models ease,kgpath,hybrid]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 2026


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ease,itemknn,kgpath,hybrid",
                        help="comma-separated; names that are not registered are skipped")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--generate", type=int, default=0, help="also try N SmolLM2 rewrites (needs the llm extra)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true",
                        help="keep other models' rows from an existing faithfulness.json (run slow models separately)")
    args = parser.parse_args(argv)

    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig
    from avrec.data.splits import random_split
    from avrec.explain import Explainer, measure_faithfulness, sample_pairs
    from avrec.models.registry import available_models, create_model

    os.environ.setdefault("AVREC_DATA", "/work/shared/data")
    ds = load_dataset("ml-latest-small", DataConfig(enrich=["tmdb", "hetrec"]))
    train = random_split(ds, seed=SEED).train
    results = []
    example = None
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in available_models():
            print(f"skip {name}: not registered")
            continue
        start = time.perf_counter()
        model = create_model(name).fit(train)
        fit_s = time.perf_counter() - start
        pairs = sample_pairs(model, args.pairs, seed=SEED)
        explainer = Explainer(model)
        start = time.perf_counter()
        report = measure_faithfulness(explainer, pairs)
        explain_s = time.perf_counter() - start
        report.update(model=name, fit_seconds=round(fit_s, 1), ms_per_explanation=round(1000 * explain_s / max(len(pairs), 1), 1))
        if example is None:
            example = explainer.explain(*pairs[0])
        if args.generate:
            report["generation"] = _generation(explainer, pairs[: args.generate])
        results.append(report)
        print(f"{name}: grounded {report['grounded_share']:.1%}, coverage {report['coverage']:.1%}, "
              f"text {report['with_text']:.1%}, {report['ms_per_explanation']} ms each", flush=True)

    previous = args.out / "faithfulness.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        done = {r["model"] for r in results}
        results = [r for r in old["results"] if r["model"] not in done] + results
        example = old.get("example") or example
    payload = {
        "benchmark": "faithfulness",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "dataset": "ml-latest-small + TMDB 5000 + hetrec2011-movielens-2k, random_split seed 2026 (train part)",
        "pairs_per_model": args.pairs,
        "results": results,
        "example": example,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faithfulness.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    (args.out / "faithfulness.md").write_text(render_markdown(payload))
    return payload


def _generation(explainer, pairs) -> dict:
    """Rewrite explanations with SmolLM2 and count how many pass the verifier."""
    from avrec.explain import SmolLMGenerator, generator_available
    from avrec.explain.templates import render_template

    if not generator_available():
        return {"skipped": "the 'llm' extra is not installed"}
    gen = SmolLMGenerator()
    explainer.generator = gen
    start = time.perf_counter()
    samples = []
    for user, item in pairs:
        exp = explainer.explain(user, item)
        template = render_template(explainer.facts(user, item))
        samples.append({"kept": not gen.last_problems, "changed": exp["text"] != template, "text": exp["text"],
                        "problems": list(gen.last_problems)})
    explainer.generator = None
    n = max(len(pairs), 1)
    return {
        "tried": len(pairs),
        "accepted_share": gen.stats["accepted"] / n,
        "changed_share": sum(s["changed"] for s in samples) / n,
        "seconds_per_rewrite": round((time.perf_counter() - start) / n, 2),
        "rejected_examples": [s for s in samples if not s["kept"]][:3],
        "accepted_examples": [s["text"] for s in samples if s["kept"]][:3],
    }


def render_markdown(p: dict) -> str:
    lines = [
        "# Faithfulness of explanations",
        "",
        f"{p['dataset']}; {p['pairs_per_model']} random (user, recommended item) pairs per model (one random item of "
        f"each user's top 10). Generated {p['date']} on {p['cpus']} CPUs by `python benchmarks/faithfulness.py`.",
        "",
        "Grounded: every history item is in the user's training history, every entity is named by the candidate's "
        "and each listed history item's metadata field, every text span occurs verbatim in the candidate's item "
        "document, exact JSON shape. Coverage: at least one entity or text evidence.",
        "",
        "| model | pairs | grounded | coverage | with entity | with text | evidence per explanation | ms per explanation |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["results"]:
        lines.append(
            f"| {r['model']} | {r['pairs']} | {r['grounded_share']:.1%} | {r['coverage']:.1%} | {r['with_entity']:.1%} "
            f"| {r['with_text']:.1%} | {r['mean_evidence']:.2f} | {r['ms_per_explanation']} |"
        )
    gens = [(r["model"], r["generation"]) for r in p["results"] if "generation" in r]
    if gens:
        lines += ["", "## SmolLM2 rewrites", "",
                  "| model | tried | kept by the verifier | kept and different from the template | seconds each |",
                  "|---|---:|---:|---:|---:|"]
        for model, g in gens:
            if "skipped" in g:
                lines.append(f"| {model} | - | {g['skipped']} | - | - |")
            else:
                lines.append(f"| {model} | {g['tried']} | {g['accepted_share']:.0%} | {g['changed_share']:.0%} "
                             f"| {g['seconds_per_rewrite']} |")
        lines.append("")
        lines.append("Rejected rewrites fall back to the template sentence, so every shown text stays grounded.")
    if p.get("example"):
        lines += ["", "## Example", "", "```json", json.dumps(p["example"], indent=2, ensure_ascii=False), "```"]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
