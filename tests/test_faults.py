"""Faults (issue 15): SIGKILL during `avrec fit`, `avrec update` and `avrec add-items` leaves the previous
model folder intact, loadable and serving the same recommendations; a corrupt or half-written model folder on
reload keeps the old model serving, and /health and the server log say why.

The kills are real: each command runs as a subprocess and is killed (SIGKILL) as soon as its hidden work
folder appears (the save has begun) and after short delays from then, so kills land before, inside and
after the save. Whatever the moment, the folder must hold either the old model or the complete new one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serve_fixtures import fit_tiny, tiny_dataset

from avrec.cli import main
from avrec.models.artifacts import save_atomically
from avrec.models.base import Recommender
from avrec.models.registry import create_model
from avrec.models.versions import VersionHome, current_version
from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app

USERS = ["u0", "u7", "u150", "u299"]


def _dataset(folder: Path, n_items: int = 1500, n_users: int = 300, seed: int = 3) -> Path:
    """A generated dataset folder, large enough that saving an EASE model takes a few tens of ms."""
    rng = np.random.default_rng(seed)
    words = ["robot", "space", "love", "paris", "war", "jazz", "ocean", "night", "city", "dream"]
    folder.mkdir(parents=True)
    pd.DataFrame({
        "item_id": [f"i{n}" for n in range(n_items)],
        "title": [f"Item {n} {words[n % 10]}" for n in range(n_items)],
        "genres": [f"{words[n % 7]}|{words[n % 3]}" for n in range(n_items)],
        "overview": [" ".join(rng.choice(words, 6)) for _ in range(n_items)],
    }).to_csv(folder / "items.csv", index=False)
    p = np.linspace(3, 1, n_items)
    rows = [(f"u{u}", f"i{i}") for u in range(n_users)
            for i in rng.choice(n_items, size=25, replace=False, p=p / p.sum())]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(folder / "interactions.csv", index=False)
    return folder


def _recs(folder: Path) -> dict[str, list]:
    model = Recommender.load(folder)
    ids, _ = model.recommend(USERS, k=10)
    return {"model": model.name, "n_items": model.n_items, "recs": [list(r) for r in ids]}


def _visible(parent: Path) -> set[str]:
    return {p.name for p in parent.iterdir() if not p.name.startswith(".")}


def _kill_when(cmd: list[str], cwd: Path, marker, delay: float, timeout: float = 120) -> tuple[int, bool]:
    """Run ``cmd``, SIGKILL it ``delay`` s after ``marker()`` first sees its work folder (or when it ends);
    returns (return code, whether the work folder was seen)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = False, time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if marker():
                seen = True
                if delay:
                    time.sleep(delay)
                break
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert proc.returncode in (0, -signal.SIGKILL), f"{cmd[3]} failed before the kill: {err[-2000:]}"
    return proc.returncode, seen


def _save_began(model: Path):
    """A marker for ``_kill_when``: a hidden work folder beside ``model`` appeared, or a file in it changed."""
    def files() -> dict[str, int]:
        return {str(f): f.stat().st_mtime_ns for f in model.rglob("*") if f.is_file()}

    start = files()

    def began() -> bool:
        if any(model.parent.glob(f".{model.name}.*")):
            return True
        try:
            return files() != start
        except FileNotFoundError:  # a file replaced while listed
            return True

    return began


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "avrec.cli", *args]


def _fit(data: Path, model_name: str, out: Path, run: str) -> int:
    runs = out.parent / "runs" / run
    return main(["fit", str(data), "--model", model_name, "--out", str(out), "--run-dir", str(runs)])


def test_sigkill_during_fit_leaves_the_previous_folder(tmp_path):
    data = _dataset(tmp_path / "data")
    model = tmp_path / "model"
    assert _fit(data, "itemknn", model, "r0") == 0
    before, visible = _recs(model), _visible(tmp_path)
    outcomes = []
    for n, delay in enumerate([0.0, 0.01, 0.04]):
        rc, seen = _kill_when(_cli("fit", str(data), "--model", "ease", "--out", str(model),
                                   "--run-dir", str(tmp_path / "runs" / f"r{n + 1}")), tmp_path,
                              _save_began(model), delay)
        after = _recs(model)
        # the old model whole, or the new one whole: never a mix, never an unloadable folder
        assert after == before or (after["model"] == "ease" and after["n_items"] == before["n_items"]), after
        assert _visible(tmp_path) == visible  # no half folder beside it a loader would take
        outcomes.append((rc, seen, after["model"]))
        if after["model"] == "ease":  # the kill came after the swap: put the old model back for the next round
            assert _fit(data, "itemknn", model, "r0") == 0
            assert _recs(model) == before
    assert any(rc == -signal.SIGKILL and seen and name == "itemknn" for rc, seen, name in outcomes), outcomes
    # the next fit finishes the job and clears what the killed ones left
    assert _fit(data, "ease", model, "r9") == 0
    assert _recs(model)["model"] == "ease"
    assert not list(tmp_path.glob(".model.*")), list(tmp_path.glob(".model.*"))


def test_sigkill_during_update_leaves_the_served_version(tmp_path):
    model = fit_tiny(tmp_path / "model", "itemknn")
    store = tmp_path / "e.sqlite3"
    with EventStore(store) as s:
        s.add_events([{"user_id": "fresh", "item_id": "s1", "event": "like"},
                      {"user_id": "u0", "item_id": "r3", "event": "like"}])
    before = Recommender.load(model).recommend(["u0", "u20"], k=5)[0].tolist()
    versions = model / "versions"
    outcomes = []
    for delay in [0.0, 0.005, 0.05]:
        rc, seen = _kill_when(_cli("update", str(model), "--store", str(store)), tmp_path,
                              lambda: versions.is_dir() and any(versions.iterdir()), delay)
        loaded = Recommender.load(model)  # a plain folder, or a home whose pointer names a complete version
        version = current_version(model)
        if version in (None, "v0001"):
            assert loaded.recommend(["u0", "u20"], k=5)[0].tolist() == before
        if (model / "versions.json").exists():
            VersionHome(model).versions()  # the registry stays readable JSON
        listed = [p for p in versions.iterdir() if not p.name.startswith(".")] if versions.exists() else []
        assert all((p / "config.json").exists() for p in listed), listed  # only complete versions are named
        outcomes.append((rc, seen, version))
        if version not in (None, "v0001"):
            break  # it promoted a new version: the kill came after the work
    assert any(rc == -signal.SIGKILL and v in (None, "v0001") for rc, _, v in outcomes), outcomes
    # an update after the kills completes (the killed one's staging folder and lock do not block it)
    assert main(["update", str(model), "--store", str(store), "--force"]) == 0
    assert current_version(model) is not None
    assert Recommender.load(model).n_items == 40
    assert not list(versions.glob(".staging-*"))


def test_sigkill_during_add_items_leaves_the_previous_catalogue(tmp_path):
    data = _dataset(tmp_path / "data", n_items=1500, n_users=200)
    model = tmp_path / "model"
    assert _fit(data, "tfidf", model, "r0") == 0
    new = tmp_path / "new_items.csv"
    pd.DataFrame({"item_id": [f"n{n}" for n in range(300)], "title": [f"New {n}" for n in range(300)],
                  "genres": ["jazz|night"] * 300, "overview": ["a jazz night in the city"] * 300}).to_csv(new,
                                                                                                   index=False)
    before = _recs(model)
    outcomes = []
    for delay in [0.0, 0.01]:
        rc, seen = _kill_when(_cli("add-items", str(model), str(new)), tmp_path,
                              _save_began(model), delay)
        after = _recs(model)
        assert after == before or after["n_items"] == before["n_items"] + 300, after
        outcomes.append((rc, seen, after["n_items"]))
        if after != before:
            break
    assert any(rc == -signal.SIGKILL and seen and n == before["n_items"] for rc, seen, n in outcomes), outcomes
    assert main(["add-items", str(model), str(new)]) == 0
    assert _recs(model)["n_items"] == before["n_items"] + 300
    assert not list(tmp_path.glob(".model.*"))


# ---- a damaged folder on reload ----------------------------------------------------------------------------
def _truncate(folder: Path) -> str:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "model.safetensors"


def _no_config(folder: Path) -> str:
    (folder / "config.json").unlink()
    return "config.json"


def _garbage_parquet(folder: Path) -> str:
    (folder / "catalog" / "items.parquet").write_bytes(b"\x00garbage, not parquet" * 50)
    return "items.parquet"


def _garbage_json(folder: Path) -> str:
    (folder / "config.json").write_text("{\"model\": \"itemknn\", \"con")
    return "config.json"


def _mixed(folder: Path) -> str:
    """Another model's state file in the folder (what a non-atomic save killed half-way leaves)."""
    other = create_model("ease").fit(tiny_dataset()).save(folder.parent / "other")
    shutil.copyfile(other / "model.safetensors", folder / "model.safetensors")
    return "model.safetensors"


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("damage", [_truncate, _no_config, _garbage_parquet, _garbage_json, _mixed])
def test_a_damaged_folder_on_reload_keeps_the_old_model_and_says_why(tmp_path, damage, caplog):
    folder = fit_tiny(tmp_path / "model", "itemknn")
    service = RecommenderService(folder, EventStore(tmp_path / "e.sqlite3"),
                                 ServeConfig(insecure_dev=True, search=False, watch_interval=0.05,
                                             cache_dir=str(tmp_path / "cache")))
    client = TestClient(create_app(service, watch=False))
    before = [i["item_id"] for i in client.get("/recommend", params={"user_id": "u0"}).json()["items"]]
    old = service.state
    service.start_watching()
    try:
        with caplog.at_level(logging.ERROR, logger="avrec.serve"):
            name = damage(folder)
            _wait(lambda: service.reload_errors >= 1)
        assert service.state is old
        assert [i["item_id"] for i in client.get("/recommend", params={"user_id": "u0"}).json()["items"]] == before
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["reload_errors"] == 1
        assert name in health["reload_error"], health["reload_error"]
        logged = [r.getMessage() for r in caplog.records if "still serving the previous model" in r.getMessage()]
        assert logged and name in logged[0], logged
        # a good model saved over it is picked up and the error clears
        save_atomically(create_model("ease").fit(tiny_dataset()), folder)
        _wait(lambda: service.reloads >= 1)
        health = client.get("/health").json()
        assert health["model"] == "ease" and health["reload_error"] is None
    finally:
        service.close()


def test_a_half_written_version_on_reload_keeps_the_served_one(tmp_path, caplog):
    folder = fit_tiny(tmp_path / "model", "itemknn")
    home = VersionHome(folder)
    home.adopt()
    staged = home.stage("v0002")
    shutil.copytree(folder / "versions" / "v0001", staged, dirs_exist_ok=True)
    _truncate(staged)
    home.commit(staged, "v0002", {"parent": "v0001", "status": "candidate"})
    service = RecommenderService(folder, EventStore(tmp_path / "e.sqlite3"),
                                 ServeConfig(insecure_dev=True, search=False, watch_interval=0.05,
                                             cache_dir=str(tmp_path / "cache")))
    client = TestClient(create_app(service, watch=False))
    before = client.get("/recommend", params={"user_id": "u0"}).json()["items"]
    service.start_watching()
    try:
        with caplog.at_level(logging.ERROR, logger="avrec.serve"):
            home.promote("v0002", "test: a half-written version")
            _wait(lambda: service.reload_errors >= 1)
        assert service.state.version == "v0001"
        assert client.get("/recommend", params={"user_id": "u0"}).json()["items"] == before
        error = client.get("/health").json()["reload_error"]
        assert "v0002" in error and "model.safetensors" in error, error
        assert any("v0002" in r.getMessage() for r in caplog.records)
    finally:
        service.close()
