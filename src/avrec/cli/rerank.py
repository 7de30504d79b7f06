"""``avrec tune-rerank MODEL_DIR DATASET``: tune the serving re-rankers (popularity penalty β, then
calibration λ) for a saved model's kind and settings, and write the ``[serve.rerank]`` table.

A fresh model with MODEL_DIR's settings is fitted on the train part of DATASET's seeded random 8:1:1 split
(the served model saw every interaction, so its own lists cannot be validated); β and then λ are the
largest values whose validation NDCG@10 stays within ``--tolerance`` (:mod:`avrec.pipeline.exposure`).
``avrec serve MODEL_DIR --config FILE`` then serves with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avrec.cli.common import add_data_dir, require_model_folder
from avrec.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune-rerank", help="tune the popularity penalty and calibration of `avrec serve` on validation",
                       description=__doc__.splitlines()[0])
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="a folder written by `avrec fit --out` (its kind and settings)")
    p.add_argument("dataset", metavar="DATASET", help="a dataset folder or built-in name to split and validate on")
    p.add_argument("--out", metavar="FILE", help="write the [serve.rerank] table here (TOML; default: print it)")
    p.add_argument("--tolerance", type=float, default=0.02, help="largest NDCG@10 loss allowed (default 0.02)")
    p.add_argument("--depth", type=int, default=200, help="how deep into each list the stages look (default 200)")
    p.add_argument("--calibration-field", default="genres", help="multi-valued item column to calibrate on")
    p.add_argument("--seed", type=int, default=2026, help="seed of the split (default 2026)")
    add_data_dir(p)
    p.set_defaults(func=cmd_tune_rerank)


def cmd_tune_rerank(args: argparse.Namespace) -> int:
    from avrec.cli.common import stderr_console
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig
    from avrec.data.splits import random_split
    from avrec.models.base import Recommender
    from avrec.pipeline.exposure import rerank_toml, tune_exposure

    if not 0 <= args.tolerance < 1:
        raise ConfigError(f"--tolerance must be in [0, 1), not {args.tolerance}")
    if args.depth < 10:
        raise ConfigError(f"--depth must be at least 10 (the list length), not {args.depth}")
    model_dir = require_model_folder(args.model_dir)
    err = stderr_console()
    with err.status(f"loading {model_dir} and {args.dataset}"):
        saved = Recommender.load(model_dir)
        dataset = load_dataset(args.dataset, DataConfig(), args.data_dir)
    if args.calibration_field not in dataset.items.columns:
        raise DataError(f"--calibration-field: {dataset.name} has no item column {args.calibration_field!r}")
    split = random_split(dataset, seed=args.seed)
    with err.status(f"fitting {saved.name} on the train part"):
        model = type(saved)(saved.config).fit(split.train, valid=split.valid)
    with err.status("tuning on validation"):
        result = tune_exposure(model, split, args.calibration_field, args.depth, args.tolerance)
    text = rerank_toml(result, f"{dataset.name} ({saved.name})")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}; serve with: avrec serve {model_dir} --config {args.out}", file=sys.stderr)
    print(text, end="")
    return 0
