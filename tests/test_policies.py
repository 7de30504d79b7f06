"""Slate policies: exact propensities, seeding, persistence, position bias and off-policy estimators."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from avrec.errors import ConfigError, DataError
from avrec.policies import POLICIES, PolicyConfig, load_policy, make_policy
from avrec.policies.clicks import estimate_examination, geometric_examination
from avrec.policies.ope import LoggedImpression, contributions, effective_sample_size, summary
from avrec.policies.rewards import RewardConfig

RNG = np.random.default_rng(0)
SCORES = np.array([2.0, 1.5, 1.4, 0.2, -0.5, -1.0])
FEATS = np.column_stack([np.ones(6), SCORES, RNG.normal(size=6), 1 / (1 + np.arange(6)), RNG.normal(size=6)])


def trained(name: str, **kw):
    p = make_policy(PolicyConfig(name=name, **kw))
    if p.learns:
        p.update(FEATS, np.array([1, 0, 1, 0, 0, 1.0]), geometric_examination(6))
    return p


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_slot_distributions_sum_to_one_and_match_the_logged_propensity(name):
    p = trained(name)
    slate = p.choose(SCORES, FEATS, 4, np.random.default_rng(3))
    assert len(set(slate.items)) == 4
    dist = p.slot_distributions(SCORES, FEATS, slate.items, np.random.default_rng(3))
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    for j in range(1, 4):  # an item already shown has probability 0 later on
        assert dist[j, slate.items[:j]].sum() == 0
    # the same seed and state give the same plan, so the logged propensities are the slot probabilities
    np.testing.assert_allclose(dist[np.arange(4), slate.items], slate.propensities)
    again = p.choose(SCORES, FEATS, 4, np.random.default_rng(3))
    assert (again.items == slate.items).all()


def test_greedy_is_the_score_order_with_propensity_one():
    s = make_policy("greedy").choose(SCORES, FEATS, 3, np.random.default_rng(0))
    assert s.items.tolist() == [0, 1, 2] and s.probability == 1.0 and not s.explored.any()


def test_softmax_propensities_are_plackett_luce_and_match_sampling():
    p = make_policy(PolicyConfig(name="softmax", temperature=0.7))
    z = (SCORES - SCORES.mean()) / SCORES.std() / 0.7
    e = np.exp(z)
    exact = e[2] / e.sum() * e[0] / (e.sum() - e[2])  # slate (2, 0)
    dist = p.slot_distributions(SCORES, FEATS, np.array([2, 0]), np.random.default_rng(0))
    assert dist[0, 2] * dist[1, 0] == pytest.approx(exact)
    rng = np.random.default_rng(1)
    hits = sum(tuple(p.choose(SCORES, FEATS, 2, rng).items) == (2, 0) for _ in range(20000))
    assert hits / 20000 == pytest.approx(exact, abs=0.01)


def test_epsilon_explores_only_the_allowed_slots():
    p = make_policy(PolicyConfig(name="epsilon", epsilon=1.0, explore_slots=[3]))
    for seed in range(20):
        s = p.choose(SCORES, FEATS, 3, np.random.default_rng(seed))
        assert s.items[:2].tolist() == [0, 1] and s.propensities[:2].tolist() == [1.0, 1.0]
        assert s.propensities[2] == pytest.approx(1 / 4)


def test_linear_policy_learns_and_round_trips(tmp_path):
    p = make_policy(PolicyConfig(name="thompson", seed=5))
    good = FEATS.copy()
    for _ in range(200):  # item 4's last feature predicts the reward
        p.update(good, (good[:, 4] > 0.5).astype(float))
    theta, _ = p.posterior(5)
    assert theta[4] > 0.3
    p.save(tmp_path / "policy")
    q, meta = load_policy(tmp_path / "policy")
    assert q.name == "thompson" and q.version == p.version and meta["version"] == p.version
    a = p.choose(SCORES, FEATS, 3, np.random.default_rng(9))
    b = q.choose(SCORES, FEATS, 3, np.random.default_rng(9))
    assert (a.items == b.items).all() and np.allclose(a.propensities, b.propensities)
    with pytest.raises(DataError, match="saved policy is 'thompson'"):
        load_policy(tmp_path / "policy", PolicyConfig(name="linucb"))


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="unknown policy 'ucb'"):
        make_policy("ucb")
    with pytest.raises(ConfigError, match="epsilon"):
        make_policy({"name": "epsilon", "epsilon": 2})
    with pytest.raises(ConfigError, match="unknown setting 'eps'"):
        make_policy({"name": "epsilon", "eps": 0.1})


def test_rewards_follow_the_config():
    r = RewardConfig(skip=-0.0, rating_threshold=4)
    assert r.reward("like", None) == 1 and r.reward("skip", None) == 0
    assert r.reward("play", 0.25) == 0.25 and r.reward("play", None) == 1
    assert r.reward("rate", 4.0) == 1 and r.reward("rate", 3.5) == 0


def test_position_based_model_recovers_examination():
    rng = np.random.default_rng(0)
    kappa, gamma = np.array([1.0, 0.6, 0.3]), rng.uniform(0.1, 0.9, 20)
    items = rng.integers(0, 20, 30000)
    pos = rng.integers(0, 3, 30000)  # an exploring log: every item at every slot
    clicks = (rng.random(30000) < kappa[pos] * gamma[items]).astype(float)
    k_hat, _ = estimate_examination(items, pos, clicks, 3)
    np.testing.assert_allclose(k_hat, kappa, atol=0.05)


# ---- off-policy estimators on an exact small case -------------------------------------------------
GAMMA = np.array([0.9, 0.2, 0.5, 0.7])
KAPPA = np.array([1.0, 0.5])
F4 = np.column_stack([np.ones(4), [1.0, 0.5, 0.0, -0.5], [0.1, 0.3, -0.2, 0.9], np.zeros(4), np.zeros(4)])
S4 = np.array([1.0, 0.5, 0.0, -0.5])


def _slates(policy):
    """Every ordered slate of 2 out of 4 with its probability under ``policy``."""
    for s in itertools.permutations(range(4), 2):
        d = policy.slot_distributions(S4, F4, np.array(s), np.random.default_rng(0))
        yield np.array(s), d[0, s[0]] * d[1, s[1]]


def _true_value(policy):
    return sum(p * sum(KAPPA[j] * GAMMA[a] for j, a in enumerate(s)) for s, p in _slates(policy))


@pytest.mark.parametrize("target", ["epsilon", "greedy", "linucb"])
def test_ips_and_dr_are_exactly_unbiased(target):
    logging = make_policy(PolicyConfig(name="softmax", temperature=2.0))
    tgt = trained(target) if target != "linucb" else make_policy("linucb")
    slates = list(_slates(logging))
    assert sum(p for _, p in slates) == pytest.approx(1.0)
    logs = [LoggedImpression(np.arange(4).astype(str), S4, F4, s,
                             logging.slot_distributions(S4, F4, s, np.random.default_rng(0))[[0, 1], s],
                             KAPPA * GAMMA[s]) for s, _ in slates]  # expected rewards: estimators are linear in r
    c = contributions(logs, tgt, q=lambda x, j: 0.2 + 0.1 * x[:, 2] + 0.05 * j, dm_samples=1)
    probs = np.array([p for _, p in slates])
    w_prev = np.hstack([np.ones((len(logs), 1)), c.w[:, :-1]])
    ips = (c.w * c.rewards).sum(axis=1)
    dr = (c.w * (c.rewards - c.q_shown) + w_prev * c.q_target).sum(axis=1)
    slate_ips = c.w[:, -1] * c.rewards.sum(axis=1)
    truth = _true_value(tgt)
    assert probs @ ips == pytest.approx(truth)
    assert probs @ dr == pytest.approx(truth)
    assert probs @ slate_ips == pytest.approx(truth)
    out = summary(c, n_boot=20)
    assert out["estimates"]["ips"]["ci_low"] <= out["estimates"]["ips"]["ci_high"]
    assert 0 < out["ess_slate"] <= len(logs)


def test_effective_sample_size():
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size(np.r_[np.zeros(9), 1.0]) == pytest.approx(1)


def test_bad_log_is_named():
    imp = LoggedImpression(np.array(["a", "b"]), np.zeros(2), np.zeros((2, 5)), np.array([0]), np.array([0.0]),
                           np.array([1.0]))
    with pytest.raises(DataError, match="impression 0: pscore"):
        contributions([imp], make_policy("greedy"))
