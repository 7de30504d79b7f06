"""Off-policy evaluation of slate policies on logged impressions.

Each logged impression has the request's candidates (scores and features), the slate shown (candidate
positions, slot by slot), the logging policy's propensity of each slot given the slots above it, and a
reward per slot. For a candidate policy π with slot distributions ``π(a | slots above)`` the estimators
are, per impression, with ``w_j = Π_{l≤j} π(a_l | …) / Π_{l≤j} π₀(a_l | …)`` (the *cascade* weight of
the first ``j`` slots) and ``W = w_k`` (the slate weight):

- ``dm``: Σ_j q̂(a_j, j) over slates drawn from π (q̂: a ridge regression of the reward on the features
  and the slot, fitted on the log);
- ``ips`` (position-wise, cascade): Σ_j w_j r_j; ``ips-slate``: W Σ_j r_j;
- ``snips`` / ``snips-slate``: the same normalised by the mean weight (per slot, or per slate);
- ``dr`` (cascade doubly robust, Kiyohara et al. WSDM 2022):
  Σ_j [w_j (r_j − q̂(a_j, j)) + w_{j−1} Σ_a π(a | …) q̂(a, j)];
- ``dr-clipped``: ``dr`` with every weight clipped at ``clip`` (biased, lower variance);
- ``switch-dr`` (Wang, Agarwal & Dudík, ICML 2017, per slot): a slot whose cascade weight ``w_j`` is at
  most ``switch`` contributes its ``dr`` term, one above it the direct method's value of that slot
  (``switch`` = ∞ gives ``dr``, 0 gives ``dm``).

The cascade estimators are unbiased when a slot's reward depends on the slate only through the slots
above it and itself (true under the position-based click model); ``ips-slate`` needs no assumption.
Every estimate has a bootstrap confidence interval, and the weights' effective sample size is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from avrec.errors import DataError
from avrec.policies.base import SlatePolicy

ESTIMATORS = ("dm", "ips", "snips", "dr", "dr-clipped", "switch-dr", "ips-slate", "snips-slate")


@dataclass
class LoggedImpression:
    """One logged slate: ``shown`` indexes the candidate arrays; ``pscores`` are the logging propensities."""

    candidate_ids: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    shown: np.ndarray
    pscores: np.ndarray
    rewards: np.ndarray
    user_id: str = ""

    def check(self, n: int) -> None:
        k = len(self.shown)
        if not (len(self.pscores) == len(self.rewards) == k):
            raise DataError(f"impression {n}: shown, pscores and rewards differ in length")
        if len(self.scores) != len(self.candidate_ids) or len(self.features) != len(self.scores):
            raise DataError(f"impression {n}: candidate ids, scores and features differ in length")
        if k and (self.shown.min() < 0 or self.shown.max() >= len(self.scores)):
            raise DataError(f"impression {n}: a shown position is not among its candidates")
        if ((self.pscores <= 0) | (self.pscores > 1 + 1e-9)).any():
            raise DataError(f"impression {n}: pscore must be in (0, 1]")


class RewardModel:
    """Ridge regression of the reward on [features, one-hot slot]: the q̂ of DM and DR."""

    def __init__(self, logs: Sequence[LoggedImpression], n_slots: int, ridge: float = 1.0) -> None:
        self.n_slots = n_slots
        rows, ys = [], []
        for imp in logs:
            for j, (i, r) in enumerate(zip(imp.shown, imp.rewards)):
                rows.append(self._x(imp.features[i][None, :], j)[0])
                ys.append(r)
        if not rows:
            raise DataError("no logged slots to evaluate on")
        X, y = np.asarray(rows), np.asarray(ys, dtype=np.float64)
        self.coef = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ y)

    def _x(self, features: np.ndarray, slot: int) -> np.ndarray:
        onehot = np.zeros((len(features), self.n_slots))
        onehot[:, min(slot, self.n_slots - 1)] = 1.0
        return np.hstack([features, onehot])

    def predict(self, features: np.ndarray, slot: int) -> np.ndarray:
        """q̂ of every row of ``features`` at ``slot`` (clipped to the rewards' range [0, 1])."""
        return np.clip(self._x(features, slot) @ self.coef, 0.0, 1.0)


@dataclass
class Contributions:
    """Per-impression arrays from which every estimator (and its bootstrap) is computed."""

    rewards: np.ndarray  # (n, K) logged rewards, 0 at padding
    mask: np.ndarray  # (n, K) slot present
    w: np.ndarray  # (n, K) cascade weights
    q_shown: np.ndarray  # (n, K) q̂ at the logged item
    q_target: np.ndarray  # (n, K) E_π q̂ at the slot given the logged prefix
    dm: np.ndarray  # (n,)
    dm_slots: np.ndarray  # (n, K) the direct method's value of each slot (``dm`` is their sum)
    unsupported: np.ndarray  # (n,) target mass on items never shown in the log


def contributions(logs: Sequence[LoggedImpression], target: SlatePolicy, q: RewardModel | Callable | None = None,
                  seed: int = 0, dm_samples: int = 8,
                  rescore: Callable[[LoggedImpression], tuple[np.ndarray, np.ndarray]] | None = None) -> Contributions:
    """Evaluate ``target`` slot by slot on every impression (``rescore``: new scores and features, for a
    candidate model). ``q``: a :class:`RewardModel` or ``q(features, slot) -> rewards``."""
    if not logs:
        raise DataError("no logged impressions to evaluate on")
    K = max(len(imp.shown) for imp in logs)
    qm = q if q is not None else RewardModel(logs, max(K, 1))
    predict = qm.predict if isinstance(qm, RewardModel) else qm
    rng = np.random.default_rng(seed)
    shown_ids = {str(imp.candidate_ids[i]) for imp in logs for i in imp.shown}
    n = len(logs)
    out = Contributions(np.zeros((n, K)), np.zeros((n, K)), np.zeros((n, K)), np.zeros((n, K)), np.zeros((n, K)),
                        dm=np.zeros(n), dm_slots=np.zeros((n, K)), unsupported=np.zeros(n))
    for r, imp in enumerate(logs):
        imp.check(r)
        scores, feats = rescore(imp) if rescore is not None else (imp.scores, imp.features)
        k = len(imp.shown)
        dist = target.slot_distributions(scores, feats, imp.shown, rng)
        pe = dist[np.arange(k), imp.shown]
        w = np.cumprod(pe) / np.cumprod(imp.pscores)
        out.rewards[r, :k], out.mask[r, :k], out.w[r, :k] = imp.rewards, 1.0, w
        for j in range(k):
            qa = predict(feats, j)
            out.q_shown[r, j] = qa[imp.shown[j]]
            out.q_target[r, j] = dist[j] @ qa
        for _ in range(dm_samples):
            slate = target.choose(scores, feats, k, rng)
            for j, i in enumerate(slate.items):
                out.dm_slots[r, j] += predict(feats[[i]], j)[0] / dm_samples
        out.dm[r] = out.dm_slots[r].sum()
        never = np.array([str(c) not in shown_ids for c in imp.candidate_ids])
        out.unsupported[r] = float((dist[:, never].sum(axis=1)).mean()) if k else 0.0
    return out


def _values(c: Contributions, idx: np.ndarray, clip: float, switch: float | None = None) -> dict[str, float]:
    """Every estimator on the impressions ``idx`` (a bootstrap resample or all of them); ``switch``
    (default ``clip``) is switch-dr's weight threshold."""
    r, m, w = c.rewards[idx], c.mask[idx], c.w[idx]
    n = len(idx)
    w_prev = np.hstack([np.ones((n, 1)), w[:, :-1]])
    slate_w = np.array([row[int(mk.sum()) - 1] if mk.sum() else 0.0 for row, mk in zip(w, m)])
    total = (r * m).sum(axis=1)
    den = (w * m).sum(axis=0)
    wc, wpc = np.minimum(w, clip), np.minimum(w_prev, clip)
    dr_terms = w * (r - c.q_shown[idx]) + w_prev * c.q_target[idx]
    tau = clip if switch is None else switch
    return {
        "dm": float(c.dm[idx].mean()),
        "ips": float((w * r * m).sum(axis=1).mean()),
        "snips": float(sum((w[:, j] * r[:, j]).sum() / den[j] for j in range(w.shape[1]) if den[j] > 0)),
        "dr": float(((w * (r - c.q_shown[idx]) + w_prev * c.q_target[idx]) * m).sum(axis=1).mean()),
        "dr-clipped": float(((wc * (r - c.q_shown[idx]) + wpc * c.q_target[idx]) * m).sum(axis=1).mean()),
        "switch-dr": float((np.where(w <= tau, dr_terms, c.dm_slots[idx]) * m).sum(axis=1).mean()),
        "ips-slate": float((slate_w * total).mean()),
        "snips-slate": float((slate_w * total).sum() / slate_w.sum()) if slate_w.sum() > 0 else float("nan"),
    }


def effective_sample_size(w: np.ndarray) -> float:
    """(Σ w)² / Σ w²: how many impressions the weighted estimate is worth."""
    w = np.asarray(w, dtype=np.float64)
    s2 = float((w ** 2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def estimate(c: Contributions, clip: float = 10.0, n_boot: int = 200, level: float = 0.95,
             seed: int = 0, switch: float | None = None) -> dict[str, dict[str, float]]:
    """Each estimator's value with a percentile bootstrap interval (resampling impressions)."""
    n = len(c.dm)
    every = np.arange(n)
    point = _values(c, every, clip, switch)
    rng = np.random.default_rng(seed)
    boots = [_values(c, rng.integers(0, n, n), clip, switch) for _ in range(n_boot)]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for name in ESTIMATORS:
        vals = np.array([b[name] for b in boots])
        vals = vals[np.isfinite(vals)]
        out[name] = {"value": point[name],
                     "ci_low": float(np.percentile(vals, lo)) if len(vals) else float("nan"),
                     "ci_high": float(np.percentile(vals, hi)) if len(vals) else float("nan")}
    return out


def summary(c: Contributions, clip: float = 10.0, n_boot: int = 200, seed: int = 0,
            switch: float | None = None) -> dict:
    """Estimates, the logging policy's observed value, effective sample sizes and support."""
    n = len(c.dm)
    slate_w = np.array([row[int(mk.sum()) - 1] if mk.sum() else 0.0 for row, mk in zip(c.w, c.mask)])
    ess_slots = [effective_sample_size(c.w[c.mask[:, j] > 0, j]) for j in range(c.w.shape[1])]
    return {
        "impressions": n,
        "logged_value": float((c.rewards * c.mask).sum(axis=1).mean()),
        "estimates": estimate(c, clip=clip, n_boot=n_boot, seed=seed, switch=switch),
        "ess_slate": effective_sample_size(slate_w),
        "ess_first_slot": ess_slots[0] if ess_slots else 0.0,
        "ess_last_slot": ess_slots[-1] if ess_slots else 0.0,
        "unsupported_mass": float(c.unsupported.mean()),
        "clip": clip,
        "switch": clip if switch is None else switch,
    }
