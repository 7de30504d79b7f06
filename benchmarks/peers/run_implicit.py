"""implicit's ALS and BPR on one split folder (runs in the main .venv; implicit is an avrec dependency).

It goes through the same file protocol as the peers in their own environments, so every contender is
held to one protocol. Weights: train.csv's ``weight`` column is the ALS confidence (1 for MovieLens,
1 + log1p(plays) for Last.fm); BPR uses positives only.

Search (documented defaults first):
- ALS: defaults (factors=100, regularization=0.01, alpha=1.0, iterations=15), then factors=128 with
  regularization in {1, 10, 50} × alpha in {1, 10}.
- BPR: defaults (factors=100, learning_rate=0.01, regularization=0.01, iterations=100), then
  learning_rate in {0.01, 0.05} × iterations in {300} and learning_rate=0.05 with 100 iterations.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VariantWriter, load_split, params_label, runner_args  # noqa: E402


def grid(model: str, quick: bool) -> list[dict]:
    if model == "als":
        out = [{"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}]
        if not quick:
            out += [{"factors": 128, "regularization": r, "alpha": a, "iterations": 15}
                    for r, a in itertools.product((1.0, 10.0, 50.0), (1.0, 10.0))]
        return out
    out = [{"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100 if not quick else 20}]
    if not quick:
        out += [{"factors": 100, "learning_rate": 0.05, "regularization": 0.01, "iterations": 100},
                {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 300},
                {"factors": 100, "learning_rate": 0.05, "regularization": 0.01, "iterations": 300}]
    return out


def main() -> int:
    args = runner_args(__doc__.splitlines()[0])
    import implicit
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    split = load_split(args.split)
    writer = VariantWriter(split, args.out, "implicit", implicit.__version__, k=args.k)
    if args.model not in ("als", "bpr"):
        print(f"unknown model {args.model!r}", file=sys.stderr)
        return 2
    train = split.matrix("train", binary=args.model == "bpr")
    for params in grid(args.model, args.quick):
        if args.model == "als":
            model = AlternatingLeastSquares(**params, random_state=2026, num_threads=args.threads)
        else:
            model = BayesianPersonalizedRanking(**params, random_state=2026, num_threads=args.threads)
        t = time.perf_counter()
        model.fit(train, show_progress=False)
        fit_s = time.perf_counter() - t
        uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)

        def score(users, uf=uf, itf=itf):
            return uf[users] @ itf.T

        writer.add(params_label(params), params, fit_s, score)
        print(f"{params} fit {fit_s:.1f}s", flush=True)
    writer.info["search_note"] = __doc__.split("Search ")[1].strip()
    writer.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
