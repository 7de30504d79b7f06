"""Logged impressions as files: the Parquet schema of ``avrec logs export`` and reading it back for OPE.

``DIR/slots.parquet``, one row per shown slot (the names Open Bandit Pipeline uses where it has one):
``impression_id``, ``slate_id`` (logging order), ``timestamp``, ``user_id``, ``endpoint``, ``policy``,
``policy_version``, ``model``, ``model_version``, ``position`` (0-based slot), ``action`` (item id),
``action_index`` (its row in the impression's candidates), ``score``, ``pscore`` (propensity of the
item at this slot given the slots above), ``pscore_cascade`` (of the first ``position + 1`` slots),
``pscore_slate`` (of the whole slate), ``explored``, ``reward`` (0 without feedback), ``feedback`` (any
event joined), ``context`` (JSON).

``DIR/candidates.parquet``, one row per candidate of each impression: ``impression_id``,
``action_index``, ``action``, ``score``, ``features`` (list of floats, named in ``schema.json``).

``DIR/schema.json``: the column descriptions, ``feature_names`` and the position-bias examination
probabilities estimated from the log (:func:`avrec.policies.clicks.estimate_examination`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avrec.errors import DataError
from avrec.policies.ope import LoggedImpression

SLOTS = "slots.parquet"
CANDIDATES = "candidates.parquet"
SCHEMA = "schema.json"
SLOT_COLUMNS = ("impression_id", "slate_id", "timestamp", "user_id", "endpoint", "policy", "policy_version", "model",
                "model_version", "position", "action", "action_index", "score", "pscore", "pscore_cascade",
                "pscore_slate", "explored", "reward", "feedback", "context")


def write_logs(slots: pd.DataFrame, candidates: pd.DataFrame, folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write the two tables and ``schema.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    slots.to_parquet(folder / SLOTS, index=False)
    candidates.to_parquet(folder / CANDIDATES, index=False)
    (folder / SCHEMA).write_text(json.dumps({"slots": list(SLOT_COLUMNS), **meta}, indent=2), encoding="utf-8")
    return folder


def read_tables(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    folder = Path(folder)
    for name in (SLOTS, CANDIDATES, SCHEMA):
        if not (folder / name).exists():
            raise DataError(f"{folder}: no {name} (write a log folder with `avrec logs export STORE --out DIR`)")
    try:
        slots, cands = pd.read_parquet(folder / SLOTS), pd.read_parquet(folder / CANDIDATES)
        meta = json.loads((folder / SCHEMA).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: cannot read the log ({e})") from None
    missing = [c for c in SLOT_COLUMNS if c not in slots.columns]
    if missing:
        raise DataError(f"{folder / SLOTS}: missing column {missing[0]!r}")
    return slots, cands, meta


def to_impressions(slots: pd.DataFrame, cands: pd.DataFrame, endpoint: str = "recommend"
                   ) -> tuple[list[LoggedImpression], pd.DataFrame]:
    """The impressions of ``endpoint`` as :class:`LoggedImpression` (in logging order), with their slot rows."""
    slots = slots[slots["endpoint"] == endpoint].sort_values(["slate_id", "position"])
    if slots.empty:
        raise DataError(f"the log has no {endpoint!r} impressions")
    by_imp = {k: g for k, g in cands.groupby("impression_id", sort=False)}
    out = []
    for n, (_slate, g) in enumerate(slots.groupby("slate_id", sort=True)):
        c = by_imp.get(g["impression_id"].iloc[0])
        if c is None:
            raise DataError(f"impression {g['impression_id'].iloc[0]!r} (slot row {n}) has no candidates")
        c = c.sort_values("action_index")
        feats = np.vstack([np.asarray(f, dtype=np.float64) for f in c["features"]])
        out.append(LoggedImpression(c["action"].astype(str).to_numpy(), c["score"].to_numpy(np.float64), feats,
                                    g["action_index"].to_numpy(np.int64), g["pscore"].to_numpy(np.float64),
                                    g["reward"].to_numpy(np.float64), str(g["user_id"].iloc[0] or "")))
    return out, slots
