"""The cheap /recommend: the change watermark (avrec.serve.changes), finished answers kept with their
pool (avrec.serve.pools.Rendered) and the pure-ASGI fast path (avrec.serve.fastpath).

Each is checked against the behaviour it replaces: the same list and body as FastAPI's route, the same
422 naming the parameter, a new durable impression per answer, and a like stored through another
connection (another worker or replica) in the very next list.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_fixtures import ROMANCE, SCIFI, fit_tiny

from avrec.serve import create_app
from avrec.serve.changes import ChangeWatermark
from avrec.serve.config import ServeConfig
from avrec.serve.fastpath import RECOMMEND, plain_params
from avrec.serve.service import RecommenderService
from avrec.serve.store import EventStore


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("fastpath") / "model", model="ease")


def _service(model_dir: Path, store: Path, **config) -> RecommenderService:
    config = {"search": False, "watch_interval": 0, "api_key": "k", **config}
    return RecommenderService(model_dir, EventStore(store), ServeConfig(**config))


def _without_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "impression_id"}


def test_plain_params_take_only_what_fastapi_would_accept_the_same_way():
    assert plain_params(b"user_id=u1&k=5&explain=true", RECOMMEND) == {"user_id": "u1", "k": 5, "explain": True}
    assert plain_params(b"user_id=a%20b", RECOMMEND) == {"user_id": "a b"}
    for qs in (b"user_id=u1&k=0", b"user_id=u1&k=1001", b"user_id=u1&k=05", b"user_id=u1&k=+5",
               b"user_id=u1&explain=yes", b"user_id=u1&user_id=u2", b"user_id=u1&other=1", b"user_id=%20u1",
               b"user_id=", b"user_id=%C3%A9t%C3%A9", b"user_id=u%01"):
        assert plain_params(qs, RECOMMEND) is None, qs  # FastAPI answers these (or refuses them) itself


def test_fast_path_answers_as_the_fastapi_route_and_refusals_are_unchanged(model_dir, tmp_path):
    service = _service(model_dir, tmp_path / "e.sqlite3")
    with TestClient(create_app(service, watch=False)) as c:
        fast = c.get("/recommend", params={"user_id": "u0", "k": 4})
        # "K" is not a parameter of the route: FastAPI ignores it, so this request goes the FastAPI way
        slow = c.get("/recommend", params={"user_id": "u0", "k": 4, "K": "x"})
        assert fast.status_code == slow.status_code == 200
        assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
        assert _without_id(fast.json()) == _without_id(slow.json())
        assert fast.json()["impression_id"] != slow.json()["impression_id"]
        for bad, field in (({"user_id": "u0", "k": 0}, "query.k"), ({"k": 3}, "query.user_id"),
                           ({"user_id": " u0"}, "query.user_id")):
            r = c.get("/recommend", params=bad)
            assert r.status_code == 422 and field in r.json()["error"], (bad, r.json())
        r = c.get("/recommend", params={"user_id": "u0", "profile": "nope"})
        assert r.status_code == 400 and "nope" in r.json()["error"]
        sim_fast = c.get("/similar/s1", params={"k": 3})
        sim_slow = c.get("/similar/s1", params={"k": 3, "extra": 1})
        assert _without_id(sim_fast.json()) == _without_id(sim_slow.json())
        assert c.get("/similar/nothing-here").status_code == 404
        metrics = c.get("/metrics").text
        assert 'route="/recommend",status="200"' in metrics and 'route="/similar/{item_id}"' in metrics
        # the guard still runs first: security headers on fast answers too
        assert fast.headers.get("x-content-type-options") == "nosniff"


def test_read_scope_applies_to_the_fast_path(model_dir, tmp_path):
    service = _service(model_dir, tmp_path / "e.sqlite3", read_requires_key=True)
    with TestClient(create_app(service, watch=False)) as c:
        assert c.get("/recommend", params={"user_id": "u0"}).status_code == 401
        ok = c.get("/recommend", params={"user_id": "u0"}, headers={"X-API-Key": "k"})
        assert ok.status_code == 200


def test_a_kept_answer_logs_a_new_durable_impression_each_time(model_dir, tmp_path):
    service = _service(model_dir, tmp_path / "e.sqlite3")
    with TestClient(create_app(service, watch=False)) as c:
        bodies = [c.get("/recommend", params={"user_id": "u3", "k": 5}).json() for _ in range(3)]
    ids = [b["impression_id"] for b in bodies]
    assert len(set(ids)) == 3 and all(_without_id(b) == _without_id(bodies[0]) for b in bodies)
    stored = [service.explorer.impressions.get(i) for i in ids]
    assert all(s is not None for s in stored)
    assert stored[2].items == stored[0].items and stored[2].candidates == stored[0].candidates
    assert stored[2].ts >= stored[0].ts and stored[2].seq > stored[0].seq
    pool = service.state.pools.get(("u3", 0, (), service.explorer.width(5)))  # (user, last event, rules, width)
    assert pool is not None and ("u3", 5, False, False) in pool.responses


def test_a_learning_policy_never_reuses_an_answer(model_dir, tmp_path):
    service = _service(model_dir, tmp_path / "e.sqlite3", policy="thompson")
    for _ in range(3):
        service.recommend_json("u3", k=5)
    pool = service.state.pools.get(("u3", 0, (), service.explorer.width(5)))
    assert pool is not None and not pool.responses


def test_a_like_through_another_connection_changes_the_very_next_list(model_dir, tmp_path):
    """Another store object on the same file stands for another worker or replica."""
    service = _service(model_dir, tmp_path / "shared.sqlite3")
    other = EventStore(tmp_path / "shared.sqlite3")
    with TestClient(create_app(service, watch=False)) as c:
        first = [it["item_id"] for it in c.get("/recommend", params={"user_id": "u0", "k": 5}).json()["items"]]
        assert all(i in SCIFI for i in first)
        again = [it["item_id"] for it in c.get("/recommend", params={"user_id": "u0", "k": 5}).json()["items"]]
        assert again == first
        other.add_events([{"user_id": "u0", "item_id": r, "event": "like"} for r in ROMANCE[:8]])
        after = [it["item_id"] for it in c.get("/recommend", params={"user_id": "u0", "k": 5}).json()["items"]]
        assert after != first and any(i in ROMANCE for i in after)
        other.add_events([{"user_id": "u0", "item_id": after[0], "event": "skip"}])
        latest = [it["item_id"] for it in c.get("/recommend", params={"user_id": "u0", "k": 5}).json()["items"]]
        assert after[0] not in latest
    other.close()


def test_watermark_bumps_only_the_users_whose_events_changed(tmp_path):
    store = EventStore(tmp_path / "e.sqlite3")
    store.add_events([{"user_id": "a", "item_id": "x", "event": "like"}])
    marks = ChangeWatermark(store)
    va, vb = marks.version("a"), marks.version("b")
    assert va > 0 and vb == 0 and marks.lookups == 2
    other = EventStore(tmp_path / "e.sqlite3")
    new_ids = other.add_events([{"user_id": "b", "item_id": "y", "event": "skip"}])
    assert marks.version("a") == va and marks.version("b") == new_ids[0]
    assert marks.deltas == 1 and marks.lookups == 2  # the delta named b; a was not looked up again
    # a check that began after a request arrived serves it without another query
    arrived = time.perf_counter()
    marks.refresh()
    checks = marks.checks
    assert marks.version("a", arrived) == va and marks.checks == checks
    other.close()


def test_requests_of_one_loop_turn_share_one_check(tmp_path):
    store = EventStore(tmp_path / "e.sqlite3")
    marks = ChangeWatermark(store)
    store.add_events([{"user_id": "a", "item_id": "x", "event": "like"}])

    async def many() -> None:
        arrived = time.perf_counter()
        await asyncio.gather(*(marks.settle(arrived) for _ in range(16)))

    before = marks.checks
    asyncio.run(many())
    assert marks.checks == before + 1 and marks.version("a", 0.0) > 0
