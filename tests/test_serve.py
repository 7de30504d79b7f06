"""HTTP API tests: response shapes, bad input (4xx JSON, never 500), auth, online feedback, items, reload,
metrics, ``avrec update`` and natural-language search — on a tiny generated catalogue (two taste clusters)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import ROMANCE, SCIFI, fit_tiny, fit_tiny_pipeline, tiny_dataset

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from avrec.models.base import Recommender  # noqa: E402
from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app  # noqa: E402
from avrec.serve.updates import fold_events  # noqa: E402

KEY = "test-key"
H = {"X-API-Key": KEY}


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    return fit_tiny(tmp_path / "model", "itemknn")


def make_client(model_dir: Path, tmp_path: Path, **config) -> TestClient:
    config.setdefault("search", False)
    config.setdefault("watch_interval", 0)
    config.setdefault("api_key", KEY)
    store = EventStore(tmp_path / "events.sqlite3")
    service = RecommenderService(model_dir, store, ServeConfig(**config))
    return TestClient(create_app(service, watch=config["watch_interval"] > 0))


@pytest.fixture()
def client(model_dir: Path, tmp_path: Path):
    with make_client(model_dir, tmp_path) as c:
        yield c


def ids(response) -> list[str]:
    return ids_of(response.json())


def ids_of(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def require_text_encoder() -> None:
    """Skip unless the small default sentence encoder of search loads here."""
    pytest.importorskip("sentence_transformers")
    try:
        from avrec.encoders import TextEncoder

        TextEncoder("default")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"default text encoder unavailable: {e}")


# ---- shapes --------------------------------------------------------------------------------------
def test_recommend_shape_for_known_user(client):
    r = client.get("/recommend", params={"user_id": "u0", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"user_id", "fallback", "items", "impression_id", "policy"}
    assert body["user_id"] == "u0" and body["fallback"] is False and body["policy"] == "greedy"
    assert len(body["items"]) == 5
    for n, it in enumerate(body["items"]):  # explanation only when asked for
        assert set(it) == {"item_id", "score", "title", "position", "propensity", "explored"}
        assert it["position"] == n and it["propensity"] == 1.0 and it["explored"] is False
        assert isinstance(it["score"], float) and it["title"]
    seen = set(tiny_dataset().history("u0"))
    assert not seen & set(ids(r)), "seen items must be excluded"
    assert set(ids(r)) <= set(SCIFI), "a sci-fi user gets sci-fi"
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_recommend_explain_and_details(client):
    body = client.get("/recommend", params={"user_id": "u20", "k": 3, "explain": "true", "details": "true"}).json()
    for it in body["items"]:
        assert isinstance(it["explanation"], str) and len(it["explanation"]) > 10
        assert it["media_type"] == "movie" and "Romance" in it["genres"]


def test_unknown_user_gets_popular_fallback(client):
    body = client.get("/recommend", params={"user_id": "nobody", "k": 4}).json()
    assert body["fallback"] is True and body["user_id"] == "nobody"
    pop = tiny_dataset().item_counts()
    expected = set(np.argsort(-pop, kind="stable")[:4])
    items = tiny_dataset().item_index
    got = {items[i] for i in (it["item_id"] for it in body["items"])}
    assert {pop[i] for i in got} == {pop[i] for i in expected}


def test_post_recommend_with_history(client):
    r = client.post("/recommend", json={"history": ["r1", "r2"], "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["fallback"] is False and body["user_id"] is None
    assert set(ids(r)) <= set(ROMANCE) and not {"r1", "r2"} & set(ids(r))
    empty = client.post("/recommend", json={"history": [], "k": 3}).json()
    assert empty["fallback"] is True and len(empty["items"]) == 3
    assert client.post("/recommend", json={"history": ["nope"]}).status_code == 404


def test_similar_items(client):
    r = client.get("/similar/s3", params={"k": 4})
    assert r.status_code == 200
    assert r.json()["item_id"] == "s3"
    assert len(ids(r)) == 4 and "s3" not in ids(r) and set(ids(r)) <= set(SCIFI)


def test_items_history_explain_users(client):
    item = client.get("/items/s1").json()
    assert item["item_id"] == "s1" and item["title"] == "Robot Star Voyage 1" and item["recommendable"] is True
    hist = client.get("/users/u0/history").json()
    assert hist["known"] is True and {h["item_id"] for h in hist["items"]} == set(tiny_dataset().history("u0"))
    ex = client.get("/explain", params={"user_id": "u0", "item_id": "s5"}).json()
    assert set(ex) == {"user_id", "item_id", "text", "evidence"} and ex["text"]
    users = client.get("/users", params={"limit": 5}).json()
    assert users["total"] == 30 and len(users["users"]) == 5


# ---- bad input: 4xx JSON, never 500 --------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "fragment"),
    [
        ("get", "/recommend", {"params": {"user_id": "u0", "k": 0}}, 422, "query.k"),
        ("get", "/recommend", {"params": {"user_id": "u0", "k": "ten"}}, 422, "query.k"),
        ("get", "/recommend", {"params": {"user_id": "u0", "k": 100000}}, 422, "query.k"),
        ("get", "/recommend", {"params": {}}, 422, "query.user_id"),
        ("get", "/similar/zzz", {}, 404, "zzz"),
        ("get", "/items/zzz", {}, 404, "zzz"),
        ("get", "/explain", {"params": {"user_id": "u0", "item_id": "zzz"}}, 404, "zzz"),
        ("get", "/users/ghost/history", {}, 404, "ghost"),
        ("get", "/no/such/endpoint", {}, 404, "no such endpoint"),
        ("get", "/search", {"params": {"q": ""}}, 422, "query.q"),
        ("post", "/recommend", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "JSON"),
        ("post", "/recommend", {"json": {"history": "s1"}}, 422, "history"),
        ("post", "/recommend", {"json": {"history": ["s1"], "bogus": 1}}, 422, "bogus"),
        ("post", "/feedback", {"json": {"user_id": "u0", "item_id": "s1", "event": "love"}, "headers": H}, 422, "event"),
        ("post", "/feedback", {"json": {"user_id": "u0", "item_id": "s1", "event": "rate"}, "headers": H}, 422, "value"),
        ("post", "/feedback", {"json": {"user_id": "", "item_id": "s1", "event": "like"}, "headers": H}, 422, "user_id"),
        ("post", "/feedback", {"json": {"events": []}, "headers": H}, 422, "events"),
        ("post", "/feedback", {"json": {"user_id": "u0", "item_id": "zzz", "event": "like"}, "headers": H}, 404, "zzz"),
        ("post", "/feedback", {"json": [1, 2], "headers": H}, 422, "invalid request"),
        ("post", "/items", {"json": {"title": "no id"}, "headers": H}, 422, "item_id"),
        ("post", "/items", {"json": {"item_id": "s1", "title": "dup"}, "headers": H}, 409, "already"),
        ("post", "/items", {"json": {"item_id": "x", "nested": {"a": 1}}, "headers": H}, 422, "nested"),
    ],
)
def test_bad_input_is_a_clear_4xx(client, method, url, kwargs, status, fragment):
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and fragment.lower() in body["error"].lower(), body


def test_a_rejected_batch_stores_nothing(client):
    before = client.get("/health").json()["events"]
    events = [{"user_id": "u0", "item_id": "s1", "event": "play"}, {"user_id": "u0", "item_id": "zzz", "event": "play"}]
    assert client.post("/feedback", json={"events": events}, headers=H).status_code == 404
    assert client.get("/health").json()["events"] == before


# ---- auth ----------------------------------------------------------------------------------------
def test_writes_need_the_api_key(client):
    event = {"user_id": "u0", "item_id": "s1", "event": "like"}
    assert client.post("/feedback", json=event).status_code == 401
    assert client.post("/feedback", json=event, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/items", json={"item_id": "n1"}).status_code == 401
    assert client.post("/admin/reload").status_code == 401
    r = client.post("/feedback", json=event, headers=H)
    assert r.status_code == 200 and r.json()["stored"] == 1


def test_env_key_wins_and_no_key_refuses_writes(model_dir, tmp_path, monkeypatch):
    event = {"user_id": "u0", "item_id": "s1", "event": "like"}
    monkeypatch.setenv("AVREC_API_KEY", "from-env")
    with make_client(model_dir, tmp_path / "a", api_key="in-config") as c:
        assert c.post("/feedback", json=event, headers={"X-API-Key": "in-config"}).status_code == 401
        assert c.post("/feedback", json=event, headers={"X-API-Key": "from-env"}).status_code == 200
    monkeypatch.delenv("AVREC_API_KEY")
    with make_client(model_dir, tmp_path / "b", api_key=None) as c:
        r = c.post("/feedback", json=event)
        assert r.status_code == 403 and "--insecure-dev" in r.json()["error"]
        assert c.get("/recommend", params={"user_id": "u0"}).status_code == 200  # reads stay open
    with make_client(model_dir, tmp_path / "c", api_key=None, insecure_dev=True) as c:
        assert c.post("/feedback", json=event).status_code == 200


# ---- online feedback -----------------------------------------------------------------------------
def test_like_and_skip_change_the_next_list_at_once(client):
    before = ids(client.get("/recommend", params={"user_id": "u1", "k": 5}))
    top = before[0]
    assert client.post("/feedback", json={"user_id": "u1", "item_id": top, "event": "skip"}, headers=H).status_code == 200
    after_skip = ids(client.get("/recommend", params={"user_id": "u1", "k": 5}))
    assert top not in after_skip and after_skip != before
    liked = after_skip[0]
    client.post("/feedback", json={"events": [{"user_id": "u1", "item_id": liked, "event": "like"}]}, headers=H)
    after_like = ids(client.get("/recommend", params={"user_id": "u1", "k": 5}))
    assert liked not in after_like and top not in after_like
    hist = client.get("/users/u1/history").json()
    assert [h["event"] for h in hist["items"][:2]] == ["like", "skip"]


def test_new_user_is_folded_in_from_feedback(client):
    assert client.get("/recommend", params={"user_id": "newbie"}).json()["fallback"] is True
    events = [{"user_id": "newbie", "item_id": i, "event": "play"} for i in ("r3", "r4")]
    events.append({"user_id": "newbie", "item_id": "r5", "event": "rate", "value": 5})
    assert client.post("/feedback", json={"events": events}, headers=H).json()["stored"] == 3
    body = client.get("/recommend", params={"user_id": "newbie", "k": 5}).json()
    assert body["fallback"] is False
    got = [it["item_id"] for it in body["items"]]
    assert set(got) <= set(ROMANCE) and not {"r3", "r4", "r5"} & set(got)
    assert client.get("/users/newbie/history").json()["n_feedback"] == 3


# ---- catalogue additions -------------------------------------------------------------------------
def test_added_items_to_a_collaborative_model_are_listed_not_recommended(client):
    r = client.post("/items", json={"items": [{"item_id": "n1", "title": "Brand New", "genres": ["Sci-Fi"]}]},
                    headers=H)
    assert r.status_code == 200 and r.json() == {"added": 1, "recommendable": False, "n_items": 41}
    item = client.get("/items/n1").json()
    assert item["genres"] == "Sci-Fi" and item["recommendable"] is False


def test_added_items_to_a_content_model_are_recommendable(tmp_path):
    folder = fit_tiny(tmp_path / "kg", "kgpath")
    with make_client(folder, tmp_path) as c:
        new = {"item_id": "n-robot", "title": "Robot Star Voyage Returns", "media_type": "movie",
               "genres": "Sci-Fi|Adventure", "tags": "robots|space|spaceship|aliens"}
        r = c.post("/items", json=new, headers=H)
        assert r.status_code == 200 and r.json()["recommendable"] is True
        got = ids(c.post("/recommend", json={"history": SCIFI[:10], "k": 5}))
        assert "n-robot" in got
    # the item is in the store: a new service over the same folder and store has it again
    store = EventStore(tmp_path / "events.sqlite3")
    service = RecommenderService(folder, store, ServeConfig(search=False, watch_interval=0))
    assert "n-robot" in service.state.catalog_index and service.state.model.n_items == 41


# ---- issue 13, defect 1: a pipeline over EASE cannot add items ------------------------------------
@pytest.fixture(scope="module")
def ease_pipeline_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return fit_tiny_pipeline(tmp_path_factory.mktemp("ease-pipeline") / "model", retriever="ease")


def test_items_added_to_a_pipeline_over_ease_survive_a_restart(ease_pipeline_dir, tmp_path):
    """Before capabilities, POST /items on a pipeline whose retriever is EASE stored the item, then answered
    400, and the next start replayed the stored item and failed. Now the item is acknowledged, stored,
    listed and not recommended, like on any model that cannot add items, and the server starts again over
    the same store and model folder with the item in its catalogue."""
    folder = Path(shutil.copytree(ease_pipeline_dir, tmp_path / "model"))
    model = Recommender.load(folder)
    assert model.name == "pipeline" and model.capabilities.add_items is False
    new = {"item_id": "n-robot", "title": "Robot Star Voyage Returns", "media_type": "movie",
           "genres": "Sci-Fi|Adventure", "tags": "robots|space"}
    with make_client(folder, tmp_path) as c:
        r = c.post("/items", json=new, headers=H)
        assert r.status_code == 200, r.text
        assert r.json() == {"added": 1, "recommendable": False, "n_items": 41}
        assert c.get("/items/n-robot").json()["recommendable"] is False
        assert "n-robot" not in ids(c.get("/recommend", params={"user_id": "u0", "k": 40}))
        assert "n-robot" not in ids(c.post("/recommend", json={"history": SCIFI[:5], "k": 30}))
        ex = c.get("/explain", params={"user_id": "u0", "item_id": "n-robot"})
        assert ex.status_code == 200 and "new in the catalogue" in ex.json()["text"]
        assert c.post("/feedback", json={"user_id": "u0", "item_id": "n-robot", "event": "like"},
                      headers=H).status_code == 200
    with EventStore(tmp_path / "events.sqlite3") as store:
        assert [it["item_id"] for it in store.items()] == ["n-robot"]
    # restart: a new service and app over the same model folder and store
    with make_client(folder, tmp_path) as c:
        health = c.get("/health").json()
        assert health["model"] == "pipeline" and health["n_items"] == 41
        item = c.get("/items/n-robot")
        assert item.status_code == 200 and item.json()["title"] == "Robot Star Voyage Returns"
        assert item.json()["recommendable"] is False
        body = c.get("/recommend", params={"user_id": "u0", "k": 5, "explain": "true"}).json()
        assert body["fallback"] is False and len(body["items"]) == 5 and "n-robot" not in ids_of(body)
        assert c.post("/items", json=new, headers=H).status_code == 409  # it is in the catalogue again
    # `avrec update` over the same store leaves the model whole and counts the item as skipped
    with EventStore(tmp_path / "events.sqlite3") as store:
        summary = fold_events(model, store)
    assert summary["items_skipped"] == 1 and "n-robot" not in model.item_index


def test_items_added_to_a_pipeline_over_ease_are_searchable(ease_pipeline_dir, tmp_path):
    require_text_encoder()
    folder = Path(shutil.copytree(ease_pipeline_dir, tmp_path / "model"))
    new = {"item_id": "n-jazz", "title": "Midnight Jazz Piano", "media_type": "music", "genres": "Jazz",
           "tags": "piano|rain|melancholy"}
    query = {"q": "melancholy piano music for a rainy night", "k": 3}
    with make_client(folder, tmp_path, search=True, cache_dir=str(tmp_path / "cache")) as c:
        assert c.post("/items", json=new, headers=H).json()["recommendable"] is False
        assert ids(c.get("/search", params=query))[0] == "n-jazz"
        assert len(ids(c.get("/similar/n-jazz", params={"k": 3}))) == 3
    with make_client(folder, tmp_path, search=True, cache_dir=str(tmp_path / "cache")) as c:  # restart
        assert ids(c.get("/search", params=query))[0] == "n-jazz"


# ---- explanations: one engine (avrec.explain) for known, folded-in and anonymous users -------------
def test_explanations_cite_feedback_of_new_and_anonymous_users(client):
    events = [{"user_id": "newbie", "item_id": i, "event": "like"} for i in ("r3", "r4")]
    client.post("/feedback", json={"events": events}, headers=H)
    titles = {"Paris Love Letters 3", "Paris Love Letters 4"}
    body = client.get("/recommend", params={"user_id": "newbie", "k": 3, "explain": "true"}).json()
    assert body["fallback"] is False
    for it in body["items"]:
        assert any(t in it["explanation"] for t in titles), it["explanation"]
    ex = client.get("/explain", params={"user_id": "newbie", "item_id": body["items"][0]["item_id"]}).json()
    cited = {e["item_id"] for e in ex["evidence"] if e["kind"] == "history_item"}
    assert cited and cited <= {"r3", "r4"}
    anon = client.post("/recommend", json={"history": ["s1", "s2"], "k": 3, "explain": True}).json()
    for it in anon["items"]:
        assert "Robot Star Voyage 1" in it["explanation"] or "Robot Star Voyage 2" in it["explanation"]
    cold = client.get("/recommend", params={"user_id": "nobody", "k": 2, "explain": "true"}).json()
    assert cold["fallback"] is True and all("popularity" in it["explanation"] for it in cold["items"])


def test_a_known_users_explanation_is_the_explainers(client):
    service = client.app.state.service
    explainer = service.state.explainer
    for item in ("s5", "s11", "r2"):
        got = client.get("/explain", params={"user_id": "u0", "item_id": item}).json()
        assert got == explainer.explain("u0", item)
    assert client.get("/health").json()["explanations"] == "avrec.explain"


# ---- operations ----------------------------------------------------------------------------------
def test_health_metrics_and_docs(client):
    client.get("/recommend", params={"user_id": "u0"})
    client.get("/recommend", params={"user_id": "u0", "k": 0})
    client.post("/feedback", json={"user_id": "u0", "item_id": "s1", "event": "play"}, headers=H)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "itemknn" and health["events"] == 1
    text = client.get("/metrics").text
    assert 'avrec_http_requests_total{method="GET",route="/recommend",status="200"} 1' in text
    assert 'avrec_http_requests_total{method="GET",route="/recommend",status="422"} 1' in text
    assert 'avrec_http_request_duration_seconds_bucket{route="/recommend",le="+Inf"} 2' in text
    assert "# TYPE avrec_http_request_duration_seconds histogram" in text
    assert "avrec_events_stored 1" in text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/recommend", "/similar/{item_id}", "/search", "/explain", "/feedback", "/items", "/items/{item_id}",
              "/users/{user_id}/history", "/health", "/metrics"):
        assert p in paths
    page = client.get("/")
    assert page.status_code == 200 and "rec-list" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_store_is_wal_with_full_sync(tmp_path):
    store = EventStore(tmp_path / "s.sqlite3")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ids_ = store.add_events([{"user_id": "a", "item_id": "s1", "event": "like"},
                             {"user_id": "a", "item_id": "s2", "event": "rate", "value": 2}])
    store.close()
    again = EventStore(tmp_path / "s.sqlite3")
    events = again.events("a")
    assert [e.id for e in events] == ids_ and [e.polarity() for e in events] == [1, -1]
    assert again.users() == ["a"]


def test_store_reads_do_not_wait_for_a_writer(tmp_path):
    store = EventStore(tmp_path / "s.sqlite3")
    store.add_events([{"user_id": "a", "item_id": "s1", "event": "like"}])
    done = threading.Event()
    with store._lock:  # a writer in the middle of its transaction
        threading.Thread(target=lambda: (store.events("a"), done.set()), daemon=True).start()
        assert done.wait(5), "a read waited for the write lock"
    store.add_events([{"user_id": "a", "item_id": "s2", "event": "play"}])
    assert [e.item_id for e in store.events("a")] == ["s1", "s2"]  # committed writes are visible at once
    store.close()


def test_quick_reads_run_inline_and_go_to_the_pool_while_a_writer_holds_the_model(model_dir, tmp_path):
    import asyncio

    from avrec.serve.middleware import InlineReads

    service = RecommenderService(model_dir, EventStore(tmp_path / "e.sqlite3"),
                                 ServeConfig(search=False, watch_interval=0))
    inline = InlineReads(service)
    loop_threads: list[int] = []

    def where(x):
        loop_threads.append(threading.get_ident())
        return service.recommend(x, k=3)

    async def scenario():
        me = threading.get_ident()
        assert (await inline("r", where, "u0"))["items"]
        assert loop_threads[-1] == me  # quick: ran on the loop
        lock = service.state.lock
        lock.acquire_write()  # e.g. POST /items adding to the model
        task = asyncio.create_task(inline("r", where, "u0"))
        ticks = 0
        for _ in range(5):  # the loop keeps running while the read waits in a worker thread
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done() and ticks == 5
        lock.release_write()
        assert (await task)["items"] and loop_threads[-1] != me
        inline.mean_s["slow"] = 1.0  # an endpoint whose recent calls were slow goes to the pool
        await inline("slow", where, "u1")
        assert loop_threads[-1] != me

    asyncio.run(scenario())
    service.close()


def test_a_pooled_endpoint_comes_back_inline_when_its_calls_are_cheap(model_dir, tmp_path):
    """The mean is CPU time: waiting in the pool (for a worker or the GIL, as under load) is not cost, so a
    slow start no longer keeps a cheap endpoint in the pool for good (the served hybrid was stuck there)."""
    import asyncio
    import time as _time

    from avrec.serve.middleware import InlineReads

    service = RecommenderService(model_dir, EventStore(tmp_path / "e.sqlite3"),
                                 ServeConfig(search=False, watch_interval=0))
    inline = InlineReads(service)
    inline.mean_s["r"] = 0.02  # a first call that took 20 ms
    threads: list[int] = []

    def waits_without_working():
        threads.append(threading.get_ident())
        _time.sleep(0.01)  # 10 ms of wall time, almost no CPU
        return 1

    async def scenario():
        for _ in range(40):
            await inline("r", waits_without_working)
        return threading.get_ident()

    loop = asyncio.run(scenario())
    service.close()
    assert threads[0] != loop and threads[-1] == loop
    assert inline.mean_s["r"] < inline.budget_s


# ---- hot reload ----------------------------------------------------------------------------------
def test_reload_swaps_the_model_without_failing_requests(model_dir, tmp_path):
    with make_client(model_dir, tmp_path) as c:
        service = c.app.state.service
        old_state = service.state
        errors: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = c.get("/recommend", params={"user_id": "u3", "k": 5})
                if r.status_code != 200:
                    errors.append(r.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        fit_tiny(model_dir, "ease", seed=11)  # a new model lands in the folder
        r = c.post("/admin/reload", headers=H)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        assert r.status_code == 200 and r.json()["model"] == "ease"
        assert errors == []
        assert service.state is not old_state and c.get("/health").json()["model"] == "ease"
        assert "avrec_model_reloads_total 1" in c.get("/metrics").text


def test_watcher_reloads_a_newly_saved_model(model_dir, tmp_path):
    with make_client(model_dir, tmp_path, watch_interval=0.1) as c:
        assert c.get("/health").json()["model"] == "itemknn"
        time.sleep(0.05)
        fit_tiny(model_dir, "ease", seed=3)
        deadline = time.time() + 15
        while time.time() < deadline and c.get("/health").json()["model"] != "ease":
            time.sleep(0.1)
        assert c.get("/health").json()["model"] == "ease"


# ---- avrec update ----------------------------------------------------------------------------------
def test_update_folds_stored_events_into_the_model(model_dir, tmp_path):
    from avrec.cli import main

    store_path = tmp_path / "events.sqlite3"
    with EventStore(store_path) as store:
        store.add_events([
            {"user_id": "fresh", "item_id": "s1", "event": "like"},
            {"user_id": "fresh", "item_id": "s2", "event": "play"},
            {"user_id": "fresh", "item_id": "s3", "event": "skip"},
            {"user_id": "u0", "item_id": "s19", "event": "like"},
        ])
    assert main(["update", str(model_dir), "--store", str(store_path)]) == 0
    model = Recommender.load(model_dir)
    assert "fresh" in model.user_index
    row = model.seen[model.user_index["fresh"]]
    assert {str(model.item_ids[i]) for i in row.indices} == {"s1", "s2"}
    assert "s19" in {str(model.item_ids[i]) for i in model.seen[model.user_index["u0"]].indices}
    assert model.popularity.sum() == model.seen.nnz
    recs, _ = model.recommend(["fresh"], k=5)
    assert set(recs[0]) <= set(SCIFI) and not {"s1", "s2"} & set(recs[0])
    nnz = model.seen.nnz
    assert main(["update", str(model_dir), "--store", str(store_path)]) == 0  # idempotent
    assert Recommender.load(model_dir).seen.nnz == nnz


def test_update_keeps_factor_model_users_out(tmp_path):
    folder = fit_tiny(tmp_path / "als", "als")
    model = Recommender.load(folder)
    assert not model.capabilities.exact_fold_in
    with EventStore(tmp_path / "e.sqlite3") as store:
        store.add_events([{"user_id": "fresh", "item_id": "s1", "event": "like"},
                          {"user_id": "u0", "item_id": "s18", "event": "like"}])
        summary = fold_events(model, store)
    assert summary["users_added"] == 0 and summary["users_not_added"] == 1
    assert "fresh" not in model.user_index
    model.recommend(["u0"], k=3)  # still consistent


def test_update_missing_store_is_a_clear_error(model_dir, tmp_path, capsys):
    from avrec.cli import main

    assert main(["update", str(model_dir), "--store", str(tmp_path / "none.sqlite3")]) == 2
    assert "no event store" in capsys.readouterr().err


# ---- natural-language search (loads the small default text encoder) -----------------------------
@pytest.fixture()
def search_client(model_dir, tmp_path):
    require_text_encoder()
    with make_client(model_dir, tmp_path, search=True, cache_dir=str(tmp_path / "cache")) as c:
        yield c


def test_search_by_a_sentence_personalised_and_new_items(search_client):
    c = search_client
    r = c.get("/search", params={"q": "space adventure with robots", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalised"] is False and set(ids(r)) <= set(SCIFI)
    love = ids(c.get("/search", params={"q": "a love story in Paris", "k": 5}))
    assert set(love) <= set(ROMANCE)
    p = c.get("/search", params={"q": "a film", "k": 5, "user_id": "u20"}).json()
    assert p["personalised"] is True
    assert sum(i["item_id"] in ROMANCE for i in p["items"]) >= 4
    new = {"item_id": "n-jazz", "title": "Midnight Jazz Piano", "media_type": "music",
           "genres": "Jazz", "tags": "piano|rain|melancholy"}
    assert c.post("/items", json=new, headers=H).status_code == 200
    hits = ids(c.get("/search", params={"q": "melancholy piano music for a rainy night", "k": 3}))
    assert hits[0] == "n-jazz"
    sim = c.get("/similar/n-jazz", params={"k": 3})
    assert sim.status_code == 200 and len(ids(sim)) == 3


def test_the_search_index_warms_up_its_query_encoder_before_it_is_ready(model_dir, tmp_path):
    """The first /search does not pay for loading the encoder: one query runs before the index is marked ready."""
    from avrec.serve.search import WARM_UP_QUERY

    service = RecommenderService(model_dir, EventStore(tmp_path / "e.sqlite3"),
                                 ServeConfig(search=False, watch_interval=0))
    state = service.state
    queries: list[tuple[list[str], bool]] = []

    class Encoder:
        def encode(self, texts, show_progress=False):
            queries.append((list(texts), state.search_ready.is_set()))
            return np.ones((len(texts), 4), np.float32)

    service.indexer.text_encoder = Encoder
    service.indexer.encode_items = lambda items: np.random.default_rng(0).normal(size=(len(items), 4))
    state.search_ready.clear()
    service.indexer.build(state)
    assert state.search is not None and state.search_ready.is_set()
    assert queries == [([WARM_UP_QUERY], False)]


def test_a_repeated_query_is_encoded_once(model_dir, tmp_path):
    """/search keeps query vectors (``serve.query_cache``): the same text is answered without the encoder,
    with the same answer; a cache of 0 encodes every time."""
    for size, encodes_of_repeat in ((4096, 0), (0, 1)):
        service = RecommenderService(model_dir, EventStore(tmp_path / f"e{size}.sqlite3"),
                                     ServeConfig(search=False, watch_interval=0, query_cache=size))
        state = service.state
        queries: list[str] = []

        class Encoder:
            def encode(self, texts, show_progress=False):
                queries.extend(texts)
                return np.array([[len(t), 1.0, t.count("o"), 2.0] for t in texts], np.float32)

        service.indexer.text_encoder = Encoder
        service.indexer.encode_items = lambda items: np.random.default_rng(0).normal(size=(len(items), 4))
        state.search_ready.clear()
        service.indexer.build(state)
        first = service.search("robots in space", k=5)
        before = len(queries)
        again = service.search("robots in space", k=5)
        assert len(queries) - before == encodes_of_repeat
        assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in first["items"]]
        service.search("a love story", k=5)
        assert queries[-1] == "a love story"
        cache = service.health()["query_cache"]
        assert cache["capacity"] == size and cache["hits"] == (1 if size else 0)


# ---- the API key before the body, and a body size limit ------------------------------------------
def _asgi_post(app, path: str, chunks: list[bytes], headers: dict[str, str], content_length: bool = True):
    """POST ``chunks`` to the ASGI app directly; returns (status, JSON body, how many chunks it read)."""
    import asyncio

    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", b"application/json"))
    if content_length:
        raw.append((b"content-length", str(sum(len(c) for c in chunks)).encode()))
    else:
        raw.append((b"transfer-encoding", b"chunked"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": raw,
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {}}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def _big_json(n_chunks: int, chunk: int = 1 << 20) -> list[bytes]:
    """A valid JSON object of about ``n_chunks`` MiB, in ``chunk``-byte pieces (one shared padding object)."""
    pad = b"x" * chunk
    return [b'{"user_id": "u0", "item_id": "s1", "event": "like", "pad": "'] + [pad] * n_chunks + [b'"}']


def test_a_wrong_key_is_refused_before_the_body_is_read(client):
    app = client.app
    for headers, status in (({"X-API-Key": "wrong"}, 401), ({}, 401)):
        code, body, pulled = _asgi_post(app, "/feedback", _big_json(40), headers)
        assert code == status and "X-API-Key" in body["error"], body
        assert pulled == 0, f"the server read {pulled} chunk(s) of the body before refusing the key"
    code, body, pulled = _asgi_post(app, "/items", _big_json(3), {"X-API-Key": "wrong"}, content_length=False)
    assert (code, pulled) == (401, 0)
    code, _, pulled = _asgi_post(app, "/admin/reload", [b"{}"], {"X-API-Key": "wrong"})
    assert (code, pulled) == (401, 0)
    assert client.app.state.service.store.count_events() == 0


def test_no_configured_key_refuses_writes_before_the_body_is_read(model_dir, tmp_path):
    with make_client(model_dir, tmp_path, api_key=None) as c:
        code, body, pulled = _asgi_post(c.app, "/feedback", _big_json(2), {})
        assert (code, pulled) == (403, 0) and "--insecure-dev" in body["error"]


def test_bodies_over_the_limit_are_refused_with_413(model_dir, tmp_path):
    with make_client(model_dir, tmp_path, max_body_bytes=4096) as c:
        big = {"history": ["s1"] * 1000, "k": 3}  # ~6 kB
        r = c.post("/recommend", json=big)
        assert r.status_code == 413, r.text
        assert "4096" in r.json()["error"] and "bytes" in r.json()["error"]
        # Content-Length over the limit: refused before a byte is read, also with the right key
        code, body, pulled = _asgi_post(c.app, "/feedback", _big_json(1, 8192), H)
        assert (code, pulled) == (413, 0) and "4096" in body["error"]
        # chunked (no Content-Length): counted while streaming, refused once over the limit
        chunks = [b'{"history": ['] + [b'"s1",' * 200] * 50 + [b'"s1"]}']
        code, body, pulled = _asgi_post(c.app, "/recommend", chunks, {}, content_length=False)
        assert code == 413 and pulled < 10, pulled
        # bodies under the limit still work, with and without Content-Length
        assert c.post("/recommend", json={"history": ["r1", "r2"], "k": 3}).status_code == 200
        code, body, _ = _asgi_post(c.app, "/recommend", [b'{"history": ["r1",', b' "r2"], "k": 3}'], {},
                                   content_length=False)
        assert code == 200 and len(body["items"]) == 3
        code, body, _ = _asgi_post(c.app, "/feedback", [b'{"user_id": "u0", "item_id": "s1", "event": "like"}'], H)
        assert code == 200 and body["stored"] == 1
        assert 'route="/recommend",status="413"' in c.get("/metrics").text


def test_max_body_bytes_is_an_avrec_serve_flag(tmp_path):
    from avrec.cli import build_parser
    from avrec.cli.serve import serve_settings
    from avrec.errors import ConfigError

    parse = build_parser().parse_args
    assert serve_settings(parse(["serve", "m", "--max-body-bytes", "4096"]))[3].max_body_bytes == 4096
    assert serve_settings(parse(["serve", "m", "--max-body-bytes", "0"]))[3].max_body_bytes == 0
    assert serve_settings(parse(["serve", "m"]))[3].max_body_bytes == ServeConfig().max_body_bytes
    with pytest.raises(ConfigError, match="max-body-bytes"):
        serve_settings(parse(["serve", "m", "--max-body-bytes", "-1"]))


def test_the_default_body_limit_fits_the_largest_batch(client):
    from avrec.serve.schemas import MAX_BATCH

    limit = client.app.state.service.config.max_body_bytes
    overview = "A long overview sentence about the story, its people and its places. " * 12  # ~850 chars
    items = [{"item_id": f"batch-{n:05d}", "title": f"A Fairly Long Catalogue Title Number {n}", "media_type": "movie",
              "genres": ["Adventure", "Science Fiction", "Drama"], "year": "1999", "overview": overview,
              "tags": "space|robots|friendship|time travel", "director": "Some Director", "cast": "A One|B Two|C Three"}
             for n in range(MAX_BATCH)]
    size = len(json.dumps({"items": items}).encode())
    assert size < limit < 200 * 2**20, (size, limit)


# ---- ids: one pattern for the query string, the path and the body --------------------------------
@pytest.mark.parametrize(
    ("url", "params", "name"),
    [
        ("/recommend", {"user_id": "u\x000"}, "query.user_id"),
        ("/recommend", {"user_id": "u\x1b0"}, "query.user_id"),
        ("/explain", {"user_id": "u0", "item_id": "s\x011"}, "query.item_id"),
        ("/explain", {"user_id": "u\n0", "item_id": "s1"}, "query.user_id"),
        ("/search", {"q": "robots", "user_id": "u\x7f"}, "query.user_id"),
        ("/recommend", {"user_id": "u" * 257}, "query.user_id"),
        ("/items/s%011", {}, "path.item_id"),
        ("/similar/s%0A1", {}, "path.item_id"),
        ("/users/u%000/history", {}, "path.user_id"),
    ],
)
def test_ids_in_the_query_and_path_follow_the_body_rules(client, url, params, name):
    r = client.get(url, params=params)
    assert r.status_code == 422, r.text
    assert name in r.json()["error"], r.json()


def test_body_ids_follow_the_same_rules(client):
    for bad in ("u\x7f", "u" * 257, ""):
        r = client.post("/feedback", json={"user_id": bad, "item_id": "s1", "event": "like"}, headers=H)
        assert r.status_code == 422 and "user_id" in r.json()["error"], r.text
    assert client.post("/recommend", json={"history": ["s\x1f1"]}).status_code == 422
    ok = "user with spaces, ümlauts & symbols/✓"
    assert client.get("/recommend", params={"user_id": ok}).status_code == 200
    assert client.post("/feedback", json={"user_id": ok, "item_id": "s1", "event": "like"}, headers=H).status_code == 200


# ---- POST /items: duplicates are 409, refused items are never stored -----------------------------
def test_a_duplicate_inside_one_batch_is_409_and_stores_nothing(client):
    service = client.app.state.service
    batch = {"items": [{"item_id": "n1", "title": "One"}, {"item_id": "n2"}, {"item_id": "n1", "title": "Again"}]}
    r = client.post("/items", json=batch, headers=H)
    assert r.status_code == 409, r.text
    assert "'n1'" in r.json()["error"] and "twice" in r.json()["error"]
    assert service.store.items() == [] and "n1" not in service.state.catalog_index
    r = client.post("/items", json={"items": [{"item_id": "n3"}, {"item_id": "s1"}]}, headers=H)
    assert r.status_code == 409 and "'s1'" in r.json()["error"]
    assert service.store.items() == [] and "n3" not in service.state.catalog_index


def test_refused_items_are_never_stored_and_the_store_replays(tmp_path):
    folder = fit_tiny(tmp_path / "kg", "kgpath")  # a model that takes new items (its add_items validates)
    with make_client(folder, tmp_path) as c:
        service = c.app.state.service
        assert c.post("/items", json={"items": [{"item_id": "n-ok", "title": "Kept"}]}, headers=H).status_code == 200
        for body in ({"item_id": " s1", "title": "padded clash"}, {"items": [{"item_id": "n9"}, {"item_id": "n9 "}]},
                     {"item_id": "   "}):
            r = c.post("/items", json=body, headers=H)
            assert r.status_code in (409, 422), r.text
            assert isinstance(r.json()["error"], str)
        assert [it["item_id"] for it in service.store.items()] == ["n-ok"]
        # a failure while adding (after the durable write) takes the items out of the store again
        original = service._apply_items

        def broken(*args, **kwargs):
            raise RuntimeError("boom")

        service._apply_items = broken
        r = TestClient(c.app, raise_server_exceptions=False).post("/items", json={"item_id": "n-fail"}, headers=H)
        service._apply_items = original
        assert r.status_code == 500
        assert [it["item_id"] for it in service.store.items()] == ["n-ok"]
    # restart over the same store: acknowledged items are back, refused ones are not
    service = RecommenderService(folder, EventStore(tmp_path / "events.sqlite3"),
                                 ServeConfig(search=False, watch_interval=0))
    assert "n-ok" in service.state.catalog_index and service.state.model.n_items == 41
    assert not {" s1", "n9", "n9 ", "n-fail"} & set(service.state.catalog_index)


def test_replay_skips_stored_items_that_clash_with_the_model(tmp_path):
    folder = fit_tiny(tmp_path / "kg", "kgpath")
    with EventStore(tmp_path / "events.sqlite3") as store:  # left by an older server that stored refused items
        store.add_items([{"item_id": " s1", "title": "padded"}, {"item_id": "n-good", "title": "Good"}])
    service = RecommenderService(folder, EventStore(tmp_path / "events.sqlite3"),
                                 ServeConfig(search=False, watch_interval=0))
    assert "n-good" in service.state.catalog_index and " s1" not in service.state.catalog_index
    assert service.state.model.n_items == 41


# ---- /docs and /redoc work offline ----------------------------------------------------------------
def test_docs_pages_load_their_assets_from_this_server(client):
    import re

    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200, page
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
        urls += re.findall(r"""url:\s*["']([^"']+)["']""", r.text)
        assert urls, r.text
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from another host"
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
        assert "http://" not in r.text.replace("http://www.w3.org", "") and "https://" not in r.text, r.text
    js = client.get("/docs").text
    assert "swagger-ui-bundle.js" in js and "/openapi.json" in js
