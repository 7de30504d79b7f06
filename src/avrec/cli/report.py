"""``avrec report MODEL_DIR DATASET --out DIR``: an HTML report of a fitted model's exposure and bias.

The model recommends top-K to the dataset's users (known users through their own rows, others by
fold-in of their history), their consumed items excluded. The report shows the beyond-accuracy metrics of
:mod:`avrec.eval.beyond` over the pooled lists and four plots: the popularity of recommended against
consumed items, the Lorenz curves of exposure and consumption, exposure per provider group, and the genre
mix of histories against lists (calibration). Writes DIR/report.html (self-contained, inline SVG) and
DIR/report.json.
"""

from __future__ import annotations

import argparse
import sys
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from avrec.cli.common import add_data_dir, require_model_folder
from avrec.errors import ConfigError, DataError

DEFINITIONS = {
    "coverage": "share of the catalogue shown in at least one list",
    "gini": "Gini index of exposure over the catalogue (0: equal, 1: one item takes every slot)",
    "tail": "share of slots holding a long-tail item (the 80% of items with the fewest users)",
    "arp": "average popularity (users) of the listed items, mean over lists",
    "poplift": "(ARP of lists − ARP of histories) / ARP of histories",
    "miscal": "Steck's KL between the genre mix of a user's history and of their list, mean over users",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a model's exposure, popularity bias and calibration",
                       description=__doc__.splitlines()[0])
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("dataset", metavar="DATASET", help="a dataset folder or built-in name (users and histories)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.html and report.json")
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument("--users", type=int, default=2000, help="at most this many users, a seeded sample (default 2000)")
    p.add_argument("--calibration-field", default="genres", help="multi-valued column for calibration")
    add_data_dir(p)
    p.set_defaults(func=cmd_report)


def _lists(model: Any, histories: list[list[str]], users: list[str], k: int) -> tuple[np.ndarray, Any]:
    """Top-k per user (known users by their rows, others by fold-in) and the history rows over the model."""
    import scipy.sparse as sp

    hist = sp.csr_matrix(model.history_matrix(histories))
    topk = np.full((len(users), k), -1, dtype=np.int64)
    known = [r for r, u in enumerate(users) if u in model.user_index]
    unknown = [r for r in range(len(users)) if users[r] not in model.user_index]
    if known:
        idx = np.array([model.user_index[users[r]] for r in known])
        topk[known], _ = model.topk_indices(idx, k, exclude=hist[known])
    if unknown:
        topk[unknown], _ = model.topk_histories(hist[unknown], k)
    return topk, hist


def build_report(model: Any, dataset: Any, k: int, max_users: int, field: str) -> tuple[dict[str, Any], str]:
    """The report's numbers and its HTML."""
    from avrec.cli.svg import bar_chart, line_chart
    from avrec.eval.beyond import (
        BeyondConfig,
        beyond_accuracy,
        item_distributions,
        lorenz_curve,
        user_mix,
        value_matrix,
    )

    index = model.item_index
    rng = np.random.default_rng(2026)
    all_users = [str(u) for u in dataset.user_ids]
    users = all_users if len(all_users) <= max_users else sorted(rng.choice(all_users, max_users, replace=False))
    histories = [[i for i in dataset.history(u) if i in index] for u in users]
    keep = [r for r, h in enumerate(histories) if h]
    if not keep:
        raise DataError(f"{dataset.name}: none of its users' items are in the model's catalogue")
    users, histories = [users[r] for r in keep], [histories[r] for r in keep]
    topk, hist = _lists(model, histories, users, k)
    full = model.history_matrix([[i for i in dataset.history(u) if i in index] for u in all_users])
    popularity = np.asarray((full > 0).sum(axis=0)).ravel().astype(np.float64)
    items = model.items
    metrics, groups = beyond_accuracy(topk, k, items=items, history=hist, popularity=popularity,
                                      config=BeyondConfig(calibration_field=field))
    shown = np.bincount(topk[topk >= 0], minlength=len(items)).astype(np.float64)
    metrics = {f"coverage@{k}": float((shown > 0).mean()), **metrics}
    consumed = np.asarray(hist.sum(axis=0)).ravel()

    # 1. popularity of what is shown against what is consumed: cumulative share by item popularity
    order = np.argsort(popularity, kind="stable")
    pops = popularity[order]
    cum = {name: np.cumsum(w[order]) / max(w.sum(), 1) for name, w in (("recommended", shown), ("consumed", consumed))}
    steps = np.unique(np.geomspace(1, max(pops.max(), 1), 60).astype(int))
    at = np.searchsorted(pops, steps, side="right") - 1
    pop_chart = line_chart({n: (steps.tolist(), np.where(at >= 0, c[np.maximum(at, 0)], 0).tolist())
                            for n, c in cum.items()},
                           "Popularity of recommended vs consumed items", "item popularity (users, log scale)",
                           "cumulative share", log_x=True)
    # 2. Lorenz curves
    lorenz = {}
    for name, w in (("exposure (lists)", shown), ("consumption", consumed), ("equality", np.ones(len(items)))):
        x, y = lorenz_curve(w)
        pick = np.linspace(0, len(x) - 1, min(len(x), 200)).astype(int)
        lorenz[name] = (x[pick].tolist(), y[pick].tolist())
    lorenz_chart = line_chart(lorenz, f"Lorenz curve of exposure (Gini {metrics[f'gini@{k}']:.3f})",
                              "share of items (least shown first)", "share of slots")
    # 3. provider groups
    group_html = ("<p>No provider column (artist, director, country, language, media_type) with more than one "
                  "value in the catalogue: exposure per group not shown.</p>")
    informative = {c: g for c, g in groups.items() if g["groups"] > 1}
    if informative:
        column, g = next(iter(informative.items()))
        top = g["top"][:15]
        group_html = bar_chart([t["group"] for t in top], {"recommended": [t["share"] for t in top],
                                                           "consumed": [t["train_share"] for t in top]},
                               f"Exposure per {column} (top 15; Gini {g['gini']:.3f})", "share")
    # 4. calibration
    values, names = value_matrix(items, field)
    calib_html = f"<p>No <code>{escape(field)}</code> column: calibration not measured.</p>"
    if names:
        import scipy.sparse as sp

        dist = item_distributions(values)
        p, ok_p = user_mix(hist, dist)
        lists = sp.csr_matrix((np.ones(int((topk >= 0).sum())), (np.nonzero(topk >= 0)[0], topk[topk >= 0])),
                              shape=(len(topk), len(items)))
        q, ok_q = user_mix(lists, dist)
        ok = ok_p & ok_q
        hp, lq = p[ok].mean(axis=0), q[ok].mean(axis=0)
        best = np.argsort(-hp, kind="stable")[:15]
        calib_html = bar_chart([names[g] for g in best], {"histories": hp[best].tolist(), "lists": lq[best].tolist()},
                               f"Genre mix of histories vs lists (mean KL {metrics.get(f'miscal@{k}', 0):.3f})",
                               "mean share")
    payload = {"model": model.name, "dataset": dataset.name, "k": k, "users": len(users), "metrics": metrics,
               "groups": groups}
    rows = "".join(f"<tr><td>{escape(key)}</td><td>{value:.4f}</td><td>{escape(DEFINITIONS.get(key.split('@')[0], ''))}"
                   "</td></tr>" for key, value in metrics.items())
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>avrec report: {escape(model.name)} on {escape(dataset.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.grid{{display:flex;flex-wrap:wrap;gap:16px}}</style></head><body>
<h1>{escape(model.name)} on {escape(dataset.name)}: exposure, popularity bias and calibration</h1>
<p>Top-{k} lists for {len(users):,} users (items they consumed excluded), pooled over all lists.
Popularity is the number of the dataset's users who consumed an item.</p>
<table><tr><th>metric</th><th>value</th><th>what it is</th></tr>{rows}</table>
<div class="grid"><div>{pop_chart}</div><div>{lorenz_chart}</div><div>{group_html}</div><div>{calib_html}</div></div>
</body></html>"""
    return payload, html


def cmd_report(args: argparse.Namespace) -> int:
    """Load the model and the dataset, build the report, write report.html and report.json."""
    from avrec.cli.common import stderr_console
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig
    from avrec.models.base import Recommender
    from avrec.run import write_json

    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    if args.users < 1:
        raise ConfigError(f"--users must be at least 1, not {args.users}")
    model_dir = require_model_folder(args.model_dir)
    err = stderr_console()
    with err.status(f"loading {model_dir}"):
        model = Recommender.load(model_dir)
    with err.status(f"loading {args.dataset}"):
        dataset = load_dataset(args.dataset, DataConfig(), args.data_dir)
    with err.status("recommending and measuring"):
        payload, html = build_report(model, dataset, args.k, args.users, args.calibration_field)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(html, encoding="utf-8")
    write_json(out / "report.json", payload)
    print(f"wrote {out / 'report.html'} and {out / 'report.json'}", file=sys.stderr)
    return 0
