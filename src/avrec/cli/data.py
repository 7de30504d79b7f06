"""``avrec data info|validate|convert|synth``: inspect, check, rewrite and generate datasets."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from avrec.cli.common import add_data_dir, load_data, stderr_console, stdout_console
from avrec.cli.settings import add_settings_options, load_settings, resolve_settings
from avrec.errors import DataError, DataWarning


def dataset_info(dataset) -> dict[str, Any]:
    """Counts, sparsity, per-user/per-item interaction statistics, text coverage and media types."""
    m = dataset.matrix(binary=True)
    per_user = np.diff(m.indptr)
    per_item = np.asarray(m.sum(axis=0)).ravel()

    def stats(x: np.ndarray) -> dict[str, float]:
        if len(x) == 0:
            return {"min": 0, "median": 0, "mean": 0, "max": 0}
        return {"min": int(x.min()), "median": float(np.median(x)), "mean": round(float(x.mean()), 2),
                "max": int(x.max())}

    items = dataset.items
    coverage = {
        col: round(float((items[col].astype(str).str.strip() != "").mean()), 4)
        for col in items.columns
        if col != "item_id"
    }
    media = (items["media_type"].astype(str).replace("", "(none)").value_counts().to_dict()
             if "media_type" in items else {})
    pairs = int(m.nnz)
    return {
        "name": dataset.name,
        "users": dataset.n_users,
        "items": dataset.n_items,
        "interactions": dataset.n_interactions,
        "distinct_pairs": pairs,
        "items_with_interactions": int((per_item > 0).sum()),
        "sparsity": round(1.0 - pairs / max(dataset.n_users * dataset.n_items, 1), 6),
        "timestamps": bool(dataset.has_timestamps),
        "per_user": stats(per_user),
        "per_item": stats(per_item[per_item > 0]),
        "text_coverage": coverage,
        "media_types": {str(k): int(v) for k, v in media.items()},
        "checksums": dataset.checksums,
    }


def cmd_data_info(args: argparse.Namespace) -> int:
    """Print a dataset's counts, sparsity, per-user/per-item statistics and text coverage."""
    from rich.table import Table

    settings = resolve_settings(load_settings(args.config, args.set), [])
    dataset = load_data(args, settings.data, stderr_console())
    info = dataset_info(dataset)
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return 0
    console = stdout_console()
    summary = Table(title=f"Dataset {info['name']}", title_justify="left", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for label, value in (
        ("users", f"{info['users']:,}"),
        ("items", f"{info['items']:,} ({info['items_with_interactions']:,} with interactions)"),
        ("interactions", f"{info['interactions']:,} ({info['distinct_pairs']:,} distinct user-item pairs)"),
        ("sparsity", f"{info['sparsity']:.4%}"),
        ("timestamps", "yes" if info["timestamps"] else "no"),
        ("per user min/median/mean/max", "/".join(str(v) for v in info["per_user"].values())),
        ("per item min/median/mean/max", "/".join(str(v) for v in info["per_item"].values())),
        ("media types", ", ".join(f"{k} {v:,}" for k, v in info["media_types"].items()) or "(no media_type column)"),
    ):
        summary.add_row(label, value)
    console.print(summary)
    cov = Table(title="Text coverage", title_justify="left")
    cov.add_column("field")
    cov.add_column("items with a value", justify="right")
    for col, share in info["text_coverage"].items():
        cov.add_row(col, f"{share:.1%}")
    console.print(cov)
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    """Load a dataset, print every warning and an OK line (exit 2 on warnings with --strict)."""
    from avrec.data.builtin import load_dataset

    settings = resolve_settings(load_settings(args.config, args.set), [])
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            dataset = load_dataset(args.dataset, settings.data, args.data_dir)
    finally:
        for w in caught:
            if issubclass(w.category, DataWarning):
                print(f"warning: {w.message}", file=sys.stderr)
    n_warn = sum(issubclass(w.category, DataWarning) for w in caught)
    if n_warn and args.strict:
        print(f"error: {n_warn} warning(s) and --strict", file=sys.stderr)
        return 2
    plural = "" if n_warn == 1 else "s"
    print(
        f"OK: {dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
        f"{dataset.n_interactions:,} interactions; {n_warn} warning{plural}"
    )
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    """Write a built-in dataset or a folder in the avrec folder format (CSV or Parquet)."""
    from avrec.data.io import clean_items, find_table, load_folder, read_table
    from avrec.data.sources import BUILTIN, builtin_frames

    out = Path(args.out)
    err = stderr_console()
    source = str(args.source)
    with err.status(f"reading {source}"):
        if source in BUILTIN:
            items, interactions = builtin_frames(source, args.data_dir)
            items = clean_items(items, Path(f"{source}/items"))
        elif Path(source).is_dir():
            folder = Path(source)
            items_path, inter_path = find_table(folder, "items"), find_table(folder, "interactions")
            items = clean_items(read_table(items_path), items_path)
            interactions = read_table(inter_path)
        else:
            raise DataError(f"{source}: neither a dataset folder nor a built-in dataset ({', '.join(sorted(BUILTIN))})")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise DataError(f"{out}: folder exists and is not empty (use --force to overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    with err.status(f"writing {out}"):
        if args.format == "parquet":
            items.astype(str).to_parquet(out / "items.parquet", index=False)
            interactions.astype(str).to_parquet(out / "interactions.parquet", index=False)
            for stale in ("items.csv", "interactions.csv"):
                (out / stale).unlink(missing_ok=True)
        else:
            items.to_csv(out / "items.csv", index=False)
            interactions.to_csv(out / "interactions.csv", index=False)
            for stale in ("items.parquet", "interactions.parquet"):
                (out / stale).unlink(missing_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        check = load_folder(out)
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(
        f"wrote {out} ({args.format}): {len(items):,} items, {len(interactions):,} interaction rows "
        f"({check.n_users:,} users, {check.n_interactions:,} interactions after validation)"
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    """Write a synthetic dataset folder of any size (:mod:`avrec.data.synth`), streaming the interactions."""
    import time

    from avrec.data.synth import SynthConfig, synthesize

    cfg = SynthConfig(n_items=args.items, n_users=args.users, n_interactions=args.interactions, seed=args.seed,
                      n_tastes=args.tastes)
    started = time.perf_counter()
    with stderr_console().status(f"writing {args.out}"):
        summary = synthesize(args.out, cfg, force=args.force)
    print(f"wrote {args.out}: {cfg.n_items:,} items, {cfg.n_users:,} users, {summary['rows_written']:,} interactions, "
          f"{summary['tastes']} tastes, seed {cfg.seed} ({time.perf_counter() - started:.1f} s)")
    return 0


# ---- registration ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data info|validate|convert|synth`` to the ``avrec`` parser."""
    data = sub.add_parser("data", help="inspect, validate and convert datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = data_sub.add_parser("info", help="counts, sparsity, interactions per user/item, text coverage")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--json", action="store_true")
    add_settings_options(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_data_info)

    p = data_sub.add_parser("validate", help="load a dataset and report every warning and error")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--strict", action="store_true", help="exit 2 on warnings too")
    add_settings_options(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_data_validate)

    p = data_sub.add_parser("convert", help="write a built-in dataset (or a folder) in the avrec folder format")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--out", required=True, metavar="FOLDER")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    add_data_dir(p)
    p.set_defaults(func=cmd_data_convert)

    p = data_sub.add_parser("synth", help="write a synthetic dataset folder of any size (Parquet, streamed)")
    p.add_argument("--items", type=int, required=True, metavar="N")
    p.add_argument("--users", type=int, required=True, metavar="U")
    p.add_argument("--interactions", type=int, required=True, metavar="M")
    p.add_argument("--out", required=True, metavar="FOLDER")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tastes", type=int, default=0, help="latent tastes (0: about sqrt(items)/4, 8 to 400)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    p.set_defaults(func=cmd_data_synth)
