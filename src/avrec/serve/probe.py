"""The forgetting guard's probe set: held-out users' most recent events, drawn once when the model is first
fitted (``avrec fit --probe-users N``) and frozen from then on.

The probe users stay in the training data with their earlier events; their latest events (a share of
each history, at least one) are held out of it. The probe file keeps both parts (``part`` = ``history`` or
``held_out``). ``avrec update`` scores every candidate version on it before and after folding new traffic
in: each probe user's list is folded in from their *frozen* history (what they had at fit time, excluded
from the list) and NDCG@10 is taken against their held-out events. Freezing the input too means the score
moves only when the model's item relationships do, not because the probe users consumed more since; the
lists rank only the catalogue the probe was drawn over (``probe_items.parquet``), so items released later
do not dilute it. The probe's held-out (user, item) pairs are never folded into a version, so they stay
unseen by every one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import Dataset
from avrec.errors import ConfigError, DataError
from avrec.eval.metrics import per_user_metrics
from avrec.models.base import Recommender

PROBE_FILE = "probe.parquet"
PROBE_META = "probe.json"
PROBE_ITEMS = "probe_items.parquet"


def draw_probe(dataset: Dataset, n_users: int, share: float = 0.2, seed: int = 0,
               min_history: int = 3) -> tuple[Dataset, pd.DataFrame]:
    """(training data without the probe's held-out events, the probe: ``user_id, item_id, timestamp, part``).

    ``n_users`` users with at least ``min_history`` interactions are drawn with ``seed``; each one's latest
    ``share`` of interactions (by timestamp, ties in the data's order; at least one) is held out.
    """
    if n_users < 1:
        raise ConfigError(f"--probe-users must be at least 1, not {n_users}")
    if not 0 < share < 1:
        raise ConfigError(f"--probe-share must be between 0 and 1, not {share}")
    counts = np.bincount(dataset.user_idx, minlength=dataset.n_users)
    eligible = np.flatnonzero(counts >= min_history)
    if len(eligible) == 0:
        raise DataError(f"{dataset.name or 'dataset'}: no user has {min_history} interactions to draw a probe from")
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(eligible, min(n_users, len(eligible)), replace=False))
    chosen = np.isin(dataset.user_idx, users)
    rows = np.flatnonzero(chosen)
    order = np.lexsort((rows, dataset.timestamp[rows], dataset.user_idx[rows]))  # per user, oldest first
    rows = rows[order]
    held = np.zeros(dataset.n_interactions, dtype=bool)
    starts = np.r_[0, np.flatnonzero(np.diff(dataset.user_idx[rows])) + 1, len(rows)]
    for a, b in zip(starts[:-1], starts[1:]):
        n_held = max(1, int(round(share * (b - a))))
        held[rows[b - n_held: b]] = True
    part = np.where(held[rows], "held_out", "history")
    probe = pd.DataFrame({"user_id": dataset.user_ids[dataset.user_idx[rows]].astype(str),
                          "item_id": dataset.item_ids[dataset.item_idx[rows]].astype(str),
                          "timestamp": dataset.timestamp[rows], "part": part})
    return dataset.subset(~held), probe


def save_probe(folder: str | Path, probe: pd.DataFrame, items: Any = None, **meta: Any) -> None:
    """Write the probe as ``probe.parquet`` + ``probe.json`` (when it was drawn and how) into ``folder``, and
    ``items`` (the catalogue's item ids at that time) as ``probe_items.parquet``."""
    folder = Path(folder)
    probe.to_parquet(folder / PROBE_FILE, index=False)
    if items is not None:
        pd.DataFrame({"item_id": pd.Series(list(items), dtype=str)}).to_parquet(folder / PROBE_ITEMS, index=False)
    info = {"users": int(probe["user_id"].nunique()), "held_out": len(held_out(probe)), "drawn_at": time.time(),
            **meta}
    (folder / PROBE_META).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def load_probe(folder: str | Path) -> pd.DataFrame | None:
    """The probe saved in a model folder (or a versioned one's home); None when there is none."""
    path = Path(folder) / PROBE_FILE
    if not path.exists():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise DataError(f"{path}: cannot read the probe set ({e})") from None
    missing = {"user_id", "item_id"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: the probe set lacks column {sorted(missing)[0]!r}")
    frame = frame.astype({"user_id": str, "item_id": str})
    items = Path(folder) / PROBE_ITEMS
    if items.exists():
        frame.attrs["items"] = pd.read_parquet(items)["item_id"].astype(str).tolist()
    return frame


def held_out(probe: pd.DataFrame) -> pd.DataFrame:
    """The held-out rows of a probe (all rows of a probe written without ``part``)."""
    return probe[probe["part"] == "held_out"] if "part" in probe.columns else probe


def probe_pairs(probe: pd.DataFrame | None) -> set[tuple[str, str]]:
    """The probe's held-out (user_id, item_id) pairs: never folded into a model."""
    if probe is None:
        return set()
    rows = held_out(probe)
    return set(zip(rows["user_id"].astype(str), rows["item_id"].astype(str)))


def probe_ndcg(model: Recommender, probe: pd.DataFrame | None, k: int = 10) -> dict[str, Any]:
    """NDCG@k of ``model`` on the probe: ``{ndcg, users}`` (``ndcg`` None without a probe or usable users).

    Each probe user is ranked from their frozen history (fold-in, the history excluded) over the catalogue
    the probe was drawn over (all items when that is not recorded); the relevant items are their held-out
    ones the model's catalogue has. A probe without a
    ``history`` part ranks the users the model knows from their training rows instead.
    """
    if probe is None or not len(probe):
        return {"ndcg": None, "users": 0}
    items = model.item_index
    truth_rows = held_out(probe)
    has_history = "part" in probe.columns
    history: dict[str, list[str]] = {}
    if has_history:
        for u, i in zip(probe["user_id"][probe["part"] == "history"], probe["item_id"][probe["part"] == "history"]):
            if i in items:
                history.setdefault(u, []).append(i)
        users = [u for u in dict.fromkeys(truth_rows["user_id"]) if u in history]
    else:
        users = [u for u in dict.fromkeys(truth_rows["user_id"]) if u in model.user_index]
    pos = {u: n for n, u in enumerate(users)}
    keep = [(pos[u], items[i]) for u, i in zip(truth_rows["user_id"], truth_rows["item_id"]) if u in pos and i in items]
    if not keep:
        return {"ndcg": None, "users": 0}
    r, c = np.array([u for u, _ in keep]), np.array([i for _, i in keep])
    truth = sp.csr_matrix((np.ones(len(keep), np.float32), (r, c)), shape=(len(users), model.n_items))
    at_draw = probe.attrs.get("items")
    cands = None if at_draw is None else np.array(sorted(items[i] for i in at_draw if i in items), dtype=np.int64)
    if has_history:
        top = model.topk_histories(model.history_matrix([history[u] for u in users]), k, candidates=cands)[0]
    else:
        assert model.seen is not None  # a probed model is fitted
        rows = np.array([model.user_index[u] for u in users], dtype=np.int64)
        top = model.topk_indices(rows, k, exclude=model.seen[rows], candidates=cands)[0]
    ndcg = float(per_user_metrics(top, truth, k)["ndcg"].mean())
    return {"ndcg": round(ndcg, 6), "users": len(users)}
