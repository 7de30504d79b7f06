"""``avrec ope``: the value of candidate policies (and models) estimated on logged traffic."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ope", help="off-policy evaluation: estimate candidate policies' reward on logged impressions",
        description="Estimates the reward per list of each --policy on the impressions in STORE (an event "
        "store) or LOG_DIR (`avrec logs export`), with DM, IPS, SNIPS, DR, clipped DR and slate IPS/SNIPS, "
        "95%% bootstrap intervals and effective sample sizes, against the logging policy's observed value. "
        "With --model, candidates are rescored by that model first.",
    )
    p.add_argument("source", metavar="STORE_OR_LOG_DIR")
    p.add_argument("--policy", action="append", required=True, metavar="NAME_OR_FILE",
                   help="greedy, epsilon, softmax, linucb, thompson, or a TOML/YAML/JSON file with a [policy] "
                        "table (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="policy.* settings for every --policy (e.g. policy.epsilon=0.2) or rewards.* for a STORE")
    p.add_argument("--model", default=None, metavar="MODEL_DIR", help="rescore the logged candidates with this model")
    p.add_argument("--endpoint", default="recommend", choices=["recommend", "similar", "search"])
    p.add_argument("--model-version", default=None, metavar="VERSION",
                   help="only the impressions served by this model version (e.g. v0002; `avrec versions list`)")
    p.add_argument("--clip", type=float, default=10.0, help="weight clip of dr-clipped (default 10)")
    p.add_argument("--switch", type=float, default=None,
                   help="switch-dr's weight threshold: slots weighted above it use the direct method (default: --clip)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_ope)


def policy_settings(spec: str, sets: dict[str, Any]) -> Any:
    from avrec.config import merge, read_config_file
    from avrec.policies import POLICIES, policy_config

    if spec in POLICIES:
        raw: dict[str, Any] = {"name": spec}
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--policy {spec}: not a policy name ({', '.join(POLICIES)}) nor a file")
        data = read_config_file(path)
        raw = data.get("policy", data)
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(f"{path}: expected a [policy] table with a name")
    return policy_config(merge(raw, sets))


def _rescorer(model_dir: str):
    """(rescore function, the model) for ``--model``: candidates' scores and features for each impression's user."""
    from avrec.models.base import Recommender
    from avrec.policies.features import FeatureBuilder

    model = Recommender.load(model_dir)
    builder = FeatureBuilder(model)
    index = model.item_index

    def rescore(imp) -> tuple[np.ndarray, np.ndarray]:
        idx = np.array([index.get(str(i), -1) for i in imp.candidate_ids], dtype=np.int64)
        ok = idx >= 0
        scores = np.full(len(idx), -np.inf)
        u = model.user_index.get(imp.user_id)
        history: Any = []
        if ok.any():
            if u is not None:
                scores[ok] = model.score_users(np.array([u]), idx[ok])[0]
                assert model.seen is not None
                history = model.seen[u].indices
            else:
                scores[ok] = model.popularity_scores(1, idx[ok])[0]
        safe = np.where(ok, idx, model.n_items)  # unknown items: outside the model (no popularity, no similarity)
        return scores, builder.build(safe, scores, history)

    return rescore, model


def _load(args: argparse.Namespace):
    from avrec.config import parse_set_options
    from avrec.policies.logfiles import read_tables, to_impressions
    from avrec.serve.store import is_postgres_url

    src = Path(args.source)
    sets = parse_set_options(args.set)
    if is_postgres_url(args.source):
        from avrec.cli.logs import store_tables

        slots, cands, _meta = store_tables(args.source, [s for s in args.set if s.startswith("rewards.")])
    elif src.is_dir():
        slots, cands, _meta = read_tables(src)
    elif src.is_file():
        from avrec.cli.logs import store_tables

        slots, cands, _meta = store_tables(src, [s for s in args.set if s.startswith("rewards.")])
    else:
        raise DataError(f"{src}: neither an event store nor a log folder")
    if args.model_version is not None:
        versions = sorted(str(v) for v in slots["model_version"].unique())
        slots = slots[slots["model_version"] == args.model_version]
        if slots.empty:
            raise DataError(f"--model-version {args.model_version}: no impressions of it in {src} "
                            f"(logged: {', '.join(versions) or 'none'})")
    logs, slot_rows = to_impressions(slots, cands, args.endpoint)
    return logs, slot_rows, sets


def cmd_ope(args: argparse.Namespace) -> int:
    from avrec.models.versions import resolve_model_folder
    from avrec.policies import load_policy, make_policy
    from avrec.policies.ope import contributions, summary

    if args.bootstrap < 10:
        raise ConfigError(f"--bootstrap must be at least 10, not {args.bootstrap}")
    if args.clip <= 0:
        raise ConfigError(f"--clip must be positive, not {args.clip}")
    if args.switch is not None and args.switch < 0:
        raise ConfigError(f"--switch must be 0 or more, not {args.switch}")
    logs, slot_rows, sets = _load(args)
    rescore, model = _rescorer(args.model) if args.model else (None, None)
    results: dict[str, Any] = {"source": str(args.source), "impressions": len(logs), "model": args.model,
                               "model_version": args.model_version,
                               "logging_policies": slot_rows.groupby("policy")["slate_id"].nunique().to_dict(),
                               "policies": {}}
    for spec in args.policy:
        config = policy_settings(spec, sets.get("policy", {}))
        policy = make_policy(config)
        saved = resolve_model_folder(args.model) / "policy" if args.model else None
        if policy.learns and saved is not None and (saved / "policy.json").exists():
            try:
                policy, _ = load_policy(saved, config)
            except DataError as e:
                print(f"warning: {e}; evaluating {config.name} with its prior", file=sys.stderr)
        c = contributions(logs, policy, seed=args.seed, rescore=rescore)
        out = summary(c, clip=args.clip, n_boot=args.bootstrap, seed=args.seed, switch=args.switch)
        results["policies"][spec] = out
        warn = []
        if out["unsupported_mass"] > 0.05:
            warn.append(f"{out['unsupported_mass']:.0%} of its choices are items the log never showed")
        if out["ess_slate"] < 0.1 * len(logs):
            warn.append(f"slate ESS {out['ess_slate']:.1f} of {len(logs)} impressions: slate estimates are noisy")
        out["warnings"] = warn
    _print(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    from avrec.serve.store import EventStore, is_postgres_url

    if Path(args.source).is_file() or is_postgres_url(args.source):  # the dashboard shows the latest estimates
        import time

        from avrec.serve.policy_stats import OPE_META_KEY

        with EventStore(args.source) as store:
            store.set_meta(OPE_META_KEY, json.dumps({**results, "ts": time.time()}))
    return 0


def _print(results: dict[str, Any]) -> None:
    from rich.table import Table

    from avrec.cli.common import stdout_console
    from avrec.policies.ope import ESTIMATORS

    console = stdout_console()
    first = next(iter(results["policies"].values()))
    console.print(f"{results['impressions']} impressions; logging policies {results['logging_policies']}; "
                  f"observed reward per list {first['logged_value']:.4f}")
    table = Table("policy", *ESTIMATORS, "ESS slate", "ESS slot 1", title="estimated reward per list (95% CI)")
    for name, out in results["policies"].items():
        cells = [f"{out['estimates'][e]['value']:.4f}\n[{out['estimates'][e]['ci_low']:.3f}, "
                 f"{out['estimates'][e]['ci_high']:.3f}]" for e in ESTIMATORS]
        table.add_row(name, *cells, f"{out['ess_slate']:.1f}", f"{out['ess_first_slot']:.1f}")
    console.print(table)
    for name, out in results["policies"].items():
        for w in out["warnings"]:
            console.print(f"warning: {name}: {w}")
