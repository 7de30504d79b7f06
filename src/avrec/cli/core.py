"""The core commands: ``fit``, ``recommend``, ``similar``, ``evaluate``, ``demo`` and ``data info|validate|convert``.

Settings come from three layers, later ones winning: the dataclass defaults, ``--config FILE``
(TOML or YAML) and ``--set key=value``. Sections: ``seed``, ``data`` (:class:`DataConfig`),
``split`` (:class:`SplitConfig`), ``eval`` (:class:`EvalConfig`), ``demo`` (:class:`DemoConfig`),
``model`` (fields of the chosen model's Config, applied to every model that has the field) and
``models.<name>`` (one model only). ``--set l2=200`` is short for ``--set model.l2=200``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import ConfigError, DataError, DataWarning

DEFAULT_SEED = 2026
#: The demo's models; names that are not registered (e.g. ``hybrid`` before it lands) are skipped.
DEFAULT_DEMO_MODELS = ("pop", "itemknn", "als", "bpr", "ease", "hybrid")
#: Top-level configuration keys; any other ``--set`` key is taken as a model setting.
SECTIONS = ("seed", "data", "split", "eval", "demo", "model", "models")
#: Metric columns of the results table: (metric key prefix, header).
TABLE_COLUMNS = (
    ("ndcg", "NDCG"), ("recall", "Recall"), ("mrr", "MRR"), ("hit", "Hit"), ("precision", "Precision"),
    ("map", "MAP"), ("coverage", "Coverage"), ("novelty", "Novelty"), ("diversity", "Diversity"),
)


@dataclass
class EvalConfig:
    """``k``: list length for every metric; ``part``: which held-out part to score (test or valid)."""

    k: int = 10
    part: str = "test"
    batch_size: int = 512


@dataclass
class DemoConfig:
    """``models``: what ``avrec demo`` fits (None: :data:`DEFAULT_DEMO_MODELS` that are registered)."""

    models: list[str] | None = None
    dataset: str = "ml-latest-small"


@dataclass
class Settings:
    """Everything a command needs, resolved and type-checked."""

    seed: int
    data: Any
    split: Any
    eval: EvalConfig
    demo: DemoConfig
    models: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        out = dict(extra)
        out.update(
            seed=self.seed,
            data=dataclasses.asdict(self.data),
            split=dataclasses.asdict(self.split),
            eval=dataclasses.asdict(self.eval),
            models={n: dataclasses.asdict(c) if dataclasses.is_dataclass(c) else {} for n, c in self.models.items()},
        )
        return out


# ---- configuration --------------------------------------------------------------------------------
def load_settings(config_file: str | None, set_options: list[str] | None) -> dict[str, Any]:
    """Merge the config file and ``--set`` options into one raw nested dict."""
    from avrec.config import merge, parse_set_options, read_config_file

    raw = read_config_file(config_file) if config_file else {}
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{config_file}: unknown section {unknown[0]!r}; valid: {', '.join(SECTIONS)}")
    sets = parse_set_options(set_options)
    shortcut = {k: sets.pop(k) for k in list(sets) if k not in SECTIONS}
    if shortcut:
        sets = merge(sets, {"model": shortcut})
    return merge(raw, sets)


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table of settings, not {value!r}")
    return value


def parse_model_names(text: str) -> list[str]:
    """``"ease,als"`` -> ``["ease", "als"]``, each checked against the registry."""
    from avrec.models.registry import get_model_class

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--model: give at least one model name")
    for n in names:
        get_model_class(n)
    return list(dict.fromkeys(names))


def resolve_settings(
    raw: dict[str, Any], model_names: list[str], *, split_method: str | None = None, k: int | None = None
) -> Settings:
    """Type-check every section and build one Config per model.

    ``model.*`` keys apply to each listed model that has the field (an error if none has it);
    ``models.<name>.*`` apply to that model only. A model whose Config has a ``seed`` field gets the
    run's seed unless it was set explicitly.
    """
    from avrec.config import apply_overrides
    from avrec.data.io import DataConfig
    from avrec.data.splits import SplitConfig
    from avrec.models.registry import get_model_class

    try:
        seed = int(raw.get("seed", DEFAULT_SEED))
    except (TypeError, ValueError):
        raise ConfigError(f"seed: {raw.get('seed')!r} is not an integer") from None
    data = apply_overrides(DataConfig(), _section(raw, "data"), "data.")
    split_raw = dict(_section(raw, "split"))
    if split_method:
        split_raw["method"] = split_method
    split = apply_overrides(SplitConfig(seed=seed), split_raw, "split.")
    eval_raw = dict(_section(raw, "eval"))
    if k is not None:
        eval_raw["k"] = k
    eval_cfg = apply_overrides(EvalConfig(), eval_raw, "eval.")
    if eval_cfg.k < 1:
        raise ConfigError(f"eval.k must be at least 1, not {eval_cfg.k}")
    demo = apply_overrides(DemoConfig(), _section(raw, "demo"), "demo.")

    shared = _section(raw, "model")
    per_model = _section(raw, "models")
    used: set[str] = set()
    configs: dict[str, Any] = {}
    for name in model_names:
        cls = get_model_class(name)
        config = cls.Config()
        names = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
        mine = {key: v for key, v in shared.items() if key in names}
        used |= mine.keys()
        specific = per_model.get(name, {})
        if not isinstance(specific, dict):
            raise ConfigError(f"models.{name}: expected a table of settings")
        if "seed" in names and "seed" not in mine and "seed" not in specific:
            mine["seed"] = seed
        config = apply_overrides(config, mine, "model.")
        config = apply_overrides(config, specific, f"models.{name}.")
        configs[name] = config
    unknown = sorted(set(shared) - used)
    if unknown:
        valid = sorted(
            {f.name for n in model_names for f in dataclasses.fields(configs[n]) if dataclasses.is_dataclass(configs[n])}
        )
        raise ConfigError(
            f"unknown setting model.{unknown[0]} for {', '.join(model_names)}; valid: {', '.join(valid) or 'none'}"
        )
    return Settings(seed=seed, data=data, split=split, eval=eval_cfg, demo=demo, models=configs)


# ---- small helpers ------------------------------------------------------------------------------
def _stdout_console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def read_id_file(path: str | Path, what: str = "id") -> list[str]:
    """Ids from a file with one per line (blank lines skipped; a first line ``user_id``/``item_id``/``id``
    is taken as a header). Order is kept, duplicates dropped."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8; save the file as UTF-8") from None
    lines = [line.strip() for line in text.splitlines()]
    if lines and lines[0] in ("user_id", "item_id", "id"):
        lines = lines[1:]
    ids = list(dict.fromkeys(line for line in lines if line))
    if not ids:
        raise DataError(f"{path}: no {what}s (expected one {what} per line)")
    return ids


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
        table.add_row(name, *[_fmt(m.get(f"{key}@{k}", float("nan"))) for key, _ in TABLE_COLUMNS], f"{m['fit_seconds']:.1f}")
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
    left_out = [name for name, model in models.items() if not model.scores_cold_items]
    if left_out and len(left_out) == len(models):
        raise ConfigError(
            f"{command}: {', '.join(left_out)} cannot score items without interactions, which the {split.method} "
            "split ranks, so there is nothing to evaluate; choose a content-aware model (tfidf, content, kgpath, hybrid)"
        )
    for name in left_out:
        print(f"warning: {name} cannot score items without interactions; left out of the {split.method} evaluation",
              file=sys.stderr)
        del models[name]
    return models, left_out


def _fit_and_evaluate(dataset_name: str, split, settings: Settings, models: dict[str, Any], console,
                      on_fitted=None) -> dict[str, dict[str, float]]:
    """Fit each model on ``split.train`` (validation passed for tuning) and score it on the test part.

    ``on_fitted(name, model)`` is called after each evaluation (the demo saves its serving model there).
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
            metrics = evaluate_model(model, split, k=k, part=settings.eval.part, batch_size=settings.eval.batch_size)
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


def _load(args, settings: Settings, console):
    from avrec.data.builtin import load_dataset

    with console.status(f"loading {args.dataset}"):
        return load_dataset(args.dataset, settings.data, getattr(args, "data_dir", None))


def _finish_run(run, ok: bool) -> None:
    if run is not None:
        run.finish("ok" if ok else "error")


# ---- fit ------------------------------------------------------------------------------------------
def cmd_fit(args: argparse.Namespace) -> int:
    from avrec.models.registry import create_model
    from avrec.run import start_run

    settings = resolve_settings(load_settings(args.config, args.set), [args.model])
    err = _stderr_console()
    run = start_run("fit", settings.seed, args.run_dir)
    ok = False
    try:
        run.record_config(settings.to_dict(command="fit", dataset=args.dataset, model=args.model, out=str(args.out)))
        dataset = _load(args, settings, err)
        run.record_checksums(dataset.checksums)
        model = create_model(args.model, settings.models[args.model])
        start = time.perf_counter()
        with err.status(f"fitting {args.model} on {dataset.name} ({dataset.n_interactions:,} interactions)"):
            model.fit(dataset)
        fit_s = time.perf_counter() - start
        model.save(args.out)
        run.record_metrics(
            {"fit_seconds": round(fit_s, 3), "users": dataset.n_users, "items": dataset.n_items,
             "interactions": dataset.n_interactions, "model_dir": str(args.out)}
        )
        ok = True
    finally:
        _finish_run(run, ok)
    print(
        f"fitted {args.model} on {dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
        f"{dataset.n_interactions:,} interactions in {fit_s:.1f} s; saved to {args.out} (run record: {run.path})"
    )
    return 0


# ---- recommend ------------------------------------------------------------------------------------
def _load_model(folder: str | Path):
    from avrec.models.base import Recommender

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such model folder; create one with `avrec fit`")
    return Recommender.load(folder)


def popularity_ranking(model, n_users: int, k: int, candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The fallback list for users a model has never seen: most training users first (ties by catalogue order)."""
    pool = np.arange(model.n_items) if candidates is None else np.asarray(candidates, dtype=np.int64)
    pop = np.asarray(model.popularity, dtype=np.float64)[pool]
    order = pool[np.argsort(-pop, kind="stable")][:k]
    scores = np.asarray(model.popularity, dtype=np.float32)[order]
    ids = np.empty((n_users, k), dtype=object)
    ids[:] = None
    vals = np.full((n_users, k), -np.inf, dtype=np.float32)
    ids[:, : len(order)] = model.item_ids[order]
    vals[:, : len(order)] = scores
    return ids, vals


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
    import pandas as pd

    if (args.users is None) == (args.user is None):
        raise ConfigError("recommend: give either --users FILE or --user ID")
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    model = _load_model(args.model_dir)
    users = read_id_file(args.users, "user id") if args.users else [str(args.user).strip()]
    cand_idx = _candidate_indices(model, Path(args.candidates)) if args.candidates else None
    known = model.known_users(users)
    n, k = len(users), args.k
    ids = np.empty((n, k), dtype=object)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    err = _stderr_console()
    if known.any():
        cand_ids = None if cand_idx is None else model.item_ids[cand_idx].tolist()
        with err.status(f"ranking for {int(known.sum()):,} users"):
            ids[known], scores[known] = model.recommend([u for u, m in zip(users, known) if m], k=k, candidates=cand_ids)
    unknown = [u for u, m in zip(users, known) if not m]
    if unknown:
        ids[~known], scores[~known] = popularity_ranking(model, len(unknown), k, cand_idx)
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
        print(f"{len(unknown)} {noun} unknown to the model got popularity fallbacks: {_name_list(unknown)}", file=sys.stderr)
    if args.out:
        print(f"wrote {len(frame):,} recommendations for {n:,} users to {args.out}", file=sys.stderr)
    return 0


# ---- similar --------------------------------------------------------------------------------------
def cmd_similar(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    model = _load_model(args.model_dir)
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
    for col, justify in (("Rank", "right"), ("Item", "left"), ("Title", "left"), ("Score", "right")):
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(str(row["rank"]), row["item_id"], row["title"], f"{row['score']:.4f}")
    _stdout_console().print(table)
    return 0


# ---- add-items ------------------------------------------------------------------------------------
def cmd_add_items(args: argparse.Namespace) -> int:
    """Make new items recommendable without a retrain (content-aware models), saving the folder in place."""
    from avrec.data.io import clean_items, read_table
    from avrec.serve.service import save_model_atomically

    model = _load_model(args.model_dir)
    path = Path(args.items)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    new_items = clean_items(read_table(path), path)
    added = model.add_items(new_items)
    save_model_atomically(model, Path(args.model_dir))
    print(f"added {added:,} item(s) to {args.model_dir} ({model.name}); the catalogue now has {model.n_items:,} items")
    return 0


# ---- evaluate and demo ----------------------------------------------------------------------------
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

    err = _stderr_console()
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
        results = _fit_and_evaluate(dataset.name, split, settings, models, err, on_fitted)
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
        if left_out:
            payload["left_out"] = {name: "cannot score items without interactions" for name in left_out}
        run.record_metrics(payload)
        ok = True
    finally:
        _finish_run(run, ok)
    return payload, run


def _title(payload: dict[str, Any]) -> str:
    s = payload["split"]
    return (
        f"{payload['dataset']}: {payload['users']:,} users, {payload['items']:,} items, "
        f"{payload['interactions']:,} interactions; {s['method']} split (seed {s['seed']}, {s['protocol']}), "
        f"{payload['part']} part"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    names = parse_model_names(args.model)
    settings = resolve_settings(load_settings(args.config, args.set), names, split_method=args.split, k=args.k)
    payload, run = _benchmark("evaluate", args, settings, names, args.dataset)
    _stdout_console().print(metrics_table(payload["models"], settings.eval.k, _title(payload)))
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
    _stdout_console().print(metrics_table(payload["models"], settings.eval.k, _title(payload)))
    print(f"run record: {run.path}", file=sys.stderr)
    if keep and keep in payload["models"]:
        print(f"saved the {keep} model (fitted on the training part) to {args.model_out}", file=sys.stderr)
    elif keep:
        print(f"warning: the {keep} model was left out of the evaluation; nothing saved to {args.model_out}",
              file=sys.stderr)
    return 0


# ---- data info / validate / convert --------------------------------------------------------------
def dataset_info(dataset) -> dict[str, Any]:
    """Counts, sparsity, per-user/per-item interaction statistics, text coverage and media types."""
    m = dataset.matrix(binary=True)
    per_user = np.diff(m.indptr)
    per_item = np.asarray(m.sum(axis=0)).ravel()

    def stats(x: np.ndarray) -> dict[str, float]:
        if len(x) == 0:
            return {"min": 0, "median": 0, "mean": 0, "max": 0}
        return {"min": int(x.min()), "median": float(np.median(x)), "mean": round(float(x.mean()), 2), "max": int(x.max())}

    items = dataset.items
    coverage = {
        col: round(float((items[col].astype(str).str.strip() != "").mean()), 4)
        for col in items.columns
        if col != "item_id"
    }
    media = items["media_type"].astype(str).replace("", "(none)").value_counts().to_dict() if "media_type" in items else {}
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
    from rich.table import Table

    settings = resolve_settings(load_settings(args.config, args.set), [])
    dataset = _load(args, settings, _stderr_console())
    info = dataset_info(dataset)
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return 0
    console = _stdout_console()
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
    from avrec.data.sources import BUILTIN, builtin_frames
    from avrec.data.io import _find, clean_items, load_folder, read_table

    out = Path(args.out)
    err = _stderr_console()
    source = str(args.source)
    with err.status(f"reading {source}"):
        if source in BUILTIN:
            items, interactions = builtin_frames(source, args.data_dir)
            items = clean_items(items, Path(f"{source}/items"))
        elif Path(source).is_dir():
            folder = Path(source)
            items_path, inter_path = _find(folder, "items"), _find(folder, "interactions")
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


# ---- registration ---------------------------------------------------------------------------------
def _add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML or YAML settings file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one setting, e.g. model.l2=200, data.rating_threshold=4, split.seed=1 (repeatable)")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="folder with local dataset copies (default: $AVREC_DATA)")


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", metavar="DIR", help="write the run record here (default: runs/<timestamp>-<command>)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add fit, recommend, similar, evaluate, demo and data to the ``avrec`` parser."""
    from avrec.data.splits import SPLIT_METHODS

    p = sub.add_parser("fit", help="fit a model on all interactions of a dataset and save it",
                       description="Fit a model on ALL interactions of DATASET (a folder or built-in name) and save it.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--model", required=True, metavar="NAME", help="registered model name (ease, als, itemknn, ...)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to save the fitted model in")
    _add_settings(p)
    _add_data_dir(p)
    _add_run_dir(p)
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

    p = sub.add_parser("evaluate", help="split, fit on train, score on test; print a table and write JSON")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--model", required=True, metavar="NAME[,NAME…]", help="one or more models, comma-separated")
    p.add_argument("--split", choices=SPLIT_METHODS, help="split method (default: random 8:1:1, or split.method)")
    p.add_argument("--k", type=int, help="list length (default 10, or eval.k)")
    p.add_argument("--out", metavar="DIR", help="also write DIR/metrics.json (or this .json file)")
    _add_settings(p)
    _add_data_dir(p)
    _add_run_dir(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="fit the baselines on the embedded ml-latest-small and print a metrics table")
    p.add_argument("--k", type=int, help="list length (default 10)")
    p.add_argument("--model-out", metavar="MODEL_DIR", help="save one of the fitted models here (for `avrec serve`)")
    p.add_argument("--serve-model", metavar="NAME", help="which model --model-out saves (default: the last one)")
    _add_settings(p)
    _add_data_dir(p)
    _add_run_dir(p)
    p.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="inspect, validate and convert datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = data_sub.add_parser("info", help="counts, sparsity, interactions per user/item, text coverage")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--json", action="store_true")
    _add_settings(p)
    _add_data_dir(p)
    p.set_defaults(func=cmd_data_info)

    p = data_sub.add_parser("validate", help="load a dataset and report every warning and error")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--strict", action="store_true", help="exit 2 on warnings too")
    _add_settings(p)
    _add_data_dir(p)
    p.set_defaults(func=cmd_data_validate)

    p = data_sub.add_parser("convert", help="write a built-in dataset (or a folder) in the avrec folder format")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--out", required=True, metavar="FOLDER")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    _add_data_dir(p)
    p.set_defaults(func=cmd_data_convert)
