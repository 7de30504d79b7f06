"""Hardening of the HTTP API: hashed API keys with scopes, per-key rate limits (429 + Retry-After), request
timeouts (504), CORS and security headers, over the real app (a fitted tiny model, a SQLite store)."""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_fixtures import fit_tiny  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from avrec.errors import ConfigError  # noqa: E402
from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app  # noqa: E402
from avrec.serve.limits import RateLimiter, retry_after  # noqa: E402
from avrec.serve.middleware import RequestGuard  # noqa: E402
from avrec.serve.security import hash_key, new_key  # noqa: E402

READ, WRITE, ADMIN = new_key(), new_key(), new_key()
KEYS = [{"name": "reader", "hash": hash_key(READ), "scopes": ["read"]},
        {"name": "ingest", "hash": hash_key(WRITE), "scopes": ["write"]},
        {"name": "ops", "hash": hash_key(ADMIN), "scopes": ["admin"]}]
EVENT = {"user_id": "u1", "item_id": "s1", "event": "like"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("limits") / "model", "itemknn")


def client(model_dir: Path, tmp_path: Path, **config) -> TestClient:
    config.setdefault("search", False)
    config.setdefault("watch_interval", 0)
    service = RecommenderService(model_dir, EventStore(tmp_path / "events.sqlite3"), ServeConfig(**config))
    return TestClient(create_app(service, watch=False))


def test_hashed_keys_and_scopes(model_dir: Path, tmp_path: Path):
    with client(model_dir, tmp_path, api_keys=KEYS) as c:
        assert c.get("/recommend", params={"user_id": "u1"}).status_code == 200  # reads stay public by default
        assert c.post("/feedback", json=EVENT).status_code == 401
        assert c.post("/feedback", json=EVENT, headers={"X-API-Key": "avk_wrong"}).status_code == 401
        r = c.post("/feedback", json=EVENT, headers={"X-API-Key": READ})
        assert r.status_code == 403
        assert r.json()["error"] == "the API key 'reader' lacks the 'write' scope (it has read)"
        assert c.post("/feedback", json=EVENT, headers={"X-API-Key": WRITE}).status_code == 200
        r = c.post("/admin/reload", headers={"X-API-Key": WRITE})
        assert r.status_code == 403 and "lacks the 'admin' scope" in r.json()["error"]
        assert c.post("/admin/reload", headers={"X-API-Key": ADMIN}).status_code == 200
        assert c.post("/feedback", json=EVENT, headers={"X-API-Key": ADMIN}).status_code == 200  # admin ⊃ write
        assert c.get("/health").json()["writes"] == "api-key"


def test_reads_can_require_a_key(model_dir: Path, tmp_path: Path):
    with client(model_dir, tmp_path, api_keys=KEYS, read_requires_key=True) as c:
        assert c.get("/recommend", params={"user_id": "u1"}).status_code == 401
        assert c.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": READ}).status_code == 200
        assert c.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": WRITE}).status_code == 200
        assert c.get("/health").status_code == 200  # health checks never need a key


def test_the_plain_key_still_works_with_every_scope(model_dir: Path, tmp_path: Path):
    with client(model_dir, tmp_path, api_key="old-plain-key") as c:
        assert c.post("/feedback", json=EVENT, headers={"X-API-Key": "old-plain-key"}).status_code == 200
        assert c.post("/admin/reload", headers={"X-API-Key": "old-plain-key"}).status_code == 200
        assert c.post("/admin/reload", headers={"X-API-Key": "other"}).status_code == 401


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "hash": "abc", "scopes": ["write"]}, r"serve.api_keys\[0\].hash: expected 'sha256:'"),
    ({"name": "x", "hash": hash_key("k"), "scopes": ["root"]}, r"serve.api_keys\[0\].scopes: 'root' is not a scope"),
    ({"name": "x", "hash": hash_key("k"), "key": "k"}, r"serve.api_keys\[0\].key: unknown field"),
    ({"name": "x", "hash": hash_key("k"), "rate": -1}, r"serve.api_keys\[0\].rate: expected requests per second"),
])
def test_a_malformed_key_entry_is_one_clear_error(entry: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        ServeConfig(api_keys=[entry])


def test_rate_limit_per_key_and_per_address(model_dir: Path, tmp_path: Path):
    keys = [*KEYS, {"name": "fast", "hash": hash_key("fast-key"), "scopes": ["read"], "rate": 1000}]
    with client(model_dir, tmp_path, api_keys=keys, rate_limit=0.5, rate_burst=2) as c:
        params = {"user_id": "u1"}
        assert [c.get("/recommend", params=params).status_code for _ in range(2)] == [200, 200]
        r = c.get("/recommend", params=params)
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and "rate limit" in r.json()["error"]
        # a key has its own bucket, apart from the address's
        assert c.get("/recommend", params=params, headers={"X-API-Key": READ}).status_code == 200
        assert c.get("/recommend", params=params, headers={"X-API-Key": READ}).status_code == 200
        assert c.get("/recommend", params=params, headers={"X-API-Key": READ}).status_code == 429
        # a key with its own rate, and the health check, are not held back
        assert all(c.get("/recommend", params=params, headers={"X-API-Key": "fast-key"}).status_code == 200
                   for _ in range(10))
        assert c.get("/health").status_code == 200


def test_token_bucket_refills_at_its_rate():
    limiter = RateLimiter(rate=2.0, burst=2)
    assert [limiter.take("a", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", now=0.0) == pytest.approx(0.5)  # empty: one token back in 1/rate s
    assert limiter.take("a", now=0.5) == 0.0
    assert limiter.take("b", now=0.5) == 0.0  # another client's bucket is full
    assert limiter.take("a", now=10.0) == 0.0 and limiter.take("a", now=10.0) == 0.0  # refilled to burst only
    assert limiter.take("a", now=10.0) > 0
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def _slow_app() -> Starlette:
    def slow_sync(request):
        time.sleep(1.0)
        return JSONResponse({"ok": True})

    async def slow_async(request):
        await asyncio.sleep(1.0)
        return JSONResponse({"ok": True})

    async def quick(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/sync", slow_sync), Route("/async", slow_async), Route("/quick", quick)])


def test_a_slow_read_times_out_with_504():
    """The guard around a small app whose handlers sleep: in a worker thread (sync) and on the loop."""
    inner = _slow_app()
    service = types.SimpleNamespace(config=ServeConfig(request_timeout=0.2))
    app = RequestGuard(inner, service=service, routes=list(inner.routes), key_routes=[])
    with TestClient(app) as c:
        for path in ("/sync", "/async"):
            r = c.get(path)
            assert r.status_code == 504, path
            assert r.json() == {"error": "the request took longer than 0.2 s (serve setting request_timeout)"}
            assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/quick").json() == {"ok": True}


def test_security_headers_and_their_switch(model_dir: Path, tmp_path: Path):
    with client(model_dir, tmp_path / "on") as c:
        for path in ("/", "/recommend?user_id=u1", "/no-such-page"):
            h = c.get(path).headers
            assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY", path
            assert h["referrer-policy"] == "no-referrer" and "script-src 'self'" in h["content-security-policy"]
            assert "unsafe-inline" not in h["content-security-policy"]
        assert "'unsafe-inline'" in c.get("/docs").headers["content-security-policy"]  # Swagger UI's inline script
    with client(model_dir, tmp_path / "off", security_headers=False) as c:
        assert "x-frame-options" not in c.get("/").headers


def test_cors_only_for_the_configured_origins(model_dir: Path, tmp_path: Path):
    with client(model_dir, tmp_path, api_keys=KEYS, cors_origins=["https://app.example"]) as c:
        pre = c.options("/feedback", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
        r = c.get("/recommend", params={"user_id": "u1"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/recommend", params={"user_id": "u1"}, headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
    with client(model_dir, tmp_path / "none") as c:
        r = c.get("/recommend", params={"user_id": "u1"}, headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers


def test_store_full_is_503_without_acknowledgement_and_recovers(model_dir: Path, tmp_path: Path):
    """Disk full simulated with the SQLite store's size cap (the SQLITE_FULL error a full disk gives; the
    real full-disk test on a small tmpfs is in test_serve_durability.py)."""
    store = EventStore(tmp_path / "events.sqlite3")
    service = RecommenderService(model_dir, store, ServeConfig(search=False, watch_interval=0, api_keys=KEYS,
                                                               log_impressions=False))
    big = {"events": [{"user_id": "u1", "item_id": f"s{n % 20}", "event": "play"} for n in range(400)]}
    with TestClient(create_app(service, watch=False)) as c:
        assert c.post("/feedback", json=EVENT, headers={"X-API-Key": WRITE}).status_code == 200
        before = store.count_events()
        store.set_max_bytes(store.size_bytes())
        r = c.post("/feedback", json=big, headers={"X-API-Key": WRITE})
        assert r.status_code == 503 and "nothing was stored" in r.json()["error"]
        assert "ids" not in r.json() and store.count_events() == before
        store.set_max_bytes(None)
        r = c.post("/feedback", json=big, headers={"X-API-Key": WRITE})
        assert r.status_code == 200 and store.count_events() == before + 400


def test_read_only_store_is_503_for_writes_and_recovers(model_dir: Path, tmp_path: Path):
    """The store switched read-only (SQLite's query_only: the SQLITE_READONLY a read-only file gives):
    /feedback and POST /items answer 503 and store nothing; reads without impressions still answer."""
    store = EventStore(tmp_path / "events.sqlite3")
    service = RecommenderService(model_dir, store, ServeConfig(search=False, watch_interval=0, api_keys=KEYS,
                                                               log_impressions=False))
    with TestClient(create_app(service, watch=False)) as c:
        store.set_read_only(True)
        r = c.post("/feedback", json=EVENT, headers={"X-API-Key": WRITE})
        assert r.status_code == 503 and "cannot write" in r.json()["error"]
        r = c.post("/items", json={"item_id": "new1", "title": "New"}, headers={"X-API-Key": WRITE})
        assert r.status_code == 503 and store.items() == []
        assert c.get("/items/new1").status_code == 404  # not in the served catalogue either
        assert c.get("/recommend", params={"user_id": "u1"}).status_code == 200
        assert store.count_events() == 0
        store.set_read_only(False)
        assert c.post("/feedback", json=EVENT, headers={"X-API-Key": WRITE}).status_code == 200
        assert store.count_events() == 1
