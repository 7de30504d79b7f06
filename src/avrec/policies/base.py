"""Slate policies: choose the list to show from one request's candidates and say how likely each choice was.

A policy fills the slots of a slate one at a time. At slot ``j`` it has a probability distribution over
the candidates not shown yet (:meth:`SlatePolicy.slot_probs`); it draws the slot's item from it and logs
that probability as the slot's **propensity**: the exact probability of the item at that position given
the items above it. The product over slots ``1..j`` (``cascade``) is the probability of the slate's first
``j`` items, and the product over all slots the probability of the whole slate, which is what the
off-policy estimators in :mod:`avrec.policies.ope` divide by.

A request first gets a **plan** (:meth:`SlatePolicy.plan`): one or more rows of utilities over the
candidates. Deterministic policies have one row (the slot goes to the best remaining item; ties share
the probability); Thompson sampling has one row per posterior draw, and a slot goes to the best remaining
item of a uniformly drawn row, so its probability is exactly the share of rows whose best remaining item
it is. Slots outside ``explore_slots`` always take the best remaining item by the retriever's score.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avrec.errors import ConfigError, DataError

POLICY_FILE = "policy.json"
STATE_FILE = "policy.safetensors"


@dataclass
class PolicyConfig:
    """Settings of a slate policy (the ``[serve.policy]`` table, ``avrec ope --policy``).

    ``name``: greedy, epsilon, softmax, linucb or thompson. ``epsilon``: the share of explored slots
    (epsilon). ``temperature``: of the Plackett–Luce distribution over standardised scores (softmax).
    ``alpha``: width of LinUCB's confidence bonus. ``noise``: scale of Thompson sampling's posterior.
    ``samples``: posterior draws per request (thompson). ``ridge``: prior precision of the linear models;
    ``prior_score_weight``: prior weight of the standardised retriever score, so an untrained linear
    policy starts from the retriever's order. ``explore_slots``: 1-based slots that may explore (empty: all).
    ``candidates``: how many of the retriever's items a policy chooses from. ``seed``: the random source.
    """

    name: str = "greedy"
    epsilon: float = 0.1
    temperature: float = 1.0
    alpha: float = 0.3
    noise: float = 0.3
    samples: int = 64
    ridge: float = 1.0
    prior_score_weight: float = 0.1
    explore_slots: list[int] = field(default_factory=list)
    candidates: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon <= 1:
            raise ConfigError(f"policy epsilon must be in [0, 1], not {self.epsilon}")
        for key in ("temperature", "ridge"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"policy {key} must be positive, not {getattr(self, key)}")
        for key in ("alpha", "noise"):
            if getattr(self, key) < 0:
                raise ConfigError(f"policy {key} must be 0 or more, not {getattr(self, key)}")
        if self.samples < 1 or self.candidates < 1:
            raise ConfigError("policy samples and candidates must be at least 1")
        bad = [s for s in self.explore_slots if int(s) < 1]
        if bad:
            raise ConfigError(f"policy explore_slots are 1-based slot numbers; got {bad[0]}")


@dataclass
class Slate:
    """What a policy chose: candidate positions in slot order, each slot's propensity, explored flags."""

    items: np.ndarray
    propensities: np.ndarray
    explored: np.ndarray

    @property
    def cascade(self) -> np.ndarray:
        """Probability of the first ``j`` items, for every ``j``."""
        return np.cumprod(self.propensities)

    @property
    def probability(self) -> float:
        """Probability of the whole slate."""
        return float(np.prod(self.propensities))


def best_of(utility: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Per row, 1 at the best available utility (ties share it equally), as a (rows, n) distribution."""
    u = np.where(available[None, :], utility, -np.inf)
    top = u.max(axis=1, keepdims=True)
    hit = (u == top) & available[None, :]
    return hit / hit.sum(axis=1, keepdims=True)


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread over the finite entries (non-finite entries become the minimum)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.zeros_like(x)
    lo = x[ok].min()
    x = np.where(ok, x, lo)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


class SlatePolicy:
    """Base class: greedy by the retriever's score. Subclasses change :meth:`plan` or :meth:`slot_probs`."""

    name: ClassVar[str] = "greedy"
    #: whether :meth:`update` learns anything
    learns: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig(name=self.name)
        self.version = 0  # bumped by every update: logged with each impression

    # ---- the distribution at each slot ----
    def plan(self, scores: np.ndarray, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Utility rows over the candidates for one request; (rows, n)."""
        return np.asarray(scores, dtype=np.float64)[None, :]

    def slot_probs(self, plan: np.ndarray, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        """The probability of each candidate at the next slot, given which are still ``available``."""
        return best_of(plan, available).mean(axis=0)

    def _may_explore(self, slot: int) -> bool:
        slots = self.config.explore_slots
        return not slots or (slot + 1) in slots

    def _probs(self, plan: np.ndarray, scores: np.ndarray, available: np.ndarray, slot: int) -> np.ndarray:
        if self._may_explore(slot):
            return self.slot_probs(plan, scores, available)
        return best_of(np.asarray(scores, dtype=np.float64)[None, :], available)[0]

    # ---- choosing and scoring slates ----
    def choose(self, scores: np.ndarray, features: np.ndarray, k: int, rng: np.random.Generator) -> Slate:
        """Draw a slate of ``min(k, n)`` candidates; each slot's propensity is exact."""
        scores = np.asarray(scores, dtype=np.float64)
        n = len(scores)
        k = min(int(k), n)
        plan = self.plan(scores, features, rng)
        available = np.ones(n, dtype=bool)
        items = np.empty(k, dtype=np.int64)
        props = np.empty(k, dtype=np.float64)
        explored = np.zeros(k, dtype=bool)
        for j in range(k):
            p = self._probs(plan, scores, available, j)
            i = int(rng.choice(n, p=p / p.sum()))
            greedy = best_of(scores[None, :], available)[0]
            items[j], props[j], explored[j] = i, p[i], greedy[i] == 0
            available[i] = False
        return Slate(items, props, explored)

    def slot_distributions(self, scores: np.ndarray, features: np.ndarray, shown: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
        """(len(shown), n): this policy's distribution at each slot given the *shown* items above it."""
        scores = np.asarray(scores, dtype=np.float64)
        plan = self.plan(scores, features, rng)
        available = np.ones(len(scores), dtype=bool)
        out = np.zeros((len(shown), len(scores)))
        for j, i in enumerate(np.asarray(shown, dtype=np.int64)):
            out[j] = self._probs(plan, scores, available, j)
            available[i] = False
        return out

    # ---- learning and persistence ----
    def observe(self, features: np.ndarray, examination: np.ndarray | None = None) -> None:
        """Count shown items (rows of ``features``) as reward 0; :meth:`reward` adds what feedback brings.

        ``examination``: each row's probability of being looked at (position bias, 1 when None).
        """

    def reward(self, features: np.ndarray, rewards: np.ndarray, examination: np.ndarray | None = None) -> None:
        """Add the rewards of items already counted by :meth:`observe`."""

    def update(self, features: np.ndarray, rewards: np.ndarray, examination: np.ndarray | None = None) -> None:
        """:meth:`observe` then :meth:`reward`: learn from shown items whose rewards are known."""
        self.observe(features, examination)
        self.reward(features, rewards, examination)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:  # noqa: B027 (no state by default)
        """Restore arrays saved by :meth:`state`."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, **{k: v for k, v in asdict(self.config).items()
                                                               if k != "name"}}

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``policy.json`` (settings, version, ``extra``) and ``policy.safetensors`` (parameters)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"config": asdict(self.config), "version": self.version, **(extra or {})}
        state = self.state()
        if state:
            save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(folder / STATE_FILE))
        (folder / POLICY_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder


def read_saved(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a policy saved with :meth:`SlatePolicy.save`."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    path = folder / POLICY_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        state = load_file(str(folder / STATE_FILE)) if (folder / STATE_FILE).exists() else {}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the saved policy ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise DataError(f"{path}: not a saved policy (no 'config' object)")
    return meta, state
