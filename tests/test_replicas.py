"""Two `avrec serve` processes on two ports share one PostgreSQL store and one model folder (two replicas
behind a load balancer): a like sent to one changes the next list the other serves, `avrec update` reads
the events both wrote, and a version promoted through one is served by both.

Skips with the reason where no PostgreSQL server can start (tests/pg_fixtures.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pg_fixtures import pg_cluster, pg_url  # noqa: F401 - fixtures
from serve_fixtures import SCIFI, tiny_dataset

from avrec.cli import main
from avrec.models.registry import create_model
from avrec.serve.probe import draw_probe, save_probe
from avrec.serve.store import EventStore

KEY = "replica-key"
URL_LINE = re.compile(r"open (http://127\.0\.0\.1:\d+)/")


def _start(model_dir: Path, store: str, log: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, AVREC_API_KEY=KEY, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "avrec.cli", "serve", str(model_dir), "--port", "0", "--store", store,
           "--no-search", "--watch-interval", "0.3"]
    out = open(log, "ab")  # noqa: SIM115 - the child owns it until the end of the test
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, env=env)
    deadline, url = time.time() + 120, None
    while time.time() < deadline and url is None:
        line = proc.stdout.readline().decode(errors="replace")
        if not line and proc.poll() is not None:
            break
        m = URL_LINE.search(line)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        pytest.fail(f"avrec serve did not start; log:\n{log.read_text(errors='replace')[-3000:]}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, url


def _call(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json", "X-API-Key": KEY})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _wait_for(check, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_two_servers_share_one_postgres_store(tmp_path: Path, pg_url: str):  # noqa: F811
    train, probe = draw_probe(tiny_dataset(), 10, 0.25, seed=1)
    model_dir = tmp_path / "model"
    create_model("ease").fit(train).save(model_dir)
    save_probe(model_dir, probe, seed=1)
    procs = []
    try:
        for n in (1, 2):
            procs.append(_start(model_dir, pg_url, tmp_path / f"serve{n}.log"))
        (p1, one), (p2, two) = procs
        assert _call(one, "/health")["pid"] != _call(two, "/health")["pid"]

        # a like sent to server 1 is in server 2's next list for that user
        before = [it["item_id"] for it in _call(two, "/recommend?user_id=newcomer&k=5")["items"]]
        liked = SCIFI[:4]
        ack = _call(one, "/feedback", {"events": [{"user_id": "newcomer", "item_id": i, "event": "like"}
                                                  for i in liked]})
        assert len(ack["ids"]) == 4
        after = [it["item_id"] for it in _call(two, "/recommend?user_id=newcomer&k=5")["items"]]
        assert after != before and not set(after) & set(liked), (before, after)
        assert sum(i in SCIFI for i in after) >= 4, after  # the other sci-fi films, not the popular mix
        history = _call(two, "/users/newcomer/history")
        assert history["n_feedback"] == 4
        assert {e["item_id"] for e in history["items"] if e["source"] == "feedback"} == set(liked)

        # `avrec update` reads the events both servers wrote from the same store
        _call(two, "/feedback", {"user_id": "second", "item_id": SCIFI[5], "event": "play"})
        with EventStore(pg_url) as store:
            upto = max(store.event_ids())
        assert main(["update", str(model_dir), "--store", pg_url, "--force"]) == 0
        with EventStore(pg_url) as store:
            assert store.get_meta("last_update_event_id") == str(upto)
        versions = _call(one, "/admin/versions")
        names = [v["name"] for v in versions["versions"]]
        assert names == ["v0001", "v0002"], versions

        # a version promoted through server 1 is served by both (the pointer lives in the model folder)
        target = "v0001" if versions["current"] == "v0002" else "v0002"
        _call(one, "/admin/versions/promote", {"version": target})
        assert _call(one, "/admin/versions")["serving"] == target
        assert _wait_for(lambda: _call(two, "/admin/versions")["serving"] == target), _call(two, "/admin/versions")
    finally:
        for proc, _url in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _url in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
