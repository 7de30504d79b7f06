"""The served policy: it picks each /recommend list from the model's candidates, logs every list as an
impression, and learns from the rewards feedback brings.

Linear policies count a shown item when it is shown and add its reward when feedback names the
impression (:mod:`avrec.policies.linear`), so their parameters equal a batch fit on the log. They survive
a restart: the parameters saved in ``MODEL_DIR/policy/`` (by ``avrec update``) are loaded and the
impressions and rewards logged since are replayed from the store (:func:`replay`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from avrec.errors import ConfigError
from avrec.models.artifacts import read_meta
from avrec.models.versions import resolve_model_folder
from avrec.policies import PolicyConfig, SlatePolicy, load_policy, make_policy, policy_config
from avrec.policies.base import Slate
from avrec.policies.clicks import geometric_examination
from avrec.policies.features import FEATURE_NAMES, FeatureBuilder
from avrec.policies.rewards import RewardConfig
from avrec.policies.simple import Greedy
from avrec.serve.config import ServeConfig
from avrec.serve.impressions import Impression, ImpressionLog, check_feedback
from avrec.serve.pools import Pool
from avrec.serve.state import ModelState
from avrec.serve.store import EventStore
from avrec.serve.stores.group_commit import Durable, loop_of

log = logging.getLogger("avrec.serve")
POLICY_DIR = "policy"


def model_version(state: ModelState) -> str:
    """The served version's name (a versioned folder), else a short stable id of the folder's contents
    (``memory`` for an in-memory model)."""
    if state.version:
        return state.version
    if not state.fingerprint:
        return "memory"
    if state.fingerprint_id is None:  # a state's fingerprint never changes: hashed once
        state.fingerprint_id = hashlib.sha1(repr(state.fingerprint).encode()).hexdigest()[:12]
    return state.fingerprint_id


def replay(policy: SlatePolicy, impressions: ImpressionLog, rewards: RewardConfig, decay: float,
           after_seq: int = 0, after_event: int = 0, upto_seq: int | None = None,
           upto_event: int | None = None) -> dict[str, int]:
    """Teach ``policy`` the /recommend impressions after ``after_seq`` and the rewards of events after
    ``after_event`` (only the part of a reward above what the events up to ``after_event`` gave); with
    ``upto_seq``/``upto_event``, nothing logged after those (what ``avrec update`` saves is exact)."""
    counted = 0
    new = impressions.rewards(rewards, upto_event=upto_event)
    old = impressions.rewards(rewards, upto_event=after_event) if after_event else {}
    pending = {key: r - old.get(key, 0.0) for key, r in new.items() if r - old.get(key, 0.0) > 0}
    for imp in impressions.iter(0):
        if upto_seq is not None and imp.seq > upto_seq:
            break
        if imp.endpoint != "recommend" or tuple(imp.candidates.get("feature_names", ())) != FEATURE_NAMES:
            continue
        x, kappa = shown_features(imp, decay)
        if imp.seq > after_seq:
            policy.observe(x, kappa)
            counted += 1
        gains = np.array([pending.get((imp.impression_id, it["position"]), 0.0) for it in imp.items])
        if gains.any():
            policy.reward(x, gains, kappa)
    return {"impressions": counted, "rewards": len(pending)}


def shown_features(imp: Impression, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """(features of the shown items, their slots' examination probabilities)."""
    feats = np.asarray(imp.candidates["features"], dtype=np.float64)
    rows = [int(it["candidate"]) for it in imp.items]
    pos = np.array([int(it["position"]) for it in imp.items], dtype=np.int64)
    kappa = geometric_examination(int(pos.max()) + 1 if len(pos) else 1, decay)[pos]
    return feats[rows], kappa


def served_policy_config(config: ServeConfig, model_dir: Path | None, model: Any = None) -> PolicyConfig:
    """The policy settings a server runs: ``serve.policy`` with ``[serve.exploration]``, or with ``policy =
    "model"`` the ``policy`` table saved in a pipeline model's settings (a ConfigError when it has none)."""
    if config.policy != "model":
        return replace(config.exploration, name=config.policy)
    if model is not None:
        raw = getattr(model.config, "policy", None)
    else:
        assert model_dir is not None
        raw = read_meta(resolve_model_folder(model_dir)).get("config", {}).get("policy")
    if not raw:
        raise ConfigError("serve.policy = model: the served model has no policy setting (fit the pipeline with "
                          "--set models.pipeline.policy.name=thompson, or choose a policy by name)")
    return policy_config(dict(raw))


class Explorer:
    """The policy of a service, its impression log and its random source (seeded; one lock)."""

    def __init__(self, config: ServeConfig, store: EventStore, model_dir: Path | None, model: Any = None) -> None:
        self.config = config
        self.impressions = ImpressionLog(store, flush=config.flush_impressions)
        pconfig = served_policy_config(config, model_dir, model)
        self.policy = make_policy(pconfig)
        self.rng = np.random.default_rng(pconfig.seed)
        self.lock = threading.Lock()
        self._features: tuple[tuple[int, int], FeatureBuilder] | None = None
        self.restored: dict[str, Any] = {}
        if self.policy.learns:
            self._restore(model_dir)

    def _restore(self, model_dir: Path | None) -> None:
        after_seq = after_event = 0
        saved = resolve_model_folder(model_dir) / POLICY_DIR if model_dir is not None else None
        if saved is not None and (saved / "policy.json").exists():
            try:
                policy, meta = load_policy(saved, self.policy.config)
                self.policy = policy
                after_seq, after_event = int(meta.get("impressions_upto", 0)), int(meta.get("events_upto", 0))
                self.restored["saved"] = str(saved)
            except Exception as e:  # noqa: BLE001 - a mismatched saved policy: learn again from the log
                log.warning("not using the saved policy in %s: %s", saved, e)
        self.restored |= replay(self.policy, self.impressions, self.config.rewards, self.config.examination_decay,
                                after_seq, after_event)

    def features(self, state: ModelState) -> FeatureBuilder:
        # added items grow the same model object: its size is part of the key
        key = (id(state.model), state.model.n_items)
        if self._features is None or self._features[0] != key:
            self._features = (key, FeatureBuilder(state.model))
        return self._features[1]

    def width(self, k: int) -> int:
        """How many of the model's items a list of ``k`` is chosen from (all of them are logged)."""
        return max(int(k), self.policy.config.candidates)

    def present(self, state: ModelState, endpoint: str, user_id: str | None, pool: list[dict[str, Any]], k: int,
                history: list[str], context: dict[str, Any], explore: bool = True,
                pending: list[Durable] | None = None, prepared: Pool | None = None,
                reusable: list[tuple | None] | None = None) -> dict[str, Any]:
        """Choose ``k`` of the ``pool`` items (best first), log the impression; the items and its id.

        ``prepared``: the cached :class:`~avrec.serve.pools.Pool` that ``pool`` and ``history`` come from;
        its features and logged candidates are built once and kept there. ``pending``: the list the
        impression's durable-write future goes to (the caller waits for it before answering); without it
        this waits for the write itself. ``reusable``: when the slate is the same on every request for
        this pool (a greedy slate without ties, a policy that does not learn) the impression row without
        its id and time is appended to it (None when nothing is logged), for :meth:`log_again`."""
        if not pool:
            return {"items": [], "impression_id": None}
        scores = np.array([float(it["score"]) for it in pool])
        if prepared is not None:
            feats, candidates = self.prepare(state, prepared)
        else:
            feats, candidates = self._candidates(state, pool, scores, history)
        with self.lock:
            policy = self.policy if explore else make_policy("greedy")
            slate = self._choose(policy, scores, feats, k, prepared)
            items = []
            for j, (c, p, e) in enumerate(zip(slate.items, slate.propensities, slate.explored)):
                items.append({**pool[int(c)], "position": j, "propensity": float(p), "explored": bool(e)})
            logged = [{"item_id": it["item_id"], "position": it["position"], "score": float(it["score"]),
                       "propensity": it["propensity"], "explored": it["explored"], "candidate": int(c)}
                      for it, c in zip(items, slate.items)]
            impression_id = None
            # no random draw decided it and nothing learns from it: the same slate on every request
            same_every_time = (type(policy) in (SlatePolicy, Greedy) and not (explore and policy.learns)
                               and bool(np.all(slate.propensities == 1.0)))
            if self.config.log_impressions:
                row = self.impressions.row(user_id=user_id, endpoint=endpoint, policy=policy.name,
                                           policy_version=policy.version, model=state.model.name,
                                           model_version=model_version(state), items=logged,
                                           candidates=candidates, context={"k": k, **context})
                impression_id, durable = self.impressions.submit_row(row, loop_of(pending))
                if pending is None:
                    durable.result()
                else:
                    pending.append(durable)
                if reusable is not None and same_every_time:
                    reusable.append(row)
                if explore and policy.learns and endpoint == "recommend":
                    kappa = geometric_examination(len(slate.items), self.config.examination_decay)
                    policy.observe(feats[slate.items], kappa)
            elif reusable is not None and same_every_time:
                reusable.append(None)
        return {"items": items, "impression_id": impression_id, "policy": policy.name}

    def prepare(self, state: ModelState, pool: Pool) -> tuple[np.ndarray, str]:
        """The policy features of a cached pool's items and its logged candidates record (JSON), built
        once and kept on the pool (so a pool built ahead of its first request has them ready)."""
        if pool.features is None or pool.candidates_json is None:
            scores = np.array([float(it["score"]) for it in pool.items])
            pool.features, pool.candidates_json = self._candidates(state, pool.items, scores, pool.history)
        return pool.features, pool.candidates_json

    def log_again(self, row: tuple | None, pending: list[Durable] | None = None) -> str | None:
        """Log one more impression of a list :meth:`present` made reusable (``row``); its new id."""
        if row is None:
            return None
        impression_id, durable = self.impressions.submit_row(row, loop_of(pending))
        if pending is None:
            durable.result()
        else:
            pending.append(durable)
        return impression_id

    def _choose(self, policy: SlatePolicy, scores: np.ndarray, feats: np.ndarray, k: int,
                prepared: Pool | None) -> Slate:
        """The policy's slate; a greedy slate without ties (every propensity 1, so no random draw decides
        it) is kept with the cached pool and reused."""
        if prepared is None or type(policy) not in (SlatePolicy, Greedy):
            return policy.choose(scores, feats, k, self.rng)
        slate = prepared.slates.get(k)
        if slate is None:
            slate = policy.choose(scores, feats, k, self.rng)
            if bool(np.all(slate.propensities == 1.0)):
                prepared.slates[k] = slate
        return slate

    def _candidates(self, state: ModelState, pool: list[dict[str, Any]], scores: np.ndarray,
                    history: list[str]) -> tuple[np.ndarray, str]:
        """The policy features of ``pool`` and the impression log's ``candidates`` record (JSON text)."""
        rows = np.array([state.catalog_index[it["item_id"]] for it in pool], dtype=np.int64)
        hist = [state.catalog_index[i] for i in history if i in state.catalog_index]
        # rounded as logged, so that a replay of the log gives the live policy's parameters exactly
        feats = self.features(state).build(rows, scores, hist).round(6)
        record = {"item_ids": [it["item_id"] for it in pool], "scores": scores.round(6).tolist(),
                  "features": feats.tolist(), "feature_names": list(FEATURE_NAMES)}
        return feats, json.dumps(record)

    def record_feedback(self, events: list[dict[str, Any]], add: Callable[[list[dict[str, Any]]], list[int]]
                        ) -> list[int]:
        """Check the impressions ``events`` name (setting each one's ``position``), store the events with
        ``add`` (durably) and then teach the policy each reward's gain over what that slot had before."""
        joined = [(check_feedback(self.impressions, e, n), e) for n, e in enumerate(events) if e.get("impression_id")]
        if not joined:
            return add(events)
        rewards = self.config.rewards
        with self.lock:
            before = self.impressions.rewards(rewards, impression_ids={imp.impression_id for imp, _ in joined})
            ids = add(events)
            if not self.policy.learns:
                return ids
            for imp, e in joined:
                if imp.endpoint != "recommend" or tuple(imp.candidates.get("feature_names", ())) != FEATURE_NAMES:
                    continue
                key = (imp.impression_id, int(e["position"]))
                r = rewards.reward(str(e["event"]), e.get("value"))
                if r > before.get(key, 0.0):
                    x, kappa = shown_features(imp, self.config.examination_decay)
                    gain = np.zeros(len(x))
                    gain[key[1]] = r - before.get(key, 0.0)
                    before[key] = r
                    self.policy.reward(x, gain, kappa)
        return ids

    def describe(self) -> dict[str, Any]:
        return {**self.policy.describe(), "logging": self.config.log_impressions, **self.restored}
