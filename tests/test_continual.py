"""Continual learning (issue 14 §5): scheduled `avrec update` into model versions behind the forgetting guard,
versions promote/rollback, the atomic pointer, hot reload of a promoted version, and saved policy state."""

from __future__ import annotations

import json
import os
import threading

import pytest
from fastapi.testclient import TestClient
from serve_fixtures import ROMANCE, SCIFI, tiny_dataset

from avrec.cli import main
from avrec.errors import DataError
from avrec.models.base import Recommender
from avrec.models.registry import create_model
from avrec.models.versions import POINTER, VersionHome, read_pointer, resolve_model_folder
from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app
from avrec.serve.probe import draw_probe, held_out, load_probe, probe_ndcg, save_probe

H = {"X-API-Key": "k"}


@pytest.fixture()
def home(tmp_path):
    """EASE fitted on the tiny data less a probe of 10 users' latest events (as `avrec fit --probe-users`)."""
    train, probe = draw_probe(tiny_dataset(), 10, 0.25, seed=1)
    folder = tmp_path / "model"
    create_model("ease").fit(train).save(folder)
    save_probe(folder, probe, seed=1)
    return folder


def _update(folder, store, *extra) -> dict:
    assert main(["update", str(folder), "--store", str(store), *extra]) == 0
    return VersionHome(folder).registry()


def test_probe_is_held_out_and_frozen(home):
    probe = load_probe(home)
    model = Recommender.load(home)
    held = held_out(probe)
    assert probe["user_id"].nunique() == 10 and held["user_id"].nunique() == 10 and len(held) < len(probe)
    for u, i in zip(held["user_id"], held["item_id"]):  # held out of training
        assert model.item_index[i] not in set(model.seen[model.user_index[u]].indices)
    for u, i in zip(probe["user_id"][probe["part"] == "history"], probe["item_id"][probe["part"] == "history"]):
        assert model.item_index[i] in set(model.seen[model.user_index[u]].indices)  # the frozen history
    assert probe_ndcg(model, probe)["ndcg"] > 0.2


def test_update_promotes_a_new_version_and_then_has_nothing_to_do(home, tmp_path):
    store = tmp_path / "e.sqlite3"
    probe = held_out(load_probe(home))
    u, i = probe.iloc[0]["user_id"], probe.iloc[0]["item_id"]
    with EventStore(store) as s:
        s.add_events([{"user_id": "fresh", "item_id": "s1", "event": "like"},
                      {"user_id": "fresh", "item_id": "s2", "event": "play"},
                      {"user_id": u, "item_id": i, "event": "like"}])  # a probe pair: never folded in
    reg = _update(home, store)
    assert read_pointer(home) == "v0002" and [v["status"] for v in reg["versions"]] == ["promoted", "promoted"]
    assert not (home / "config.json").exists()  # the plain folder became v0001
    model = Recommender.load(home)
    assert resolve_model_folder(home).name == "v0002" and "fresh" in model.user_index
    assert model.item_index[i] not in set(model.seen[model.user_index[u]].indices)
    assert reg["versions"][1]["probe_ndcg"] == reg["versions"][0]["probe_ndcg"]
    before = json.dumps(reg)
    _update(home, store)  # scheduled again with nothing new: nothing written
    assert json.dumps(VersionHome(home).registry()) == before


def test_an_update_that_forgets_is_refused_and_can_be_promoted_by_hand(home, tmp_path, capsys):
    store = tmp_path / "e.sqlite3"
    held = set(held_out(load_probe(home))["item_id"])
    spam = [x for x in SCIFI if x not in held] + ROMANCE  # drift away from the probe users' held-out items
    with EventStore(store) as s:
        s.add_events([{"user_id": f"spam{n}", "item_id": i, "event": "like"} for n in range(40) for i in spam])
    capsys.readouterr()
    reg = _update(home, store, "--refit", "always")
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["status"] == "refused" and summary["probe_after"]["ndcg"] < 0.95 * summary["probe_before"]["ndcg"]
    assert "forgetting guard" in summary["reason"] and "not promoted" in out.err
    assert read_pointer(home) == "v0001"  # the old model keeps serving
    assert reg["versions"][1]["status"] == "refused" and reg["history"][-1]["action"] == "refused"
    assert "forgetting guard" in reg["history"][-1]["reason"]
    # the operator overrides, then rolls back
    assert main(["versions", "promote", str(home), "v0002"]) == 0
    assert read_pointer(home) == "v0002"
    assert main(["versions", "rollback", str(home)]) == 0
    assert read_pointer(home) == "v0001"
    assert main(["versions", "list", str(home)]) == 0
    listed = capsys.readouterr().out
    assert "refused" in listed and "rollback" in listed and "* v0001" in listed
    assert main(["versions", "promote", str(home), "v0009"]) == 2
    assert "no version 'v0009'" in capsys.readouterr().err


def test_pointer_switches_atomically_and_a_crashed_update_changes_nothing(home, tmp_path, monkeypatch):
    store = tmp_path / "e.sqlite3"
    with EventStore(store) as s:
        s.add_events([{"user_id": "fresh", "item_id": "s1", "event": "like"}])
    _update(home, store)
    h = VersionHome(home)
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(resolve_model_folder(home).name)  # never a partial pointer or a missing version

    t = threading.Thread(target=read)
    t.start()
    for n in range(200):
        h.switch("v0001" if n % 2 else "v0002", "promote", "test")
    stop.set()
    t.join()
    assert set(seen) <= {"v0001", "v0002"} and len(seen) > 0
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(f".{POINTER}")) == []
    # a crash while the pointer is written leaves the old pointer
    current = read_pointer(home)
    real = os.replace

    def boom(src, dst):
        if str(dst).endswith(POINTER):
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        h.switch("v0001" if current == "v0002" else "v0002", "promote", "test")
    monkeypatch.setattr(os, "replace", real)
    assert read_pointer(home) == current
    with h.lock(), pytest.raises(DataError, match="another update"):  # overlapping scheduled runs
        with VersionHome(home).lock():
            pass


def test_server_hot_reloads_the_promoted_version_and_logs_it(home, tmp_path):
    store_path = tmp_path / "e.sqlite3"
    with EventStore(store_path) as s:
        s.add_events([{"user_id": "fresh", "item_id": "s1", "event": "like"}])
    _update(home, store_path)  # v0002
    store = EventStore(store_path)
    service = RecommenderService(home, store, ServeConfig(api_key="k", search=False, watch_interval=0))
    with TestClient(create_app(service, watch=False)) as c:
        r = c.get("/recommend", params={"user_id": "u1", "k": 3}).json()
        imp = service.explorer.impressions.get(r["impression_id"])
        assert imp.model_version == "v0002"
        listed = c.get("/admin/versions").json()
        assert listed["current"] == "v0002" and listed["serving"] == "v0002"
        assert [v["name"] for v in listed["versions"]] == ["v0001", "v0002"]
        assert c.post("/admin/versions/rollback", json={}).status_code == 401
        r = c.post("/admin/versions/rollback", json={}, headers=H)
        assert r.status_code == 200 and r.json()["to"] == "v0001" and service.state.version == "v0001"
        r = c.post("/admin/versions/promote", json={"version": "v0002"}, headers=H)
        assert r.status_code == 200 and service.state.version == "v0002"
        bad = c.post("/admin/versions/promote", json={"version": "v0042"}, headers=H)
        assert bad.status_code == 404 and "v0042" in bad.json()["error"]
        bad = c.post("/admin/versions/promote", json={"version": "../x"}, headers=H)
        assert bad.status_code == 422
    store.close()


def test_als_warm_start_learns_a_new_release_and_thompson_state_is_saved(tmp_path):
    folder = tmp_path / "als"
    create_model("als", factors=8, iterations=15, regularization=5.0).fit(tiny_dataset()).save(folder)
    store_path = tmp_path / "e.sqlite3"
    config = ServeConfig(api_key="k", search=False, watch_interval=0, policy="thompson")
    store = EventStore(store_path)
    store.add_items([{"item_id": "s-new", "title": "Robot Star Voyage New", "genres": "Sci-Fi|Adventure"}])
    store.add_events([{"user_id": f"u{u}", "item_id": "s-new", "event": "like"} for u in range(10)])
    service = RecommenderService(folder, store, config)
    with TestClient(create_app(service, watch=False)) as c:
        r = c.get("/recommend", params={"user_id": "u3", "k": 4}).json()
        c.post("/feedback", headers=H, json={"user_id": "u3", "item_id": r["items"][0]["item_id"], "event": "like",
                                               "impression_id": r["impression_id"]})
    store.close()
    assert main(["update", str(folder), "--store", str(store_path), "--policy", "thompson"]) == 0
    model = Recommender.load(folder)
    assert "s-new" in model.item_index
    recs, _ = model.recommend([f"u{u}" for u in range(10, 15)], k=5)
    assert sum("s-new" in row for row in recs) >= 3  # sci-fi users who never saw it now get the new release
    saved = resolve_model_folder(folder) / "policy"
    meta = json.loads((saved / "policy.json").read_text())
    assert meta["config"]["name"] == "thompson" and meta["impressions_upto"] == 1
    assert (saved / "policy.safetensors").exists()
    entry = VersionHome(folder).registry()["versions"][-1]
    assert entry["how"].startswith("ALS warm start")


def test_fit_draws_the_probe_and_bad_flags_are_one_clear_error(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    ds = tiny_dataset()
    ds.items.to_csv(data / "items.csv", index=False)
    ds.interactions_frame().to_csv(data / "interactions.csv", index=False)
    out = tmp_path / "m"
    assert main(["fit", str(data), "--model", "itemknn", "--out", str(out), "--probe-users", "5",
                 "--run-dir", str(tmp_path / "runs")]) == 0
    probe = load_probe(out)
    assert probe["user_id"].nunique() == 5 and len(probe.attrs["items"]) == 40  # the catalogue it was drawn over
    assert Recommender.load(out).seen.nnz == ds.n_interactions - len(held_out(probe))
    capsys.readouterr()
    assert main(["fit", str(data), "--model", "itemknn", "--out", str(tmp_path / "m2"), "--probe-share", "1.5",
                 "--probe-users", "3", "--run-dir", str(tmp_path / "runs")]) == 2
    assert "--probe-share" in capsys.readouterr().err
    assert main(["update", str(out), "--store", str(tmp_path / "e.sqlite3"), "--tolerance", "2"]) == 2
    EventStore(tmp_path / "e.sqlite3").close()
    assert main(["update", str(out), "--store", str(tmp_path / "e.sqlite3"), "--tolerance", "2"]) == 2
    assert "--tolerance" in capsys.readouterr().err
