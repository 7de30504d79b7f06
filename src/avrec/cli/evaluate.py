"""``avrec evaluate`` and ``avrec demo``: split, fit on train, score the held-out part, print a metrics table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from avrec.cli.common import add_data_dir, add_run_dir, finish_run, stderr_console, stdout_console
from avrec.cli.settings import (
    METRIC_SETS,
    DemoConfig,
    Settings,
    add_settings_options,
    load_settings,
    parse_model_names,
    resolve_settings,
)
from avrec.errors import ConfigError

#: The demo's models; names that are not registered (e.g. ``hybrid`` before it lands) are skipped.
DEFAULT_DEMO_MODELS = ("pop", "itemknn", "als", "bpr", "ease", "hybrid")
#: Metric columns of the results table: (metric key prefix, header).
TABLE_COLUMNS = (
    ("ndcg", "NDCG"), ("recall", "Recall"), ("mrr", "MRR"), ("hit", "Hit"), ("precision", "Precision"),
    ("map", "MAP"), ("coverage", "Coverage"), ("novelty", "Novelty"), ("diversity", "Diversity"),
)
#: Columns of the beyond-accuracy table (``--metrics all``); provider-group Gini columns follow.
BEYOND_COLUMNS = (
    ("coverage", "Coverage"), ("gini", "Gini"), ("tail", "LongTail"), ("arp", "ARP"), ("poplift", "PopLift"),
    ("miscal", "MisCal(KL)"),
)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def metrics_table(results: dict[str, dict[str, float]], k: int, title: str):
    """A Rich table: one row per model, the standard metrics at K, and fit seconds."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("Model", style="bold")
    for key, header in TABLE_COLUMNS:
        label = f"{header}@{k}" if key in ("ndcg", "recall", "mrr", "hit", "precision", "map") else header
        table.add_column(label, justify="right")
    table.add_column("Fit s", justify="right")
    for name, m in results.items():
        cells = [_fmt(m.get(f"{key}@{k}", float("nan"))) for key, _ in TABLE_COLUMNS]
        table.add_row(name, *cells, f"{m['fit_seconds']:.1f}")
    return table


def beyond_table(results: dict[str, dict[str, float]], k: int, title: str):
    """A Rich table of the beyond-accuracy metrics at K (``--metrics all``), one row per model."""
    from rich.table import Table

    groups = sorted({key[len("exposure_gini["):key.index("]")] for m in results.values() for key in m
                     if key.startswith("exposure_gini[") and key.endswith(f"@{k}")})
    table = Table(title=title, title_justify="left")
    table.add_column("Model", style="bold")
    for _, header in BEYOND_COLUMNS:
        table.add_column(f"{header}@{k}", justify="right")
    for g in groups:
        table.add_column(f"Gini({g})@{k}", justify="right")
    for name, m in results.items():
        cells = [_fmt(m.get(f"{key}@{k}", float("nan"))) for key, _ in BEYOND_COLUMNS]
        cells += [_fmt(m.get(f"exposure_gini[{g}]@{k}", float("nan"))) for g in groups]
        table.add_row(name, *cells)
    return table


def _models_for_split(command: str, split, settings: Settings, names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Create each model, checking before any fit that the split has something to score.

    On the cold-item protocol a model that cannot score items without interactions is left out with a
    warning line (its metrics would only show tie order); when that leaves nothing, a ConfigError.
    Returns the models to fit and the names left out.
    """
    from avrec.eval.evaluate import check_evaluable
    from avrec.models.registry import create_model

    part = settings.eval.part
    check_evaluable(split, part)
    models = {name: create_model(name, settings.models[name]) for name in names}
    if split.candidates(part) is None:
        return models, []
    left_out = [name for name, model in models.items() if not model.capabilities.cold_items]
    if left_out and len(left_out) == len(models):
        raise ConfigError(
            f"{command}: {', '.join(left_out)} cannot score items without interactions, which the {split.method} "
            "split ranks, so there is nothing to evaluate; "
            "choose a content-aware model (tfidf, content, kgpath, hybrid)"
        )
    for name in left_out:
        print(f"warning: {name} cannot score items without interactions; left out of the {split.method} evaluation",
              file=sys.stderr)
        del models[name]
    return models, left_out


def _fit_and_evaluate(dataset_name: str, split, settings: Settings, models: dict[str, Any], console,
                      on_fitted=None, groups: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Fit each model on ``split.train`` (validation passed for tuning) and score it on the test part.

    ``on_fitted(name, model)`` is called after each evaluation (the demo saves its serving model there).
    With ``eval.metrics = all`` each model's per-provider-group exposure goes into ``groups[name]``.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from avrec.eval.evaluate import evaluate_model

    results: dict[str, dict[str, float]] = {}
    k = settings.eval.k
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("models", total=len(models))
        for name, model in models.items():
            progress.update(task, description=f"fitting {name} on {dataset_name}")
            start = time.perf_counter()
            model.fit(split.train, valid=split.valid, valid_candidates=split.valid_candidates)
            fit_s = time.perf_counter() - start
            progress.update(task, description=f"evaluating {name}")
            start = time.perf_counter()
            beyond = settings.eval.beyond if settings.eval.metrics == "all" else None
            details: dict[str, Any] = {}
            metrics = evaluate_model(model, split, k=k, part=settings.eval.part, batch_size=settings.eval.batch_size,
                                     beyond=beyond, details=details)
            if groups is not None and details:
                groups[name] = details
            metrics["fit_seconds"] = round(fit_s, 3)
            metrics["eval_seconds"] = round(time.perf_counter() - start, 3)
            results[name] = metrics
            if on_fitted is not None:
                on_fitted(name, model)
            progress.advance(task)
            console.print(f"{name}: fit {fit_s:.1f} s, NDCG@{k} {metrics[f'ndcg@{k}']:.4f}", highlight=False)
    return results


def _split_summary(split) -> dict[str, Any]:
    return {
        "method": split.method,
        "seed": split.seed,
        "protocol": split.protocol,
        "train": split.train.n_interactions,
        "valid": split.valid.n_interactions,
        "test": split.test.n_interactions,
    }


def _write_eval_json(out: str | Path, payload: dict[str, Any]) -> Path:
    from avrec.run import write_json

    out = Path(out)
    target = out if out.suffix == ".json" else out / "metrics.json"
    return write_json(target, payload)


def _benchmark(command: str, args, settings: Settings, names: list[str], dataset_name: str,
               on_fitted=None) -> tuple[dict, Any]:
    """Shared by evaluate and demo: load, split, fit and score each model, record the run."""
    from avrec.data.builtin import load_dataset
    from avrec.data.splits import make_split
    from avrec.run import start_run

    err = stderr_console()
    run = start_run(command, settings.seed, args.run_dir)
    ok = False
    try:
        run.record_config(settings.to_dict(command=command, dataset=dataset_name, model_names=names))
        with err.status(f"loading {dataset_name}"):
            dataset = load_dataset(dataset_name, settings.data, getattr(args, "data_dir", None))
        run.record_checksums(dataset.checksums)
        with err.status(f"splitting ({settings.split.method}, seed {settings.split.seed})"):
            split = make_split(dataset, settings.split)
        models, left_out = _models_for_split(command, split, settings, names)
        groups: dict[str, Any] = {}
        results = _fit_and_evaluate(dataset.name, split, settings, models, err, on_fitted, groups)
        payload = {
            "dataset": dataset.name,
            "users": dataset.n_users,
            "items": dataset.n_items,
            "interactions": dataset.n_interactions,
            "split": _split_summary(split),
            "k": settings.eval.k,
            "part": settings.eval.part,
            "models": results,
        }
        if groups:
            payload["exposure_by_group"] = groups
        if left_out:
            payload["left_out"] = {name: "cannot score items without interactions" for name in left_out}
        run.record_metrics(payload)
        ok = True
    finally:
        finish_run(run, ok)
    return payload, run


def _title(payload: dict[str, Any]) -> str:
    s = payload["split"]
    return (
        f"{payload['dataset']}: {payload['users']:,} users, {payload['items']:,} items, "
        f"{payload['interactions']:,} interactions; {s['method']} split (seed {s['seed']}, {s['protocol']}), "
        f"{payload['part']} part"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Split DATASET, fit each --model on train, score the test part; print the table, write metrics.json."""
    names = parse_model_names(args.model)
    settings = resolve_settings(load_settings(args.config, args.set), names, split_method=args.split, k=args.k,
                                metrics=args.metrics)
    payload, run = _benchmark("evaluate", args, settings, names, args.dataset)
    stdout_console().print(metrics_table(payload["models"], settings.eval.k, _title(payload)))
    if settings.eval.metrics == "all":
        b = settings.eval.beyond
        stdout_console().print(beyond_table(
            payload["models"], settings.eval.k,
            f"beyond accuracy (pooled over all lists; long tail: bottom {b.tail_share:.0%} of items by training "
            f"users; calibration on {b.calibration_field})"))
    written = [str(run.path / "metrics.json")]
    if args.out:
        written.insert(0, str(_write_eval_json(args.out, payload)))
    print(f"wrote {', '.join(written)}", file=sys.stderr)
    return 0


def demo_models(demo: DemoConfig) -> list[str]:
    """The demo's model list: explicit ``demo.models`` (each must exist), else the registered defaults."""
    from avrec.models.registry import available_models

    if demo.models:
        return parse_model_names(",".join(demo.models))
    registered = set(available_models())
    return [m for m in DEFAULT_DEMO_MODELS if m in registered]


def cmd_demo(args: argparse.Namespace) -> int:
    """Fit the demo models on ml-latest-small and print their metrics (optionally saving one for serving)."""
    raw = load_settings(args.config, args.set)
    first = resolve_settings(raw, [], k=args.k)
    names = demo_models(first.demo)
    settings = resolve_settings(raw, names, k=args.k)  # split default: random 8:1:1, seed 2026
    keep = args.model_out and (names[-1] if args.serve_model is None else args.serve_model)
    if keep and keep not in names:
        raise ConfigError(f"--serve-model {keep!r} is not among the demo's models ({', '.join(names)})")

    def save_serving_model(name: str, model) -> None:
        if name == keep:
            model.save(args.model_out)

    payload, run = _benchmark("demo", args, settings, names, settings.demo.dataset, save_serving_model)
    stdout_console().print(metrics_table(payload["models"], settings.eval.k, _title(payload)))
    print(f"run record: {run.path}", file=sys.stderr)
    if keep and keep in payload["models"]:
        print(f"saved the {keep} model (fitted on the training part) to {args.model_out}", file=sys.stderr)
    elif keep:
        print(f"warning: the {keep} model was left out of the evaluation; nothing saved to {args.model_out}",
              file=sys.stderr)
    return 0


# ---- registration ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    """Add evaluate and demo to the ``avrec`` parser."""
    from avrec.data.splits import SPLIT_METHODS

    p = sub.add_parser("evaluate", help="split, fit on train, score on test; print a table and write JSON")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--model", required=True, metavar="NAME[,NAME…]", help="one or more models, comma-separated")
    p.add_argument("--split", choices=SPLIT_METHODS, help="split method (default: random 8:1:1, or split.method)")
    p.add_argument("--k", type=int, help="list length (default 10, or eval.k)")
    p.add_argument("--out", metavar="DIR", help="also write DIR/metrics.json (or this .json file)")
    p.add_argument("--metrics", choices=METRIC_SETS,
                   help="accuracy (default) or all: adds coverage, Gini, long-tail share, ARP, popularity lift, "
                        "miscalibration and provider-group exposure (settings: eval.beyond.*)")
    add_settings_options(p)
    add_data_dir(p)
    add_run_dir(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="fit the baselines on the embedded ml-latest-small and print a metrics table")
    p.add_argument("--k", type=int, help="list length (default 10)")
    p.add_argument("--model-out", metavar="MODEL_DIR", help="save one of the fitted models here (for `avrec serve`)")
    p.add_argument("--serve-model", metavar="NAME", help="which model --model-out saves (default: the last one)")
    add_settings_options(p)
    add_data_dir(p)
    add_run_dir(p)
    p.set_defaults(func=cmd_demo)
