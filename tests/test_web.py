"""End-to-end test of the web page in headless Chromium (Debian's `chromium`, driven by Playwright).

Opens the page served by the app, picks a user, clicks like, checks that the recommendation list
changes and the history shows the like, runs a natural-language search, and saves a screenshot
(to tmp_path, and also to $AVREC_WEB_SCREENSHOT when set, e.g. benchmarks/results/web.png).
Skips loudly, with the reason, only where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_fixtures import fit_tiny, live_app

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


#: a content profile of the live server: only the romance half of the tiny catalogue
PROFILES = {"romance": {"allowed_values": {"genres": ["Romance"]}}}


@pytest.fixture()
def live_server(tmp_path: Path):
    """The app over a tiny itemknn model, in uvicorn on a loopback port, writes open (--insecure-dev)."""

    from avrec.serve import EventStore, RecommenderService, ServeConfig

    model_dir = fit_tiny(tmp_path / "model", "itemknn")
    search = os.environ.get("AVREC_WEB_SEARCH", "1") != "0"
    service = RecommenderService(model_dir, EventStore(tmp_path / "events.sqlite3"),
                                 ServeConfig(insecure_dev=True, search=search, watch_interval=0,
                                             cache_dir=str(tmp_path / "cache"), profiles=PROFILES))
    with live_app(service) as url:
        yield url, service


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
            page.wait_for_function(f'() => document.querySelector("#rec-list").dataset.version !== "{version}"')
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
            page.wait_for_function('() => document.querySelector("#rec-list").dataset.user.startsWith("web-")')
            page.wait_for_function('() => document.querySelector("#rec-note").textContent.startsWith("New here")')
            assert errors == [], errors
        finally:
            context.close()


def _offline_context(p, tmp_path: Path, url: str):
    """A fresh Chromium profile that may reach only the test server: anything else is aborted and recorded."""
    context = p.chromium.launch_persistent_context(
        user_data_dir=str(tmp_path / "chromium-offline"), executable_path=CHROMIUM, headless=True,
        args=LAUNCH_FLAGS, viewport={"width": 1280, "height": 900},
    )
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(url) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append((r.request.resource_type, r.request.url))
            r.abort()

    context.route("**/*", route)
    return context, outside


def _keep(shot: Path, name: str) -> None:
    folder = os.environ.get("AVREC_WEB_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / name)


def test_docs_list_the_operations_offline(live_server, tmp_path: Path):
    sync_playwright = _require_browser()
    url, _service = live_server
    with sync_playwright() as p:
        context, outside = _offline_context(p, tmp_path, url)
        try:
            page = context.new_page()
            page.goto(url + "/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            paths = page.eval_on_selector_all(".opblock .opblock-summary-path",
                                              "els => els.map(e => e.textContent.replace(/\\u200b/g, '').trim())")
            assert "/recommend" in paths and "/feedback" in paths and "/items" in paths, paths
            shot = tmp_path / "docs.png"
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
            _keep(shot, "docs.png")
            assert outside == [], f"/docs tried to load {outside}"
            page.goto(url + "/redoc")
            page.wait_for_selector("text=/recommend", timeout=30_000)
            assert "Recommend History" in page.inner_text("body")
            # ReDoc's only outside request is its Redocly logo, an <img> that hides itself when it fails
            assert [u for kind, u in outside if kind != "image"] == [], outside
        finally:
            context.close()


def test_start_page_suggests_a_known_user(live_server, tmp_path: Path):
    sync_playwright = _require_browser()
    url, service = live_server
    first_user = str(service.state.model.user_ids[0])
    with sync_playwright() as p:
        context, outside = _offline_context(p, tmp_path, url)
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#user-hint a.try-user")
            suggested = page.inner_text("#user-hint a.try-user")
            assert suggested == first_user and suggested in service.state.model.user_index
            assert suggested in page.get_attribute("#user-input", "placeholder")
            assert "Try user" in page.inner_text("#user-hint")
            shot = tmp_path / "start.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot, "start.png")
            page.click("#user-hint a.try-user")
            page.wait_for_selector(f'#rec-list[data-user="{first_user}"] li.card')
            assert page.input_value("#user-input") == first_user
            assert errors == [] and outside == [], (errors, outside)
        finally:
            context.close()


def test_profile_from_the_url_and_the_selector(live_server, tmp_path: Path):
    """?profile= and the selector send ``profile`` on every call the page makes; lists, history and search
    then only show items the profile allows (u2 plays sci-fi; the profile allows only romance)."""
    sync_playwright = _require_browser()
    url, service = live_server
    with sync_playwright() as p:
        context, outside = _offline_context(p, tmp_path, url)
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url) if "/static/" not in r.url else None)
            page.goto(url + "/?user=u2&profile=romance")
            page.wait_for_selector('#rec-list[data-user="u2"][data-profile="romance"] li.card')
            assert page.is_visible("#profile-select") and page.input_value("#profile-select") == "romance"
            titles = page.eval_on_selector_all("#rec-list li.card .title", "els => els.map(e => e.textContent)")
            assert titles and all(t.startswith("Paris Love Letters") for t in titles), titles
            page.wait_for_function('() => document.querySelector("#history-note").textContent.length > 0')
            history = page.eval_on_selector_all("#history-list li", "els => els.map(e => e.textContent)")
            assert not [h for h in history if "Robot" in h], history
            calls = [u for u in asked if "/recommend" in u or "/history" in u]
            assert calls and all("profile=romance" in u for u in calls), calls
            if service.config.search:
                page.fill("#search-input", "space adventure with robots")
                page.click("#search-button")
                page.wait_for_selector('#search-results[data-profile="romance"] li.card', timeout=120_000)
                found = page.eval_on_selector_all("#search-results li.card .title",
                                                  "els => els.map(e => e.textContent)")
                assert all(t.startswith("Paris Love Letters") for t in found), found
            shot = tmp_path / "profile.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot, "profile.png")

            page.select_option("#profile-select", "")
            page.wait_for_selector('#rec-list[data-user="u2"][data-profile=""] li.card')
            titles = page.eval_on_selector_all("#rec-list li.card .title", "els => els.map(e => e.textContent)")
            assert any(t.startswith("Robot Star Voyage") for t in titles), titles
            assert "profile=" not in page.url and "user=u2" in page.url
            page.select_option("#profile-select", "romance")
            page.wait_for_selector('#rec-list[data-profile="romance"]')
            assert "profile=romance" in page.url
            assert errors == [] and outside == [], (errors, outside)
        finally:
            context.close()
