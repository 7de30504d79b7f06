"""``avrec update`` (fold the store into a new model version, behind the forgetting guard) and
``avrec versions list|promote|rollback``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from avrec.cli.settings import add_settings_options, load_settings, section
from avrec.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser(
        "update",
        help="fold the store's feedback and items into a new version of a model folder (safe on a schedule)",
        description="Loads the current version of MODEL_DIR, folds in the event store's items, users and positive "
        "events (play, like, rating >= threshold), refits the cheap parts (fold-in; ALS warm-started from its "
        "factors) every run and the whole model when --refit says so, brings a learning exploration policy up to "
        "date from the impression log (saved with the version), scores the result on the frozen probe set "
        "(`avrec fit --probe-users`) and writes it as a new version. It is promoted (CURRENT switched "
        "atomically; a watching server reloads it) unless probe NDCG@10 fell by more than --tolerance. A run "
        "with nothing new writes nothing; a run overlapping another is refused.",
    )
    u.add_argument("model_dir", metavar="MODEL_DIR")
    u.add_argument("--store", default=None, help="the event store: a SQLite file or a postgresql:// URL "
                   "(default: MODEL_DIR-events.sqlite3 beside it)")
    u.add_argument("--tolerance", type=float, default=None,
                   help="largest relative drop of probe NDCG@10 an update may cause and still be promoted "
                        "(default 0.05)")
    u.add_argument("--refit", default=None, choices=["auto", "always", "never"],
                   help="full refit of the model: auto (when the data grew by --refit-growth since the last full "
                        "fit, or items/users the cheap path cannot take arrived), always or never (default auto)")
    u.add_argument("--refit-growth", type=float, default=None, help="auto refit threshold (default 0.25)")
    u.add_argument("--als-iterations", type=int, default=None, help="ALS warm-start sweeps per update (default 3)")
    u.add_argument("--keep", type=int, default=None, help="version folders kept on disk (default 5; records stay)")
    u.add_argument("--force", action="store_true", help="promote even when the forgetting guard refuses")
    u.add_argument("--rating-threshold", type=float, default=None, help="'rate' events at or above count as positive")
    u.add_argument("--policy", default=None, help="the served exploration policy whose state is saved (default: "
                                                   "the [serve] table's policy)")
    u.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    add_settings_options(u, example="serve.policy=thompson, exploration.noise=0.5",
                         config_help="the server's TOML/YAML file: its [serve] table gives the policy and rewards")
    u.set_defaults(func=cmd_update)

    v = sub.add_parser("versions", help="list, promote or roll back the versions of a model folder",
                       description="The versions `avrec update` wrote into MODEL_DIR, with their probe NDCG@10 and "
                       "the promotion history. promote/rollback switch the served version atomically.")
    vs = v.add_subparsers(dest="versions_command", metavar="ACTION")
    ls = vs.add_parser("list", help="every version and the history")
    ls.add_argument("model_dir", metavar="MODEL_DIR")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)
    pr = vs.add_parser("promote", help="serve VERSION (a refused one too: the operator's call)")
    pr.add_argument("model_dir", metavar="MODEL_DIR")
    pr.add_argument("version", metavar="VERSION")
    pr.add_argument("--reason", default="promoted by hand")
    pr.set_defaults(func=cmd_promote)
    rb = vs.add_parser("rollback", help="serve the version before the current one (or --to VERSION)")
    rb.add_argument("model_dir", metavar="MODEL_DIR")
    rb.add_argument("--to", default=None, metavar="VERSION")
    rb.add_argument("--reason", default="rolled back by hand")
    rb.set_defaults(func=cmd_rollback)
    v.set_defaults(func=lambda args: (v.print_help(), 2)[1])


def cmd_update(args: argparse.Namespace) -> int:
    from avrec.cli.serve import LAYOUT, default_store
    from avrec.serve.config import ServeConfig
    from avrec.serve.continual import UpdateConfig, run_update
    from avrec.serve.store import EventStore, is_postgres_url

    model_dir = Path(args.model_dir)
    store_path: str | Path = args.store if args.store and is_postgres_url(args.store) else (
        Path(args.store) if args.store else default_store(model_dir))
    if isinstance(store_path, Path) and not store_path.exists():
        raise DataError(f"{store_path}: no event store there (give --store PATH or a postgresql:// URL)")
    flags = {"rating_threshold": args.rating_threshold, "policy": args.policy}
    serve = section(load_settings(args.config, args.set, LAYOUT), "serve", ServeConfig(), flags)
    given = {k: getattr(args, k) for k in ("tolerance", "refit", "refit_growth", "als_iterations", "keep")}
    config = UpdateConfig(**{k: v for k, v in given.items() if v is not None}, force=args.force)
    with EventStore(store_path) as store:
        summary = run_update(model_dir, store, config, serve, dry_run=args.dry_run)
    print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    if summary["status"] == "refused":
        print(f"note: {summary['version']} was not promoted: {summary['reason']}; {summary['from_version']} keeps "
              f"serving (`avrec versions promote {model_dir} {summary['version']}` overrides)", file=sys.stderr)
    return 0


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def cmd_list(args: argparse.Namespace) -> int:
    from avrec.models.versions import VersionHome

    home = VersionHome(args.model_dir)
    versions, history = home.versions(), home.registry()["history"]
    if args.json:
        print(json.dumps({"current": home.current() if home.versioned else None, "versions": versions,
                          "history": history}, indent=2, default=str))
        return 0
    if not versions:
        print(f"{args.model_dir}: a plain model folder, no versions yet (the first `avrec update` creates v0001)")
        return 0
    print(f"{'':2}{'version':8} {'created (UTC)':19} {'status':9} {'probe NDCG@10':>13} {'parent':7} how")
    for v in versions:
        ndcg = "" if v.get("probe_ndcg") is None else f"{v['probe_ndcg']:.4f}"
        mark = "* " if v["current"] else "  "
        status = v.get("status", "") + ("" if v["on_disk"] else " (pruned)")
        print(f"{mark}{v['name']:8} {_when(v.get('created')):19} {status:9} {ndcg:>13} {v.get('parent') or '':7} "
              f"{v.get('how') or v.get('reason') or ''}")
    print("\nhistory:")
    for h in history:
        print(f"  {_when(h['ts'])}  {h['action']:8} {h['version']}"
              f"{' (from ' + str(h['from']) + ')' if h.get('from') else ''}: {h.get('reason', '')}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from avrec.models.versions import VersionHome

    home = VersionHome(args.model_dir)
    with home.lock():
        moved = home.promote(args.version, args.reason)
    print(f"{args.model_dir}: serving {moved['to']} (was {moved['from']})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from avrec.models.versions import VersionHome

    home = VersionHome(args.model_dir)
    with home.lock():
        moved = home.rollback(args.to, args.reason)
    print(f"{args.model_dir}: serving {moved['to']} (was {moved['from']})")
    return 0
