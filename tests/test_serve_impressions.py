"""Impressions: logged with propensities, joined to feedback, exported, replayed into the policy on restart,
and durable under SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serve_fixtures import SCIFI, fit_tiny

from avrec.policies import PolicyConfig
from avrec.serve.config import ServeConfig
from avrec.serve.impressions import ImpressionLog
from avrec.serve.service import RecommenderService
from avrec.serve.store import EventStore

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from avrec.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("imp") / "model")


def make(model_dir: Path, store: EventStore, policy: str = "thompson") -> tuple[RecommenderService, TestClient]:
    cfg = ServeConfig(insecure_dev=True, search=False, policy=policy, exploration=PolicyConfig(candidates=20, seed=3))
    service = RecommenderService(model_dir, store, cfg)
    return service, TestClient(create_app(service, watch=False))


def test_impressions_are_logged_joined_and_replayed(model_dir, tmp_path):
    store = EventStore(tmp_path / "events.sqlite3")
    service, client = make(model_dir, store)
    r = client.get("/recommend", params={"user_id": "u1", "k": 5}).json()
    assert r["policy"] == "thompson" and len(r["items"]) == 5
    probs = [it["propensity"] for it in r["items"]]
    assert all(0 < p <= 1 for p in probs)
    imp = ImpressionLog(store).get(r["impression_id"])
    assert imp is not None and [it["item_id"] for it in imp.items] == [it["item_id"] for it in r["items"]]
    assert len(imp.candidates["item_ids"]) == 20 and np.asarray(imp.candidates["features"]).shape == (20, 6)
    liked = r["items"][2]["item_id"]
    ok = client.post("/feedback", json={"user_id": "u1", "item_id": liked, "event": "like",
                                        "impression_id": r["impression_id"]})
    assert ok.status_code == 200
    assert store.events()[-1].position == 2 and store.events()[-1].impression_id == r["impression_id"]
    assert client.post("/feedback", json={"user_id": "u1", "item_id": "s1", "event": "like"}).status_code == 200
    # bad joins are named, and nothing is stored for them
    before = store.count_events()
    bad = client.post("/feedback", json={"user_id": "u1", "item_id": liked, "event": "like", "impression_id": "x"})
    assert bad.status_code == 404 and "events[0].impression_id" in bad.json()["error"]
    other = next(i for i in SCIFI + [f"r{n}" for n in range(20)] if i not in {it["item_id"] for it in r["items"]})
    bad = client.post("/feedback", json={"user_id": "u1", "item_id": other, "event": "like",
                                         "impression_id": r["impression_id"]})
    assert bad.status_code == 400 and "was not shown" in bad.json()["error"]
    bad = client.post("/feedback", json={"user_id": "u2", "item_id": liked, "event": "like",
                                         "impression_id": r["impression_id"]})
    assert bad.status_code == 400 and "events[0].user_id" in bad.json()["error"]
    assert store.count_events() == before
    health = client.get("/health").json()
    assert health["policy"]["name"] == "thompson" and health["impressions"] == 1
    # a restart replays the log into the policy: the same parameters
    a, b = service.explorer.policy.A.copy(), service.explorer.policy.b.copy()
    again, _ = make(model_dir, store)
    np.testing.assert_allclose(again.explorer.policy.A, a)
    np.testing.assert_allclose(again.explorer.policy.b, b)
    # similar and search lists are impressions too (greedy)
    sim = client.get("/similar/s1", params={"k": 3})
    assert sim.status_code == 200 and sim.json()["impression_id"]
    assert [it["propensity"] for it in sim.json()["items"]] == [1.0] * 3


def test_same_seed_same_lists(model_dir, tmp_path):
    lists = []
    for run in range(2):
        _, client = make(model_dir, EventStore(tmp_path / f"e{run}.sqlite3"), "softmax")
        lists.append([[it["item_id"] for it in client.get("/recommend", params={"user_id": f"u{u}", "k": 4})
                       .json()["items"]] for u in range(5)])
    assert lists[0] == lists[1]


def test_logs_export_and_ope_cli(model_dir, tmp_path):
    store = EventStore(tmp_path / "events.sqlite3")
    _, client = make(model_dir, store, "softmax")
    for n in range(12):
        r = client.get("/recommend", params={"user_id": f"u{n % 6}", "k": 3}).json()
        client.post("/feedback", json={"user_id": f"u{n % 6}", "item_id": r["items"][0]["item_id"], "event": "play",
                                       "value": 0.5, "impression_id": r["impression_id"]})
    store.close()
    from avrec.cli import main

    out = tmp_path / "logs"
    assert main(["logs", "export", str(tmp_path / "events.sqlite3"), "--out", str(out)]) == 0
    slots = pd.read_parquet(out / "slots.parquet")
    assert len(slots) == 36 and slots["reward"].sum() == pytest.approx(6.0)  # play completion 0.5 x 12
    assert np.allclose(slots.groupby("slate_id")["pscore_cascade"].last(), slots.groupby("slate_id")["pscore_slate"]
                       .first())
    assert main(["ope", str(out), "--policy", "softmax", "--policy", "greedy", "--bootstrap", "20",
                 "--out", str(tmp_path / "ope.json")]) == 0
    import json

    res = json.loads((tmp_path / "ope.json").read_text())
    soft = res["policies"]["softmax"]  # the logging policy evaluated on its own log: weights are all 1
    assert soft["estimates"]["ips"]["value"] == pytest.approx(soft["logged_value"])
    assert main(["ope", str(out), "--policy", "nope"]) == 2
    assert main(["logs", "export", str(tmp_path / "missing.sqlite3"), "--out", str(out)]) == 2


def test_acknowledged_impressions_survive_sigkill(model_dir, tmp_path):
    httpx = pytest.importorskip("httpx")
    from test_serve_durability import start_server  # the same server start-up as the events test

    store_path = tmp_path / "events.sqlite3"
    proc, url = start_server(model_dir, store_path, tmp_path / "serve.log", extra=["--policy", "thompson"])
    acked: list[str] = []
    enough, lock = threading.Event(), threading.Lock()

    def stream(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            n = 0
            while True:
                try:
                    r = client.get("/recommend", params={"user_id": f"u{(n + worker) % 30}", "k": 5})
                except httpx.HTTPError:
                    return
                assert r.status_code == 200, r.text
                with lock:
                    acked.append(r.json()["impression_id"])
                    if len(acked) >= 60:
                        enough.set()
                n += 1

    workers = [threading.Thread(target=stream, args=(w,), daemon=True) for w in range(3)]
    for w in workers:
        w.start()
    assert enough.wait(120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for w in workers:
        w.join(timeout=30)
    with EventStore(store_path) as store:
        log = ImpressionLog(store)
        missing = [i for i in acked if log.get(i) is None]
    assert not missing, f"{len(missing)} acknowledged impression(s) lost"
