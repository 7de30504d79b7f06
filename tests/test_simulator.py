"""The simulator on a small synthetic world: seeded, the oracle bounds every policy, new items are released."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from avrec.policies import PolicyConfig, make_policy
from avrec.policies.simulator import SimConfig, World, calibrate, run_policy, true_value


def small_world() -> World:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3, 60)  # 60 items in 3 genres, 80 users who each like one genre
    taste = rng.integers(0, 3, 80)
    p = np.where(groups[None, :] == taste[:, None], 0.5, 0.05)
    X = sp.csr_matrix((rng.random((80, 60)) < p).astype(np.float64))
    content = np.eye(3)[groups]
    return World(X, content, SimConfig(n_items=60, rounds=6, users_per_round=10, k=4, n_candidates=12, n_new=3,
                                       refit_every=2, l2=10.0))


def test_simulation_is_seeded_and_bounded_by_the_oracle():
    w = small_world()
    assert w.is_new.sum() == 12 and w.release[w.is_new].min() >= 1 and (w.release[~w.is_new] == 0).all()
    a = run_policy(w, make_policy(PolicyConfig(name="thompson", seed=1)), seed=1)
    b = run_policy(w, make_policy(PolicyConfig(name="thompson", seed=1)), seed=1)
    assert a == b
    for name in ("greedy", "epsilon"):
        r = run_policy(w, make_policy(name), seed=1)
        assert all(e <= o + 1e-9 for e, o in zip(r["expected"], r["oracle"]))
        assert 0 < r["coverage"] <= 1 and 0 <= r["gini"] <= 1


def test_true_value_of_the_logging_policy_matches_its_expected_reward():
    w = small_world()
    logged: list = []
    policy = make_policy(PolicyConfig(name="softmax", seed=2))
    res = run_policy(w, policy, seed=2, log=logged, learn=False)
    value = true_value(logged, make_policy(PolicyConfig(name="softmax", seed=2)), samples=40)
    assert abs(value - np.mean(res["expected"]) / 10) < 0.15 * value


def test_calibration_recovers_a_logistic_link():
    rng = np.random.default_rng(0)
    s = rng.normal(size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(-1 + 2 * s)))).astype(float)
    a, b = calibrate(s, y)
    assert abs(a + 1) < 0.1 and abs(b - 2) < 0.15
