"""``avrec fit``, ``recommend``, ``similar`` and ``add-items``: fit a model on a dataset and use the saved folder."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

from avrec.cli.common import (
    add_data_dir,
    add_run_dir,
    finish_run,
    load_data,
    load_model,
    read_id_file,
    require_model_folder,
    stderr_console,
    stdout_console,
)
from avrec.cli.settings import add_settings_options, load_settings, resolve_settings
from avrec.errors import ConfigError, DataError


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit --model on every interaction of DATASET and save it to --out, with a run record."""
    from avrec.finetune.distributed import rank_zero
    from avrec.models.registry import create_model
    from avrec.models.versions import is_home
    from avrec.run import start_run

    settings = resolve_settings(load_settings(args.config, args.set), [args.model])
    if is_home(args.out):
        raise DataError(f"--out {args.out}: holds model versions (avrec update); fit into a new folder, or fold "
                        "new data in with `avrec update`")
    err = stderr_console()
    writer = rank_zero()  # under torchrun (the towers train data-parallel) only rank 0 writes anything
    run = start_run("fit", settings.seed, args.run_dir if writer else tempfile.mkdtemp(prefix="avrec-fit-rank"))
    ok = False
    try:
        run.record_config(settings.to_dict(command="fit", dataset=args.dataset, model=args.model, out=str(args.out)))
        dataset = load_data(args, settings.data, err)
        run.record_checksums(dataset.checksums)
        probe = None
        if args.probe_users:  # the forgetting guard's frozen probe set (avrec.serve.probe), held out of training
            from avrec.serve.probe import draw_probe

            dataset, probe = draw_probe(dataset, args.probe_users, args.probe_share, seed=settings.seed)
        model = create_model(args.model, settings.models[args.model])
        start = time.perf_counter()
        with err.status(f"fitting {args.model} on {dataset.name} ({dataset.n_interactions:,} interactions)"):
            model.fit(dataset)
        fit_s = time.perf_counter() - start
        if not writer:
            return 0
        _save_fit(model, Path(args.out), probe, dataset, args, settings.seed)
        run.record_metrics(
            {"fit_seconds": round(fit_s, 3), "users": dataset.n_users, "items": dataset.n_items,
             "interactions": dataset.n_interactions, "model_dir": str(args.out)}
        )
        ok = True
    finally:
        if writer:
            finish_run(run, ok)
        else:
            shutil.rmtree(run.path, ignore_errors=True)
    print(
        f"fitted {args.model} on {dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
        f"{dataset.n_interactions:,} interactions in {fit_s:.1f} s; saved to {args.out} (run record: {run.path})"
    )
    return 0


PROBE_FILES = ("probe.parquet", "probe.json", "probe_items.parquet")


def _save_fit(model, out: Path, probe, dataset, args: argparse.Namespace, seed: int) -> None:
    """Write the model (and its probe set) beside ``out`` and swap it in whole: a crash, SIGKILL included,
    leaves the previous folder as it was. Other files already in ``out`` stay; a probe of an earlier fit
    belongs to that fit and goes."""
    from avrec.models.artifacts import replace_folder

    def write(tmp: Path) -> None:
        model.save(tmp)
        if probe is not None:
            from avrec.serve.probe import save_probe

            save_probe(tmp, probe, items=dataset.item_ids, share=args.probe_share, seed=seed, model=args.model)

    replace_folder(out, write, carry=lambda name: name not in PROBE_FILES)


def _candidate_indices(model, path: Path) -> np.ndarray:
    ids = read_id_file(path, "item id")
    index = model.item_index
    unknown = [(n, i) for n, i in enumerate(ids, start=1) if i not in index]
    if unknown:
        shown = ", ".join(repr(i) for _, i in unknown[:5])
        raise DataError(
            f"{path}: {len(unknown)} candidate id(s) not in the model's catalogue: {shown}"
            + (" …" if len(unknown) > 5 else "")
        )
    return np.unique(np.fromiter((index[i] for i in ids), dtype=np.int64, count=len(ids)))


def _name_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" … and {len(names) - limit} more" if len(names) > limit else "")


def cmd_recommend(args: argparse.Namespace) -> int:
    """Write user_id,item_id,rank,score rows (best first) for each user; seen items excluded."""
    import pandas as pd

    if (args.users is None) == (args.user is None):
        raise ConfigError("recommend: give either --users FILE or --user ID")
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    model = load_model(args.model_dir)
    users = read_id_file(args.users, "user id") if args.users else [str(args.user).strip()]
    cand_idx = _candidate_indices(model, Path(args.candidates)) if args.candidates else None
    n, k = len(users), args.k
    cand_ids = None if cand_idx is None else model.item_ids[cand_idx].tolist()
    with stderr_console().status(f"ranking for {len(users):,} users"):
        ids, scores = model.recommend(users, k=k, candidates=cand_ids)  # unknown users: the popular items
    unknown = [u for u, m in zip(users, model.known_users(users)) if not m]
    rows = [
        (user, item, rank + 1, float(score))
        for user, row_ids, row_scores in zip(users, ids, scores)
        for rank, (item, score) in enumerate(zip(row_ids, row_scores))
        if item is not None
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rank", "score"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False, float_format="%.6g")
    else:
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")
    if unknown:
        noun = "user" if len(unknown) == 1 else "users"
        print(f"{len(unknown)} {noun} unknown to the model got popularity fallbacks: {_name_list(unknown)}",
              file=sys.stderr)
    if args.out:
        print(f"wrote {len(frame):,} recommendations for {n:,} users to {args.out}", file=sys.stderr)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    """The items nearest to --item in the model's item space, as a table or JSON."""
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    model = load_model(args.model_dir)
    item = str(args.item).strip()
    if item not in model.item_index:
        raise DataError(f"--item {item!r}: not in the model's catalogue ({args.model_dir})")
    ids, scores = model.similar_items([item], k=args.k)
    items = model.items.set_index("item_id")
    title = lambda i: str(items.at[i, "title"]) if "title" in items.columns else ""  # noqa: E731
    rows = [
        {"rank": r + 1, "item_id": i, "title": title(i), "score": round(float(s), 6)}
        for r, (i, s) in enumerate(zip(ids[0], scores[0]))
        if i is not None
    ]
    if args.json:
        print(json.dumps({"item": {"item_id": item, "title": title(item)}, "model": model.name, "similar": rows},
                         indent=1, ensure_ascii=False))
        return 0
    from rich.table import Table

    table = Table(title=f"Items similar to {item} {title(item)!s} ({model.name})", title_justify="left")
    columns: list[tuple[str, Literal["left", "right"]]] = [
        ("Rank", "right"), ("Item", "left"), ("Title", "left"), ("Score", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(str(row["rank"]), row["item_id"], row["title"], f"{row['score']:.4f}")
    stdout_console().print(table)
    return 0


def cmd_add_items(args: argparse.Namespace) -> int:
    """Make new items recommendable without a retrain (content-aware models), saving the folder in place."""
    from contextlib import nullcontext

    from avrec.data.io import clean_items, read_table
    from avrec.models.artifacts import save_atomically
    from avrec.models.versions import VersionHome, is_home, resolve_model_folder

    model_dir = require_model_folder(args.model_dir)
    path = Path(args.items)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    new_items = clean_items(read_table(path), path)
    # a versioned folder: the served version is replaced whole, under the lock `avrec update` takes
    with VersionHome(model_dir).lock() if is_home(model_dir) else nullcontext():
        target = resolve_model_folder(model_dir)
        model = load_model(target)
        added = model.add_items(new_items)
        save_atomically(model, target)
    print(f"added {added:,} item(s) to {args.model_dir} ({model.name}); the catalogue now has {model.n_items:,} items")
    return 0


# ---- registration ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    """Add fit, recommend, similar and add-items to the ``avrec`` parser."""
    p = sub.add_parser("fit", help="fit a model on all interactions of a dataset and save it",
                       description="Fit a model on ALL interactions of DATASET (a folder or built-in name) "
                                   "and save it.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--model", required=True, metavar="NAME", help="registered model name (ease, als, itemknn, ...)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to save the fitted model in")
    p.add_argument("--probe-users", type=int, default=0, metavar="N",
                   help="hold out the latest events of N random users as the frozen probe set that `avrec update` "
                        "checks every update against (the forgetting guard; default 0: none)")
    p.add_argument("--probe-share", type=float, default=0.2, metavar="F",
                   help="share of each probe user's latest events held out (default 0.2, at least one)")
    add_settings_options(p)
    add_data_dir(p)
    add_run_dir(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("recommend", help="top-K recommendations from a saved model",
                       description="Write user_id,item_id,rank,score (best first) for each user; seen items excluded.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--users", metavar="FILE", help="user ids, one per line")
    p.add_argument("--user", metavar="ID", help="one user id (instead of --users)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--candidates", metavar="FILE", help="rank only these item ids (one per line)")
    p.add_argument("--out", metavar="RECS.csv", help="output CSV (default: standard output)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("similar", help="items most similar to one item")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--item", required=True, metavar="ID")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("add-items", help="add new items to a fitted model without a retrain")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("items", metavar="ITEMS", help="items.csv or items.parquet in the dataset folder format")
    p.set_defaults(func=cmd_add_items)
