"""End-to-end test of the web page in headless Chromium (Debian's `chromium`, driven by Playwright).

Opens the page served by the app, picks a user, clicks like, checks that the recommendation list
changes and the history shows the like, runs a natural-language search, and saves a screenshot
(to tmp_path, and also to $AVREC_WEB_SCREENSHOT when set, e.g. benchmarks/results/web.png).
Skips loudly, with the reason, only where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from serve_fixtures import fit_tiny

CHROMIUM = os.environ.get("AVREC_CHROMIUM", "/usr/bin/chromium")
LAUNCH_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("SKIPPED LOUDLY: the playwright package is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"SKIPPED LOUDLY: no Chromium at {CHROMIUM}; install it with `apt-get install -y chromium`")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live_server(tmp_path: Path):
    """The app over a tiny itemknn model, in uvicorn on a loopback port, writes open (--insecure-dev)."""
    import uvicorn

    from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app

    model_dir = fit_tiny(tmp_path / "model", "itemknn")
    search = os.environ.get("AVREC_WEB_SEARCH", "1") != "0"
    service = RecommenderService(model_dir, EventStore(tmp_path / "events.sqlite3"),
                                 ServeConfig(insecure_dev=True, search=search, watch_interval=0,
                                             cache_dir=str(tmp_path / "cache")))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, watch=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", service
    server.should_exit = True
    thread.join(timeout=10)


def test_pick_user_like_and_search(live_server, tmp_path: Path):
    sync_playwright = _require_browser()
    url, service = live_server
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=LAUNCH_FLAGS, viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.fill("#user-input", "u2")
            page.click("#load-user")
            page.wait_for_selector('#rec-list[data-user="u2"] li.card')
            before = page.eval_on_selector_all("#rec-list li.card", "els => els.map(e => e.dataset.itemId)")
            assert len(before) == 10
            expl = page.inner_text("#rec-list li.card .explanation")
            assert len(expl) > 10
            assert "Sci-Fi" in page.inner_text("#rec-list li.card .meta")
            version = page.get_attribute("#rec-list", "data-version")

            page.click("#rec-list li.card >> nth=0 >> button.like")
            page.wait_for_function(f'document.querySelector("#rec-list").dataset.version !== "{version}"')
            after = page.eval_on_selector_all("#rec-list li.card", "els => els.map(e => e.dataset.itemId)")
            assert after != before and before[0] not in after
            page.wait_for_selector(f'#history-list li.feedback[data-item-id="{before[0]}"]')
            assert [e.event for e in service.store.events("u2")] == ["like"]

            if service.config.search:
                page.fill("#search-input", "space adventure with robots")
                page.click("#search-button")
                page.wait_for_selector("#search-results li.card", timeout=120_000)
                first = page.inner_text("#search-results li.card .title")
                assert first.startswith("Robot Star Voyage")
            shot = tmp_path / "web.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            extra = os.environ.get("AVREC_WEB_SCREENSHOT")
            if extra:
                Path(extra).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, extra)

            # a new user starts on the popular fallback
            page.click("#new-user")
            page.wait_for_function('document.querySelector("#rec-list").dataset.user.startsWith("web-")')
            page.wait_for_function('document.querySelector("#rec-note").textContent.startsWith("New here")')
            assert errors == [], errors
        finally:
            context.close()
