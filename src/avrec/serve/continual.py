"""Continual learning: ``avrec update MODEL_DIR --store STORE``, safe to run on a schedule.

One run, under the model folder's lock (:class:`~avrec.models.versions.VersionHome`):

1. the current version is loaded and scored on the frozen probe set (:mod:`avrec.serve.probe`);
2. the store's items, users and positive events are folded in (the probe's own pairs never are): the cheap
   parts every run: fold-in for models that score users from their history (EASE, itemknn, tfidf, pop),
   a warm-started ALS (a few sweeps from the current factors, new users and items included);
3. the expensive parts (a full refit of the model on its grown data: EASE's weights, the towers) only when
   ``refit = "always"``, or ``"auto"`` and the data grew by ``refit_growth`` since the last full fit, or
   there are items or users the cheap path cannot take;
4. a learning exploration policy is brought up to date from the impression log and saved with the
   version (``policy/``: safetensors + JSON), so a restarted server starts from it;
5. the candidate is scored on the probe again and written as a new version; it is promoted (the pointer
   switched atomically, a watching server reloads it) unless its probe NDCG@10 fell by more than
   ``tolerance`` (relative), in which case it stays a refused version and the reason is logged.

A run with nothing new since the newest version writes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from avrec.data.dataset import build_dataset
from avrec.errors import ConfigError
from avrec.models.base import Recommender
from avrec.models.registry import create_model
from avrec.models.versions import VersionHome, resolve_model_folder
from avrec.policies import load_policy, make_policy
from avrec.serve.config import ServeConfig
from avrec.serve.exploration import POLICY_DIR, replay, served_policy_config
from avrec.serve.impressions import ImpressionLog
from avrec.serve.probe import load_probe, probe_ndcg, probe_pairs
from avrec.serve.state import replayable
from avrec.serve.store import EventStore
from avrec.serve.updates import fold_events

log = logging.getLogger("avrec.update")
REFIT = ("auto", "always", "never")


@dataclass
class UpdateConfig:
    """Settings of ``avrec update``: the guard's ``tolerance`` (largest relative drop of probe NDCG@10),
    ``refit`` (auto/always/never) and ``refit_growth``, ALS warm-start ``als_iterations``, how many version
    folders to ``keep``, and ``force`` (promote whatever the probe says)."""

    tolerance: float = 0.05
    refit: str = "auto"
    refit_growth: float = 0.25
    als_iterations: int = 3
    keep: int = 5
    force: bool = False

    def __post_init__(self) -> None:
        if self.refit not in REFIT:
            raise ConfigError(f"--refit must be one of {', '.join(REFIT)}, not {self.refit!r}")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"--tolerance must be in [0, 1), not {self.tolerance}")
        if self.refit_growth <= 0 or self.als_iterations < 1:
            raise ConfigError("--refit-growth must be positive and --als-iterations at least 1")
        if self.keep < 1:
            raise ConfigError(f"--keep must be at least 1, not {self.keep}")


def positives(store: EventStore, threshold: float, exclude: set[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """(the (user, item) pairs whose latest event is positive, less ``exclude``; the largest event id)."""
    last: dict[tuple[str, str], int] = {}
    top = 0
    for e in store.iter_events():
        last[(e.user_id, e.item_id)] = e.polarity(threshold)
        top = max(top, e.id)
    return [p for p, pol in last.items() if pol > 0 and p not in exclude], top


def grown(model: Recommender, store: EventStore, pairs: list[tuple[str, str]]
          ) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    """The training matrix over the model's users and items plus new users and stored items, with ``pairs`` added."""
    stored = replayable(store.items(), model.item_index)
    new_items = pd.DataFrame(stored).fillna("").astype(str) if stored else pd.DataFrame(columns=["item_id"])
    items = {**model.item_index, **{i: model.n_items + n for n, i in enumerate(new_items["item_id"])}}
    users = dict(model.user_index)
    new_users: list[str] = []
    rows, cols = [], []
    for u, i in pairs:
        if i not in items:
            continue
        if u not in users:
            users[u] = len(users)
            new_users.append(u)
        rows.append(users[u])
        cols.append(items[i])
    assert model.seen is not None  # an updated model is fitted
    old = sp.csr_matrix(model.seen, dtype=np.float32)
    shape = (len(users), len(items))
    seen = sp.csr_matrix((old.data, old.indices, old.indptr), shape=(old.shape[0], shape[1]))
    seen = sp.vstack([seen, sp.csr_matrix((len(new_users), shape[1]), dtype=np.float32)], format="csr")
    seen = seen + sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    seen.data[:] = 1.0
    return sp.csr_matrix(seen), new_users, new_items


def refit(model: Recommender, seen: sp.csr_matrix, new_users: list[str], new_items: pd.DataFrame) -> Recommender:
    """A fresh model of the same kind and settings fitted on the grown data (the expensive path)."""
    assert model.items is not None and model.user_ids is not None
    items = pd.concat([model.items, new_items], ignore_index=True).fillna("").astype(str) if len(new_items) \
        else model.items
    user_ids = np.r_[np.asarray(model.user_ids, dtype=object), np.asarray(new_users, dtype=object)]
    coo = seen.tocoo()
    frame = pd.DataFrame({"user_id": user_ids[coo.row].astype(str), "item_id": items["item_id"].to_numpy()[coo.col],
                          "weight": 1.0, "timestamp": -1})
    return create_model(model.name, model.config).fit(build_dataset(items, frame, name="update"))


def _latest_marks(home: VersionHome) -> dict[str, Any]:
    versions = home.registry()["versions"]
    return versions[-1] if versions else {}


def run_update(model_dir: str | Path, store: EventStore, config: UpdateConfig, serve: ServeConfig,
               dry_run: bool = False) -> dict[str, Any]:
    """One scheduled update (see the module docstring); returns what it did (a JSON-able summary)."""
    home = VersionHome(model_dir)
    start = time.perf_counter()
    with home.lock():
        probe = load_probe(home.folder)
        if not home.versioned and not dry_run:
            first = Recommender.load(home.folder)
            home.adopt({"probe_ndcg": probe_ndcg(first, probe)["ndcg"], "events_upto": 0, "impressions_upto": 0,
                        "full_fit_nnz": int(first.seen.nnz) if first.seen is not None else 0, "refit": True})
        current = home.current() if home.versioned else None
        model = Recommender.load(resolve_model_folder(home.folder))
        impressions = ImpressionLog(store)
        pairs, events_upto = positives(store, serve.rating_threshold, probe_pairs(probe))
        stored_new = replayable(store.items(), model.item_index)
        marks = _latest_marks(home)
        summary: dict[str, Any] = {"model": model.name, "from_version": current, "events_upto": events_upto,
                                   "impressions_upto": impressions.last_seq(), "store": str(store.path)}
        if marks and int(marks.get("events_upto", -1)) == events_upto and not stored_new \
                and int(marks.get("impressions_upto", -1)) == summary["impressions_upto"]:
            return summary | {"status": "nothing new", "version": None,
                              "reason": f"nothing new since {marks['name']} ({marks.get('status')})"}
        before = probe_ndcg(model, probe)
        seen, new_users, new_items = grown(model, store, pairs)
        full_nnz = int(marks.get("full_fit_nnz") or (model.seen.nnz if model.seen is not None else 0))
        growth = (seen.nnz - full_nnz) / max(full_nnz, 1)
        is_als = model.name == "als"
        reasons = []
        if config.refit == "always":
            reasons.append("refit = always")
        elif config.refit == "auto":
            if growth > config.refit_growth:
                reasons.append(f"interactions grew {growth:.0%} since the last full fit (> {config.refit_growth:.0%})")
            if len(new_items) and not model.capabilities.add_items and not is_als:
                reasons.append(f"{len(new_items)} new item(s) the {model.name} model cannot add without a refit")
            if new_users and not model.capabilities.exact_fold_in and not is_als:
                reasons.append(f"{len(new_users)} new user(s) the {model.name} model cannot fold in")
        if reasons:
            candidate, how = refit(model, seen, new_users, new_items), "full refit: " + "; ".join(reasons)
            full_nnz = int(seen.nnz)
        elif is_als:
            model.warm_refit(seen, new_users, new_items, iterations=config.als_iterations)  # type: ignore[attr-defined]
            candidate, how = model, f"ALS warm start ({config.als_iterations} sweep(s))"
        else:
            summary["fold"] = fold_events(model, store, serve.rating_threshold, exclude=probe_pairs(probe))
            candidate, how = model, "fold-in"
        after = probe_ndcg(candidate, probe)
        summary |= {"how": how, "interactions": int(seen.nnz), "new_users": len(new_users),
                    "new_items": len(new_items), "probe_before": before, "probe_after": after}
        promote, reason = decide(before["ndcg"], after["ndcg"], config)
        summary |= {"promote": promote, "reason": reason}
        if dry_run:
            return summary | {"status": "dry run", "version": None}
        name = home.next_name()
        staged = home.stage(name)
        candidate.save(staged)
        summary["policy"] = save_policy(staged, resolve_model_folder(home.folder), store, serve, summary)
        entry = {"parent": current, "status": "candidate", "probe_ndcg": after["ndcg"], "probe_users": after["users"],
                 "probe_before": before["ndcg"], "events_upto": events_upto,
                 "impressions_upto": summary["impressions_upto"], "full_fit_nnz": full_nnz,
                 "refit": bool(reasons), "how": how, "reason": reason, "model": candidate.name,
                 "interactions": int(seen.nnz), "seconds": round(time.perf_counter() - start, 3)}
        home.commit(staged, name, entry)
        if promote:
            home.switch(name, "update", reason)
            log.info("update: %s promoted (%s)", name, reason)
        else:
            home.refuse(name, reason)
            log.info("update: %s not promoted: %s", name, reason)
        summary |= {"status": "promoted" if promote else "refused", "version": name,
                    "pruned": home.prune(config.keep)}
        store.set_meta("last_update_event_id", str(events_upto))
        return summary


def decide(before: float | None, after: float | None, config: UpdateConfig) -> tuple[bool, str]:
    """(promote?, why) from the probe NDCG@10 before and after the update."""
    if before is None or after is None:
        return True, "no probe set (fit with --probe-users to guard against forgetting)"
    floor = before * (1 - config.tolerance)
    text = f"probe NDCG@10 {before:.4f} -> {after:.4f}"
    if after + 1e-12 < floor:
        drop = (before - after) / before if before else 0.0
        if config.force:
            return True, f"{text} (-{drop:.1%}, over the {config.tolerance:.0%} tolerance; promoted by --force)"
        return False, f"{text}: -{drop:.1%} is more than the {config.tolerance:.0%} tolerance (forgetting guard)"
    return True, f"{text}, within the {config.tolerance:.0%} tolerance"


def save_policy(folder: Path, previous: Path, store: EventStore, serve: ServeConfig, summary: dict[str, Any]
                ) -> dict[str, Any] | None:
    """Bring the served policy's parameters up to date from the impression log and save them in ``folder``.

    Starts from the previous version's saved policy (when it is the same policy) and replays what was
    logged after it; None for a policy that does not learn.
    """
    config = served_policy_config(serve, previous)
    policy = make_policy(config)
    if not policy.learns:
        return None
    after_seq = after_event = 0
    if (previous / POLICY_DIR / "policy.json").exists():
        try:
            policy, meta = load_policy(previous / POLICY_DIR, config)
            after_seq, after_event = int(meta.get("impressions_upto", 0)), int(meta.get("events_upto", 0))
        except Exception as e:  # noqa: BLE001 - another policy was saved: learn this one from the whole log
            log.warning("not starting from the saved policy in %s: %s", previous / POLICY_DIR, e)
            policy = make_policy(config)
    learned = replay(policy, ImpressionLog(store), serve.rewards, serve.examination_decay, after_seq, after_event,
                     upto_seq=summary["impressions_upto"], upto_event=summary["events_upto"])
    policy.save(folder / POLICY_DIR, {"impressions_upto": summary["impressions_upto"],
                                      "events_upto": summary["events_upto"]})
    return {"name": policy.name, "replayed": learned}

