"""Issue 14 §6 and smaller gaps: switch-DR's limits, per-policy counters in /metrics, the dashboard's data
(impressions and reward rate per policy over time, coverage, versions, latest OPE) and the web page's
explored slots with their impression id."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_fixtures import fit_tiny
from test_policies import F4, GAMMA, KAPPA, S4, _slates, trained

from avrec.cli import main
from avrec.policies import PolicyConfig, make_policy
from avrec.policies.ope import LoggedImpression, _values, contributions
from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app
from avrec.serve.policy_stats import gini

H = {"X-API-Key": "k"}


def test_switch_dr_is_dr_with_no_threshold_and_dm_with_zero():
    logging = make_policy(PolicyConfig(name="softmax", temperature=2.0))
    logs = [LoggedImpression(np.arange(4).astype(str), S4, F4, s,
                             logging.slot_distributions(S4, F4, s, np.random.default_rng(0))[[0, 1], s],
                             KAPPA * GAMMA[s]) for s, _ in _slates(logging)]
    c = contributions(logs, trained("epsilon"), q=lambda x, j: 0.2 + 0.1 * x[:, 2] + 0.05 * j, dm_samples=4)
    every = np.arange(len(logs))
    assert c.dm_slots.sum(axis=1) == pytest.approx(c.dm)
    big, zero = _values(c, every, 10.0, np.inf), _values(c, every, 10.0, 0.0)
    assert big["switch-dr"] == pytest.approx(big["dr"])
    assert zero["switch-dr"] == pytest.approx(zero["dm"])
    assert big["dr"] != pytest.approx(big["dm"])  # the two limits differ here, so the switch matters


def test_gini():
    assert gini(np.ones(5)) == pytest.approx(0.0)
    assert gini(np.r_[np.zeros(9), 3.0]) == pytest.approx(0.9)


@pytest.fixture()
def served(tmp_path):
    folder = fit_tiny(tmp_path / "model", "itemknn")
    store = EventStore(tmp_path / "e.sqlite3")
    config = ServeConfig(api_key="k", search=False, watch_interval=0, policy="epsilon")
    config.exploration.epsilon, config.exploration.explore_slots = 1.0, [3]
    service = RecommenderService(folder, store, config)
    with TestClient(create_app(service, watch=False)) as c:
        yield c, service, tmp_path / "e.sqlite3"
    store.close()


def test_metrics_and_dashboard_count_impressions_and_rewards_per_policy(served):
    c, service, store_path = served
    lists = [c.get("/recommend", params={"user_id": f"u{u}", "k": 4}).json() for u in range(4)]
    assert all(sum(it["explored"] for it in r["items"]) == 1 for r in lists)  # slot 3 always explores
    for r in lists[:3]:
        it = r["items"][0]
        assert c.post("/feedback", headers=H, json={"user_id": r["user_id"], "item_id": it["item_id"],
                                                    "event": "like", "impression_id": r["impression_id"]}
                      ).status_code == 200
    r = lists[3]
    c.post("/feedback", headers=H, json={"user_id": "u3", "item_id": r["items"][1]["item_id"], "event": "skip",
                                          "impression_id": r["impression_id"]})
    c.get("/similar/s1", params={"k": 3})  # logged as greedy
    text = c.get("/metrics").text
    assert 'avrec_impressions_total{policy="epsilon"} 4' in text
    assert 'avrec_impressions_total{policy="greedy"} 1' in text
    assert 'avrec_impression_slots_total{policy="epsilon"} 16' in text
    assert 'avrec_explored_slots_total{policy="epsilon"} 4' in text
    assert 'avrec_rewarded_slots_total{policy="epsilon"} 3' in text
    assert 'avrec_reward_rate{policy="epsilon"} 0.1875' in text  # 3 likes over 16 shown slots
    data = c.get("/dashboard/data", params={"bucket": 3600}).json()
    eps = data["policies"]["epsilon"]
    assert (eps["impressions"], eps["slots"], eps["reward"], eps["reward_rate"]) == (4, 16, 3.0, 0.1875)
    assert sum(s["impressions"] for s in data["series"] if s["policy"] == "epsilon") == 4
    assert {s["policy"] for s in data["series"]} == {"epsilon", "greedy"}
    cov = data["coverage"]
    shown = {it["item_id"] for r in lists for it in r["items"]} | {it["item_id"] for it in
                                                                  service.explorer.impressions.get(
                                                                      c.get("/similar/s1", params={"k": 3}).json()[
                                                                          "impression_id"]).items}
    assert cov["items_shown"] == len(shown) and cov["catalog_items"] == 40
    assert cov["coverage"] == pytest.approx(len(shown) / 40, abs=1e-6) and 0 < cov["gini"] < 1
    assert data["versions"]["versioned"] is False and data["ope"] is None
    assert c.get("/dashboard/data", params={"bucket": 5}).status_code == 422
    # avrec ope on the store keeps its estimates there for the dashboard
    assert main(["ope", str(store_path), "--policy", "greedy", "--bootstrap", "10"]) == 0
    ope = c.get("/dashboard/data").json()["ope"]
    assert ope["impressions"] == 4 and "switch-dr" in ope["policies"]["greedy"]["estimates"]
    assert main(["ope", str(store_path), "--policy", "greedy", "--model-version", "v0042"]) == 2
    page = c.get("/dashboard")
    assert page.status_code == 200 and "dashboard.js" in page.text


def test_kg_overlap_feature_is_the_share_of_a_candidates_entities_the_history_names(tmp_path):
    from avrec.models.base import Recommender
    from avrec.policies.features import FEATURE_NAMES, FeatureBuilder

    model = Recommender.load(fit_tiny(tmp_path / "m", "itemknn"))
    idx = model.items_to_index(["s5", "r5", "s6"])
    x = FeatureBuilder(model).build(idx, np.array([1.0, 0.5, 0.2]), model.items_to_index(["s0", "s1"]))
    kg = x[:, FEATURE_NAMES.index("kg_overlap")]
    assert kg[0] == pytest.approx(1.0) and kg[2] == pytest.approx(1.0)  # same genres, tags and decade
    assert 0 < kg[1] < 0.5  # a romance title shares only the decade
    assert (FeatureBuilder(model).build(idx, np.zeros(3), [])[:, -1] == 0).all()  # no history, no overlap


def test_pipeline_policy_setting_runs_as_its_last_stage_and_is_served(tmp_path):
    from serve_fixtures import fit_tiny_pipeline

    from avrec.errors import ConfigError
    from avrec.models.base import Recommender
    from avrec.policies.stage import PolicyStage, attach_policy

    folder = fit_tiny_pipeline(tmp_path / "pipe")
    model = Recommender.load(folder)
    assert attach_policy(model) is None  # no policy setting: nothing attached
    model.config.policy = {"name": "epsilon", "epsilon": 1.0, "explore_slots": [2], "candidates": 8}
    model.save(tmp_path / "pipe2")
    loaded = Recommender.load(tmp_path / "pipe2")
    stage = attach_policy(loaded)
    assert isinstance(stage, PolicyStage) and loaded.extra_stages[-1] is stage
    loaded.recommend(["u1", "u20"], k=4)
    assert [s.explored.tolist() for s in stage.last_slates] == [[False, True, False, False]] * 2
    store = EventStore(tmp_path / "e.sqlite3")
    service = RecommenderService(tmp_path / "pipe2", store, ServeConfig(search=False, watch_interval=0,
                                                                        policy="model"))
    assert service.health()["policy"]["name"] == "epsilon"
    with pytest.raises(ConfigError, match="no policy setting"):
        RecommenderService(folder, store, ServeConfig(search=False, watch_interval=0, policy="model"))
    with pytest.raises(ConfigError, match="explore_endpoints"):
        ServeConfig(explore_endpoints=["bogus"])
    store.close()


def test_similar_and_search_explore_when_configured(tmp_path):
    folder = fit_tiny(tmp_path / "model", "itemknn")
    store = EventStore(tmp_path / "e.sqlite3")
    config = ServeConfig(api_key="k", search=False, watch_interval=0, policy="epsilon",
                         explore_endpoints=["recommend", "similar"])
    config.exploration.epsilon, config.exploration.explore_slots = 1.0, [2]
    service = RecommenderService(folder, store, config)
    with TestClient(create_app(service, watch=False)) as c:
        r = c.get("/similar/s1", params={"k": 4}).json()
        assert r["policy"] == "epsilon" and [it["explored"] for it in r["items"]] == [False, True, False, False]
        imp = service.explorer.impressions.get(r["impression_id"])
        assert len(imp.candidates["item_ids"]) > 4  # chosen from a wider pool, all of it logged
    store.close()
