"""Durability: `avrec serve` is killed with SIGKILL while clients stream feedback; after a restart every
event the server acknowledged (HTTP 200 with its id) is in the store, with the content that was sent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serve_fixtures import ROMANCE, SCIFI, fit_tiny

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from avrec.serve.store import EventStore  # noqa: E402

KEY = "durable-key"
URL_LINE = re.compile(r"open (http://127\.0\.0\.1:\d+)/")


def start_server(model_dir: Path, store: Path, log: Path, extra: list[str] | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """Start `avrec serve` on a free loopback port (--port 0) and return it with its base URL."""
    env = dict(os.environ, AVREC_API_KEY=KEY, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "avrec.cli", "serve", str(model_dir), "--port", "0", "--store", str(store),
           "--no-search", "--watch-interval", "0", *(extra or [])]
    out = open(log, "ab")  # noqa: SIM115 - the child owns it until the end of the test
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, env=env)
    deadline = time.time() + 120
    url = None
    while time.time() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            if proc.poll() is not None:
                break
            continue
        m = URL_LINE.search(line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        pytest.fail(f"avrec serve did not start; log:\n{log.read_text(errors='replace')[-3000:]}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining stdout
    return proc, url


def test_acknowledged_events_survive_sigkill(tmp_path: Path):
    model_dir = fit_tiny(tmp_path / "model", "itemknn")
    store_path = tmp_path / "events.sqlite3"
    proc, url = start_server(model_dir, store_path, tmp_path / "serve1.log")
    acked: dict[int, tuple[str, str, str]] = {}
    lock = threading.Lock()
    enough = threading.Event()
    items = SCIFI + ROMANCE

    def stream(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10) as client:
            while True:
                batch = [(f"w{worker}-u{n % 7}", items[(n + j) % len(items)], ("play", "like", "skip")[(n + j) % 3])
                         for j in range(1 if n % 2 else 3)]
                body = ({"user_id": batch[0][0], "item_id": batch[0][1], "event": batch[0][2]} if len(batch) == 1
                        else {"events": [{"user_id": u, "item_id": i, "event": e} for u, i, e in batch]})
                try:
                    r = client.post("/feedback", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                assert r.status_code == 200, r.text
                with lock:
                    for event_id, sent in zip(r.json()["ids"], batch):
                        acked[event_id] = sent
                    if len(acked) >= 150:
                        enough.set()
                n += 1

    workers = [threading.Thread(target=stream, args=(w,), daemon=True) for w in range(3)]
    for w in workers:
        w.start()
    assert enough.wait(120), "the server acknowledged too few events"
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
    proc.wait(timeout=30)
    for w in workers:
        w.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # every acknowledged event is in the store, unchanged
    with EventStore(store_path) as store:
        stored = {e.id: (e.user_id, e.item_id, e.event) for e in store.events()}
    missing = [i for i in acked if i not in stored]
    assert not missing, f"{len(missing)} acknowledged event(s) lost, e.g. {missing[:5]}"
    assert all(stored[i] == sent for i, sent in acked.items())

    # and the restarted server serves them
    proc2, url2 = start_server(model_dir, store_path, tmp_path / "serve2.log")
    try:
        with httpx.Client(base_url=url2, timeout=30) as client:
            assert client.get("/health").json()["events"] >= len(acked)
            user = next(iter(acked.values()))[0]
            hist = client.get(f"/users/{user}/history", params={"limit": 10000}).json()
            expected = sum(1 for u, _, _ in acked.values() if u == user)
            assert hist["n_feedback"] >= expected
            assert client.get("/recommend", params={"user_id": user}).json()["fallback"] is False
    finally:
        proc2.terminate()
        proc2.wait(timeout=30)
