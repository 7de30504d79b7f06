"""avrec's own models on one split folder, through the same file protocol as the peers (main .venv).

The split is read with ``Split.load``; each model is fitted on train (with the validation part passed to
``fit`` for models that early-stop) and ``topk_indices`` ranks, exactly as ``evaluate_model`` does: seen
items excluded (train for validation lists, train + validation for test lists) and, on the cold
protocol, only the held-out candidates. Exit code 3 means the model is not registered in this checkout.

Search (each model's defaults first):
- itemknn: neighbours in {50, 100, 200}.
- ease: l2 in {250, 500, 1000}.
- als: factors=128 with (regularization, alpha) in (50, 10), (20, 10), (100, 10), (50, 5), (50, 20).
- bpr: learning_rate in {0.05, 0.01}.
- pop, tfidf, content, kgpath, hybrid: defaults (the content models tune themselves on the validation part).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VariantWriter, load_split, params_label, runner_args  # noqa: E402

GRIDS = {
    "itemknn": [{"neighbours": n} for n in (100, 50, 200)],
    "ease": [{"l2": v} for v in (500.0, 250.0, 1000.0)],
    "als": [{"factors": 128, "regularization": r, "alpha": a} for r, a in ((50.0, 10.0), (20.0, 10.0), (100.0, 10.0), (50.0, 5.0), (50.0, 20.0))],
    "bpr": [{"learning_rate": lr} for lr in (0.05, 0.01)],
}
QUICK = {"bpr": {"iterations": 20}, "hybrid": {}}


def lists(model, split, part: str, k: int) -> pd.DataFrame:
    """Top-k lists for every user with interactions in ``part``, as evaluate_model builds them."""
    target = split.part(part).matrix(binary=True)
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    exclude = split.train.matrix(binary=True)
    if part == "test":
        exclude = exclude + split.valid.matrix(binary=True)
    idx, val = model.topk_indices(users, k, exclude=exclude[users], candidates=split.candidates(part))
    rows = []
    item_ids, user_ids = split.train.item_ids, split.train.user_ids
    for r, u in enumerate(users):
        for rank, (i, s) in enumerate(zip(idx[r], val[r]), start=1):
            if i >= 0:
                rows.append((user_ids[u], item_ids[i], rank, float(s)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rank", "score"])


def main() -> int:
    args = runner_args(__doc__.splitlines()[0])
    import avrec
    from avrec.data.splits import Split
    from avrec.models.registry import available_models, create_model

    if args.model not in available_models():
        print(f"avrec model {args.model!r} is not registered in this checkout (available: {', '.join(available_models())})")
        return 3
    split = Split.load(args.split)
    writer = VariantWriter(load_split(args.split), args.out, "avrec", getattr(avrec, "__version__", ""), k=args.k)
    grid = GRIDS.get(args.model, [{}])
    if args.quick:
        grid = [dict(grid[0], **QUICK.get(args.model, {}))]
    for params in grid:
        model = create_model(args.model, **params)
        t = time.perf_counter()
        model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        out = {part: lists(model, split, part, args.k) for part in ("valid", "test")}
        writer.add_lists(params_label(params) or "defaults", params, fit_s, out, time.perf_counter() - t)
        print(f"{args.model} {params} fit {fit_s:.1f}s", flush=True)
    writer.info["search_note"] = __doc__.split("Search ")[1].strip()
    writer.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
