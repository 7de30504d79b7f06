"""Tables and plot of ``benchmarks/generalise.py``: mean ± standard deviation over seeds, targets checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TARGET_COLD, TARGET_WARM = 1.2, 1.03
REFS = {"warm": ("ease", "als"), "cold": ("tfidf-ref", "lightfm")}


def aggregate(rows: list[dict]) -> dict:
    """{(variant, protocol): {contender: (mean, std, n)}} of test NDCG@10."""
    cells: dict = {}
    for r in rows:
        if "metrics" not in r:
            continue
        cells.setdefault((r["variant"], r["protocol"]), {}).setdefault(r["contender"], []).append(r["metrics"]["ndcg@10"])
    return {key: {c: (float(np.mean(v)), float(np.std(v)), len(v)) for c, v in by.items()} for key, by in cells.items()}


def verdicts(agg: dict) -> list[dict]:
    out = []
    for (variant, protocol), by in agg.items():
        if "hybrid" not in by:
            continue
        refs = {c: by[c][0] for c in REFS[protocol] if c in by}
        best_ref = max(refs, key=refs.get) if refs else None
        ratio = by["hybrid"][0] / refs[best_ref] if best_ref else float("nan")
        comps = {c: m for c, (m, _, _) in by.items() if c.startswith("component:")}
        worst_gap = max(comps.values()) if comps else float("nan")
        target = TARGET_COLD if protocol == "cold" else TARGET_WARM
        out.append({"variant": variant, "protocol": protocol, "hybrid": by["hybrid"][0], "seeds": by["hybrid"][2],
                    "best_reference": best_ref,
                    "reference": refs.get(best_ref, float("nan")), "ratio": ratio, "target": target,
                    "met": bool(ratio >= target), "best_component": max(comps, key=comps.get) if comps else None,
                    "best_component_ndcg": worst_gap, "above_components": bool(by["hybrid"][0] >= worst_gap)})
    return out


def ablation_table(rows: list[dict], seed: int = 2026) -> list[str]:
    """Hybrid on the first seed against each ablation of the same fit (and the LM-free refit)."""
    by: dict = {}
    for r in rows:
        if r.get("seed") == seed and "metrics" in r:
            by.setdefault((r["variant"], r["protocol"]), {})[r["contender"]] = r["metrics"]["ndcg@10"]
    cells = {k: v for k, v in by.items() if "hybrid" in v and any(c.startswith("ablation:") for c in v)}
    if not cells:
        return []
    names = sorted({c for v in cells.values() for c in v if c.startswith("ablation:")})
    out = ["", f"## Ablations (seed {seed}): test NDCG@10 of the hybrid without one part, change against the full hybrid",
           "", "`no-X`: X left out of the fusion, the other weights re-tuned on validation (no refit); `no-lm`:",
           "refitted with `use_lm=false` and without the `content` component (no language model anywhere).", "",
           "| variant | protocol | hybrid | " + " | ".join(n.split(":", 1)[1] for n in names) + " |",
           "|---|---|---:|" + "---:|" * len(names)]
    for (variant, protocol), v in sorted(cells.items()):
        h = v["hybrid"]
        vals = [f"{v[n]:.4f} ({(v[n] / h - 1) * 100:+.1f}%)" if n in v else "" for n in names]
        out.append(f"| {variant} | {protocol} | {h:.4f} | " + " | ".join(vals) + " |")
    return out


def write_report(rows: list[dict], stem: Path) -> str:
    agg = aggregate(rows)
    ver = verdicts(agg)
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Generalisation: hybrid against the strongest references, thin and rich catalogues", "",
             "Command: `AVREC_DATA=../shared/data .venv/bin/python benchmarks/generalise.py` (see its docstring).",
             f"Test NDCG@10, full ranking, mean ± standard deviation over split seeds {seeds} (n per cell shown);",
             "warm = per-user random 8:1:1; cold = 20% of items without any interaction, ranked among themselves.",
             "References are tuned on each split's validation part; `component:` rows are the models the hybrid",
             "fuses, scored alone as fitted inside it; `ablation:` rows (first seed) leave one part out.", "",
             "## Targets", "",
             "| variant | protocol | seeds | hybrid | strongest reference | its NDCG@10 | ratio | target | met "
             "| best single component | hybrid ≥ it |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---|---|"]
    for v in ver:
        lines.append(f"| {v['variant']} | {v['protocol']} | {v['seeds']} | {v['hybrid']:.4f} | {v['best_reference']} | {v['reference']:.4f} | "
                     f"{v['ratio']:.3f}× | {v['target']}× | {'yes' if v['met'] else '**no**'} | "
                     f"{v['best_component']} ({v['best_component_ndcg']:.4f}) | {'yes' if v['above_components'] else '**no**'} |")
    lines += ablation_table(rows)
    for (variant, protocol), by in sorted(agg.items()):
        lines += ["", f"## {variant} — {protocol}", "", "| contender | NDCG@10 | ± | n |", "|---|---:|---:|---:|"]
        for c, (m, s, n) in sorted(by.items(), key=lambda t: -t[1][0]):
            lines.append(f"| {c} | {m:.4f} | {s:.4f} | {n} |")
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {r['variant']} {r['protocol']} s{r['seed']} {r['contender']}: {r['error']}"
                                          for r in errors]
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(text)
    stem.with_name(stem.name + "_summary.json").write_text(json.dumps(ver, indent=1))
    _plot(agg, stem.with_suffix(".png"))
    return text


def _plot(agg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(agg)
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        by = agg[key]
        names = ["hybrid", *[c for c in REFS[key[1]] if c in by]]
        names = [n for n in names if n in by]
        means = [by[n][0] for n in names]
        stds = [by[n][1] for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3,
               color=["tab:blue" if n == "hybrid" else "tab:gray" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{key[0]} {key[1]}", fontsize=9)
    axes[0][0].set_ylabel("test NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
