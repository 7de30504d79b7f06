"""``avrec logs export``: the impression log of an event store as Parquet (:mod:`avrec.policies.logfiles`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from avrec.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="export the served lists (impressions) and their rewards")
    logs_sub = p.add_subparsers(dest="logs_command", metavar="COMMAND", required=True)
    e = logs_sub.add_parser(
        "export", help="write impressions and rewards as Parquet (an Open Bandit Pipeline-like schema)",
        description="Writes DIR/slots.parquet (one row per shown slot: action, position, reward, pscore, ...), "
        "DIR/candidates.parquet (each impression's candidates with scores and features) and DIR/schema.json "
        "(column names, feature names, position-bias examination probabilities estimated from the log).",
    )
    e.add_argument("store", metavar="STORE",
                   help="the event store of `avrec serve` (a SQLite file or a postgresql:// URL)")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="reward settings, e.g. rewards.skip=0 rewards.rating_threshold=4 (repeatable)")
    e.set_defaults(func=cmd_export)


def reward_config(sets: list[str]):
    from avrec.config import apply_overrides, parse_set_options
    from avrec.policies.rewards import RewardConfig

    raw = parse_set_options(sets)
    bad = [k for k in raw if k != "rewards"]
    if bad:
        raise DataError(f"--set {bad[0]}: only rewards.* settings apply here")
    return apply_overrides(RewardConfig(), raw.get("rewards", {}), "rewards.")


def open_store(path: str | Path):
    from avrec.serve.store import EventStore, is_postgres_url

    if is_postgres_url(str(path)):
        return EventStore(str(path))
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no event store there")
    return EventStore(path)


def store_tables(store_path: str | Path, sets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(slots, candidates, meta) of the impressions in an event store."""
    from avrec.policies.clicks import estimate_examination
    from avrec.policies.features import FEATURE_NAMES
    from avrec.policies.logfiles import SLOT_COLUMNS
    from avrec.serve.impressions import ImpressionLog, export_tables

    rewards = reward_config(sets)
    with open_store(store_path) as store:
        slot_rows, cand_rows = export_tables(ImpressionLog(store), rewards)
    slots = pd.DataFrame(slot_rows, columns=list(SLOT_COLUMNS))
    cands = pd.DataFrame(cand_rows, columns=["impression_id", "action_index", "action", "score", "features"])
    meta: dict = {"feature_names": list(FEATURE_NAMES), "impressions": int(slots["slate_id"].nunique()),
                  "rewards": rewards.__dict__}
    if len(slots):
        n_pos = int(slots["position"].max()) + 1
        kappa, _ = estimate_examination(slots["action"].to_numpy(), slots["position"].to_numpy(),
                                        np.clip(slots["reward"].to_numpy(), 0, 1), n_pos)
        meta["examination"] = [round(float(k), 4) for k in kappa]
    return slots, cands, meta


def cmd_export(args: argparse.Namespace) -> int:
    from avrec.policies.logfiles import write_logs

    slots, cands, meta = store_tables(args.store, args.set)
    out = write_logs(slots, cands, args.out, meta)
    print(json.dumps({"out": str(out), "impressions": meta["impressions"], "slots": len(slots),
                      "slots_with_feedback": int(slots["feedback"].sum()) if len(slots) else 0,
                      "policies": slots.groupby("policy")["slate_id"].nunique().to_dict() if len(slots) else {},
                      "examination": meta.get("examination")}, indent=2))
    return 0
