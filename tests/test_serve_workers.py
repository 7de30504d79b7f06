"""``avrec serve --workers 2``: two processes on one port, one store; and the pool cache of /recommend.

The server runs as a real subprocess (spawned uvicorn workers); each answer names the worker that made
it (``/health`` pid), so the test can check that both workers answer and that a like stored through one
changes the next list the other serves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_fixtures import ROMANCE, SCIFI, fit_tiny

from avrec.models.mapped import map_tensors

URL = re.compile(r"open (http://127\.0\.0\.1:\d+)/")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("workers") / "model", model="ease")


def _start(model_dir: Path, store: Path, workers: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, AVREC_API_KEY="k", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "avrec.cli", "serve", str(model_dir), "--port", "0", "--store", str(store),
           "--no-search", "--watch-interval", "0", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        seen.append(line)
        m = URL.search(line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(seen))


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _answers_by_pid(url: str, n: int) -> dict[int, int]:
    """How many of ``n`` fresh connections each worker answered (a new connection per request)."""
    pids: dict[int, int] = {}
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=30) as c:
            pid = int(c.get("/health").json()["pid"])
            pids[pid] = pids.get(pid, 0) + 1
    return pids


def _lists_by_pid(url: str, workers: int = 2, max_requests: int = 80) -> dict[int, list[str]]:
    """u0's list from each worker: fresh connections until every worker has answered one (the kernel
    hands connections to the workers unevenly, so a fixed number of requests may all reach one)."""
    lists: dict[int, list[str]] = {}
    for _ in range(max_requests):
        with httpx.Client(base_url=url, timeout=30) as c:  # one connection: both requests reach one worker
            r = c.get("/recommend", params={"user_id": "u0", "k": 5}).json()
            lists[int(c.get("/health").json()["pid"])] = [it["item_id"] for it in r["items"]]
        if len(lists) >= workers:
            break
    return lists


def test_two_workers_share_the_store(model_dir, tmp_path):
    proc, url = _start(model_dir, tmp_path / "events.sqlite3", workers=2)
    try:
        # the port listens from the moment the URL is printed: the first request waits for a worker
        assert httpx.get(url + "/health", timeout=120).status_code == 200
        deadline = time.time() + 120
        pids: dict[int, int] = {}
        while len(pids) < 2 and time.time() < deadline:  # both workers up and accepting
            try:
                pids |= _answers_by_pid(url, 8)
            except httpx.HTTPError:
                time.sleep(0.5)
        assert len(pids) == 2, f"only these workers answered: {pids}"
        assert proc.pid not in pids  # the parent only supervises
        # a sci-fi user: every worker's list is sci-fi; a like of a romance item through one worker is in
        # the list of the next request, whichever worker answers it
        before = _lists_by_pid(url)
        assert before and all(all(i in SCIFI for i in items) for items in before.values())
        with httpx.Client(base_url=url, timeout=30) as c:
            for item in ROMANCE[:8]:
                ok = c.post("/feedback", json={"user_id": "u0", "item_id": item, "event": "like"},
                            headers={"X-API-Key": "k"})
                assert ok.status_code == 200, ok.text
        served = _lists_by_pid(url)
        assert len(served) == 2, served
        for pid, items in served.items():
            assert items not in before.values(), f"worker {pid} still served a list from before the likes"
            assert not set(items) & set(ROMANCE[:8]), "liked items are history, not recommendations"
            assert any(i in ROMANCE for i in items), f"worker {pid} ignored the likes: {items}"
    finally:
        _stop(proc)
    assert proc.returncode is not None


def test_workers_must_be_positive(model_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "avrec.cli", "serve", str(model_dir), "--workers", "0",
                        "--store", str(tmp_path / "e.sqlite3")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--workers must be at least 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_mapped_tensors_equal_the_file(model_dir):
    """The arrays a server maps equal safetensors' own reading; changing one changes only this copy."""
    from safetensors.numpy import load_file

    path = model_dir / "model.safetensors"
    mapped, read = map_tensors(path), load_file(str(path))
    assert mapped is not None and mapped.keys() == read.keys()
    for name in read:
        assert mapped[name].dtype == read[name].dtype and np.array_equal(mapped[name], read[name])
    name = next(iter(read))
    size = path.stat().st_size
    mapped[name].reshape(-1)[0] += 1  # copy-on-write: the file is untouched
    assert np.array_equal(map_tensors(path)[name], read[name]) and path.stat().st_size == size


def test_truncated_tensor_file_is_one_error(model_dir, tmp_path):
    from avrec.errors import DataError
    from avrec.models.artifacts import read_tensors

    bad = tmp_path / "model.safetensors"
    data = (model_dir / "model.safetensors").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="model.safetensors: not a readable safetensors file"):
        read_tensors(bad)


# ---- the pool cache of /recommend (avrec.serve.pools) ------------------------------------------------
def _service(model_dir: Path, store_path: Path, **config):
    from avrec.serve import EventStore, RecommenderService, ServeConfig

    config.setdefault("search", False)
    config.setdefault("watch_interval", 0)
    return RecommenderService(model_dir, EventStore(store_path), ServeConfig(**config))


def _listed(out: dict) -> list[tuple[str, float]]:
    return [(it["item_id"], it["score"]) for it in out["items"]]


def test_cached_lists_equal_uncached_ones(model_dir, tmp_path):
    cached = _service(model_dir, tmp_path / "a.sqlite3", warm_pools=0)  # every pool built by a request
    plain = _service(model_dir, tmp_path / "b.sqlite3", warm_pools=0)
    plain.state.pools.capacity = 0  # nothing kept: every list computed afresh
    users = ["u0", "u3", "u16", "u29", "visitor-1", "visitor-2"]
    for _ in range(2):
        for u in users:
            got, want = _listed(cached.recommend(u, k=7)), _listed(plain.recommend(u, k=7))
            if u.startswith("u"):
                assert got == want, u
            else:  # the popular list has ties, which the policy's random draws break (in either order)
                assert [s for _, s in got] == [s for _, s in want], u
    stats = cached.state.pools.describe()
    # the two visitors share the one popular list; the second round is all hits
    assert stats["misses"] == 5 and stats["hits"] == 7 and stats["entries"] == 5
    assert len(plain.state.pools) == 0
    for u in users[:4]:  # details come from the catalogue, not the cache: the same answer
        assert cached.recommend(u, k=5, details=True)["items"] == plain.recommend(u, k=5, details=True)["items"]


def test_feedback_from_another_process_changes_the_next_list(model_dir, tmp_path):
    """Two services on one store stand for two workers: a like stored by one is in the other's next list."""
    one = _service(model_dir, tmp_path / "shared.sqlite3")
    other = _service(model_dir, tmp_path / "shared.sqlite3")
    first = [i for i, _ in _listed(one.recommend("u0", k=5))]
    assert all(i in SCIFI for i in first)
    assert [i for i, _ in _listed(one.recommend("u0", k=5))] == first  # from the cache
    other.feedback([{"user_id": "u0", "item_id": r, "event": "like"} for r in ROMANCE[:8]])
    after = [i for i, _ in _listed(one.recommend("u0", k=5))]
    assert after != first and any(i in ROMANCE for i in after) and not set(after) & set(ROMANCE[:8])
    other.feedback([{"user_id": "u0", "item_id": after[0], "event": "skip"}])
    assert after[0] not in [i for i, _ in _listed(one.recommend("u0", k=5))]


def test_added_items_empty_the_cache(model_dir, tmp_path):
    service = _service(model_dir, tmp_path / "e.sqlite3", warm_pools=0)
    service.recommend("u0", k=5)
    assert len(service.state.pools) == 1
    service.add_items([{"item_id": "new-1", "title": "A new robot film", "genres": "Sci-Fi"}])
    assert len(service.state.pools) == 0


def test_recommend_body_is_the_response_model(model_dir, tmp_path):
    """/recommend answers without FastAPI's serialisation: the body must still be exactly the schema's."""
    from fastapi.testclient import TestClient

    from avrec.serve import create_app
    from avrec.serve.schemas import RecommendResponse, SimilarResponse

    service = _service(model_dir, tmp_path / "e.sqlite3", api_key="k")
    with TestClient(create_app(service, watch=False)) as c:
        for params in ({"user_id": "u0"}, {"user_id": "nobody", "k": 3}, {"user_id": "u1", "details": True}):
            r = c.get("/recommend", params=params)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            body = r.json()
            assert RecommendResponse.model_validate(body).model_dump(exclude_unset=True) == body
            assert service.explorer.impressions.get(body["impression_id"]) is not None  # durable when answered
        r = c.post("/recommend", json={"history": ["s1", "s2"], "k": 4})
        assert RecommendResponse.model_validate(r.json()).model_dump(exclude_unset=True) == r.json()
        r = c.get("/similar/s1", params={"k": 4})
        assert SimilarResponse.model_validate(r.json()).model_dump(exclude_unset=True) == r.json()
        assert c.get("/recommend", params={"user_id": "u0", "k": 0}).status_code == 422


def test_concurrent_impressions_are_all_durable(model_dir, tmp_path):
    """Impressions from many threads at once go through the group commit; each id is stored once."""
    from concurrent.futures import ThreadPoolExecutor

    service = _service(model_dir, tmp_path / "e.sqlite3")
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda n: service.recommend(f"u{n % 30}", k=3), range(64)))
    ids = [o["impression_id"] for o in outs]
    assert len(set(ids)) == 64
    assert all(service.explorer.impressions.get(i) is not None for i in ids)
    assert service.explorer.impressions.count() == 64


def test_greedy_slates_are_reused_only_without_ties(model_dir, tmp_path):
    from avrec.serve.pools import Pool

    service = _service(model_dir, tmp_path / "e.sqlite3")
    out = service.recommend("u0", k=4)
    pool = service.state.pools.get(("u0", 0, (), service.explorer.width(4)))  # (user, last event, rules, width)
    assert pool is not None and 4 in pool.slates and [it["propensity"] for it in out["items"]] == [1.0] * 4
    assert service.recommend("u0", k=4)["items"] == out["items"]
    tied = Pool([{"item_id": i, "score": 1.0, "title": i} for i in ("s1", "s2", "s3")], [], True)
    shown = service.explorer.present(service.state, "recommend", None, tied.items, 2, [], {}, prepared=tied)
    assert [it["propensity"] for it in shown["items"]] == [1 / 3, 1 / 2] and not tied.slates


def test_workers_refuse_a_learning_policy(model_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "avrec.cli", "serve", str(model_dir), "--workers", "2",
                        "--policy", "linucb", "--store", str(tmp_path / "e.sqlite3")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'linucb' policy learns online in one process" in r.stderr
    assert "Traceback" not in r.stderr
