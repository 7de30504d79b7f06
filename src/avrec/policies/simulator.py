"""Interactive evaluation: users and items from a real dataset, a known click model standing in for their
preferences, new releases over time, and a recommender that learns from what it shows.

- **Truth**: EASE (closed form, ``B = I − P / diag(P)``, ``P = (XᵀX + λI)⁻¹``; the same model as avrec's
  ``ease``) fitted on *all* interactions, its standardised scores mapped to click probabilities by a
  logistic regression of "the user interacted with the item" on them (calibration). A shown item is
  clicked with probability ``κ_j · p(u, i)`` (position-based model, ``κ_j = decay^j``).
- **Learner**: EASE fitted on half of each user's interactions with the items already released; refitted
  every ``refit_every`` rounds with the clicks collected so far, so a policy's exploration feeds the model.
- **New releases**: ``new_share`` of the items are unknown at the start and released at even intervals
  over the first ``release_until`` share of the rounds; they join the candidate pool through a content
  retriever (genre and tag cosine to the user's history), since the learner cannot score them yet.
- Each round ``users_per_round`` users arrive; a policy picks ``k`` of ``n_candidates`` (the learner's top
  items plus ``n_new`` new releases) and learns from the clicks (:meth:`SlatePolicy.update`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from avrec.policies.base import SlatePolicy
from avrec.policies.clicks import geometric_examination
from avrec.policies.features import feature_matrix, kg_overlap
from avrec.policies.ope import LoggedImpression


def ease(X: sp.csr_matrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix of a (users, items) interaction matrix."""
    G = (X.T @ X).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += l2
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    B[np.diag_indices_from(B)] = 0.0
    return B


def calibrate(scores: np.ndarray, labels: np.ndarray, iterations: int = 25) -> tuple[float, float]:
    """(a, b) of ``P(label) = sigmoid(a + b·score)`` by Newton's method."""
    w = np.zeros(2)
    X = np.column_stack([np.ones(len(scores)), scores])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-X @ w))
        H = X.T @ (X * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        w -= np.linalg.solve(H, X.T @ (p - labels))
    return float(w[0]), float(w[1])


@dataclass
class SimConfig:
    """Settings of one simulation (see the module docstring)."""

    n_items: int = 1500
    new_share: float = 0.2
    train_share: float = 0.5
    rounds: int = 40
    users_per_round: int = 60
    k: int = 10
    n_candidates: int = 50
    n_new: int = 10
    refit_every: int = 5
    release_until: float = 0.5
    l2: float = 200.0
    decay: float = 0.85
    seed: int = 0
    extra: dict = field(default_factory=dict)


class World:
    """The fixed part of a simulation: truth, content vectors, the release schedule, the start data."""

    def __init__(self, matrix: sp.csr_matrix, content: np.ndarray, config: SimConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        pop = np.asarray(matrix.sum(axis=0)).ravel()
        keep = np.sort(np.argsort(-pop, kind="stable")[: c.n_items])
        X = (matrix[:, keep] > 0).astype(np.float64).tocsr()
        X = X[np.asarray(X.sum(axis=1)).ravel() >= 4]
        self.n_users, self.n_items = X.shape
        unit = content[keep] / np.maximum(np.linalg.norm(content[keep], axis=1, keepdims=True), 1e-12)
        self.content = unit
        #: item × entity indicators (the genres and tags behind ``content``): the kg_overlap feature
        self.entities = sp.csr_matrix((content[keep] > 0).astype(np.float32))
        raw = X @ ease(X, c.l2)
        z = (raw - raw.mean(axis=1, keepdims=True)) / np.maximum(raw.std(axis=1, keepdims=True), 1e-12)
        a, b = calibrate(z.ravel()[:: max(1, z.size // 400_000)], X.toarray().ravel()[:: max(1, z.size // 400_000)])
        self.truth = 1 / (1 + np.exp(-(a + b * z)))
        self.is_new = np.zeros(self.n_items, dtype=bool)
        self.is_new[rng.choice(self.n_items, int(c.new_share * self.n_items), replace=False)] = True
        new = np.flatnonzero(self.is_new)
        rng.shuffle(new)
        self.release = np.zeros(self.n_items, dtype=np.int64)
        self.release[new] = 1 + (np.arange(len(new)) * max(1, int(c.release_until * c.rounds)) // max(1, len(new)))
        coo = X.tocoo()
        train = (rng.random(len(coo.row)) < c.train_share) & ~self.is_new[coo.col]
        self.start = sp.csr_matrix((np.ones(train.sum()), (coo.row[train], coo.col[train])), shape=X.shape)
        self.arrivals = rng.integers(0, self.n_users, (c.rounds, c.users_per_round))
        self.kappa = geometric_examination(c.k, c.decay)


def run_policy(world: World, policy: SlatePolicy, seed: int = 0, log: list | None = None,
               learn: bool = True) -> dict:
    """Simulate ``policy`` on ``world``; per-round metrics (and the impressions in ``log`` when given)."""
    c = world.config
    rng = np.random.default_rng(seed)
    data = world.start.tolil()
    B = ease(world.start.tocsr(), c.l2)
    shown_count = np.zeros(world.n_items)
    out: dict[str, list] = {k: [] for k in ("reward", "expected", "oracle", "new_reward")}
    for t in range(c.rounds):
        if learn and t and t % c.refit_every == 0:
            B = ease(data.tocsr(), c.l2)
        X = data.tocsr()
        released = world.release <= t
        interactions = np.asarray(X.sum(axis=0)).ravel()
        logs = np.log1p(interactions[released])
        stats = (float(logs.mean()), float(logs.std()))
        r_round = e_round = o_round = n_round = 0.0
        feats_all, rew_all, kap_all = [], [], []
        for u in world.arrivals[t]:
            hist = X[u].indices
            scores = np.asarray(X[u] @ B).ravel()
            allowed = released.copy()
            allowed[hist] = False
            warm = np.flatnonzero(allowed & ~world.is_new)
            top = warm[np.argsort(-scores[warm], kind="stable")[: c.n_candidates - c.n_new]]
            profile = world.content[hist].mean(axis=0) if len(hist) else np.zeros(world.content.shape[1])
            fresh = np.flatnonzero(allowed & world.is_new)
            sim_all = world.content @ profile
            fresh = fresh[np.argsort(-sim_all[fresh], kind="stable")[: c.n_new]]
            cand = np.r_[top, fresh]
            sc = scores[cand]
            x = feature_matrix(sc, interactions[cand], sim_all[cand], *stats, kg_overlap(world.entities, cand, hist))
            slate = policy.choose(sc, x, c.k, rng)
            items = cand[slate.items]
            p = world.truth[u, items]
            kap = world.kappa[: len(items)]
            clicks = (rng.random(len(items)) < kap * p).astype(float)
            best = np.sort(world.truth[u, cand])[::-1][: len(items)]
            r_round += clicks.sum()
            e_round += float(kap @ p)
            o_round += float(kap @ best)
            n_round += float(clicks[world.is_new[items]].sum())
            shown_count[items] += 1
            for i in items[clicks > 0]:
                data[u, i] = 1.0
            feats_all.append(x[slate.items])
            rew_all.append(clicks)
            kap_all.append(kap)
            if log is not None:
                log.append((LoggedImpression(cand.astype(str), sc, x, slate.items, slate.propensities, clicks,
                                             str(u)), world.truth[u, cand], kap))
        if learn and policy.learns:
            policy.update(np.vstack(feats_all), np.concatenate(rew_all), np.concatenate(kap_all))
        for key, v in zip(("reward", "expected", "oracle", "new_reward"), (r_round, e_round, o_round, n_round)):
            out[key].append(v)
    counts = np.sort(shown_count)
    n = len(counts)
    gini = float((2 * np.arange(1, n + 1) - n - 1) @ counts / (n * counts.sum())) if counts.sum() else 0.0
    return {**out, "coverage": float((shown_count > 0).mean()), "gini": gini,
            "new_shown_share": float(shown_count[world.is_new].sum() / max(shown_count.sum(), 1))}


def true_value(logged: list, policy: SlatePolicy, seed: int = 0, samples: int = 20) -> float:
    """A policy's expected reward per list on the contexts of ``logged`` (truth and κ known), by sampling."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for imp, truth, kap in logged:
        for _ in range(samples):
            s = policy.choose(imp.scores, imp.features, len(imp.shown), rng)
            total += float(kap[: len(s.items)] @ truth[s.items])
    return total / (len(logged) * samples)
