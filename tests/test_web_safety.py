"""The web page renders catalogue text as text (issue 15): items whose title, overview, genres and tags hold
script payloads (``<script>``, ``onerror=``, ``onload=``, ``javascript:`` links, an iframe ``srcdoc``), a user
id that holds one, and an item added through ``POST /items`` with one are shown in headless Chromium in
the recommendation list (with explanations and details), the history, the search results and the
dashboard's most-shown list. Nothing executes (``window.__pwned`` stays undefined, no dialog opens, no
request goes to the payloads' URLs), no element is injected, and the text appears literally. The
screenshot goes to tmp_path (and $AVREC_WEB_SHOTS/web-safety.png when set).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from serve_fixtures import ROMANCE, SCIFI, live_app, tiny_items
from test_web import CHROMIUM, LAUNCH_FLAGS, _keep, _require_browser

from avrec.data.dataset import build_dataset
from avrec.models.registry import create_model

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1;alert(1)">'
SVG = '"><svg onload="window.__pwned=1">'
LINK = '<a href="javascript:window.__pwned=1">click me</a>'
IFRAME = "</li><iframe srcdoc=\"<script>parent.__pwned=1</script>\"></iframe>"
BAD_TITLE = f"Robot {SCRIPT} Star {IMG}"
BAD_OVERVIEW = f"Robots {SVG} explore {LINK} planets {IFRAME} javascript:alert(1)"
BAD_USER = "u<img src=y onerror=alert(2)>"
ADDED_TITLE = f"Added {IMG} {SCRIPT}"
INJECTED = "script, img, svg, iframe, a[href^='javascript'], [onerror], [onload]"


def _dataset():
    items = tiny_items()
    items.loc[0, "title"] = BAD_TITLE  # s0: the most popular sci-fi item, in almost every sci-fi list
    items.loc[0, "overview"] = BAD_OVERVIEW
    items.loc[0, "genres"] = f"Sci-Fi|{IMG}"
    items.loc[0, "tags"] = f"robots|{SVG}|space"
    rng = np.random.default_rng(5)
    rows = []
    users = [f"u{u}" for u in range(30)] + [BAD_USER]
    for n, user in enumerate(users):
        pool = SCIFI if n < 15 or user == BAD_USER else ROMANCE
        p = np.linspace(3.0, 1.0, len(pool))
        for t, c in enumerate(rng.choice(len(pool), size=8, replace=False, p=p / p.sum())):
            rows.append({"user_id": user, "item_id": pool[c], "weight": 1.0, "timestamp": 1_600_000_000 + t})
    return build_dataset(items, pd.DataFrame(rows), name="xss")


@pytest.fixture()
def hostile_server(tmp_path: Path):

    from avrec.serve import EventStore, RecommenderService, ServeConfig

    model_dir = tmp_path / "model"
    create_model("itemknn").fit(_dataset()).save(model_dir)
    service = RecommenderService(model_dir, EventStore(tmp_path / "events.sqlite3"),
                                 ServeConfig(insecure_dev=True, search=True, watch_interval=0,
                                             cache_dir=str(tmp_path / "cache")))
    service.add_items([{"item_id": "added-1", "title": ADDED_TITLE, "genres": "Sci-Fi", "overview": BAD_OVERVIEW}])
    with live_app(service) as url:
        yield url, service


def _user_shown_s0(service) -> str:
    """A sci-fi user whose list (not history) holds the hostile item s0."""
    for u in range(15):
        if "s0" in [i["item_id"] for i in service.recommend(f"u{u}", k=10)["items"]]:
            return f"u{u}"
    raise AssertionError("no user gets s0 recommended")


@pytest.mark.parametrize("bypass_csp", [True, False], ids=["rendering-alone", "with-csp"])
def test_hostile_catalogue_text_renders_as_text(hostile_server, tmp_path: Path, bypass_csp: bool):
    """With ``bypass_csp`` the browser ignores the page's Content-Security-Policy, so the rendering alone
    must keep the payloads inert (an innerHTML with data would run them); without it, as users see it."""
    sync_playwright = _require_browser()
    from playwright.sync_api import expect

    url, service = hostile_server
    user = _user_shown_s0(service)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-safety"), executable_path=CHROMIUM, headless=True,
            args=LAUNCH_FLAGS, viewport={"width": 1280, "height": 1400}, bypass_csp=bypass_csp,
        )
        dialogs: list[str] = []
        requests: list[str] = []
        errors: list[str] = []
        try:
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/?user={quote(user)}")
            page.wait_for_selector(f'#rec-list[data-user="{user}"] li.card[data-item-id="s0"]')
            card = page.locator('#rec-list li.card[data-item-id="s0"]')
            assert card.locator(".title").inner_text().startswith(BAD_TITLE)
            assert IMG in card.locator(".meta").inner_text()  # the genres, in the details line
            explanations = page.inner_text("#rec-list")
            assert "<" in explanations and "onerror" in explanations

            # the search results: the hostile item and the one added over POST /items share the overview
            page.fill("#search-input", "robots explore click me planets javascript alert")
            page.click("#search-button")
            expect(page.locator("#search-note")).to_have_text(re.compile("^Results"), timeout=120_000)
            found = page.locator("#search-results li.card")
            ids = found.evaluate_all("els => els.map(e => e.dataset.itemId)")
            assert "s0" in ids and "added-1" in ids, (ids, page.inner_text("#search-note"))
            titles = page.inner_text("#search-results")
            assert BAD_TITLE in titles and ADDED_TITLE in titles

            # a user whose id is a payload, through the URL: history titles and the id itself
            page.goto(f"{url}/?user={quote(BAD_USER)}")
            page.wait_for_selector("#history-list li", timeout=30_000)
            page.wait_for_selector("#rec-list li.card", timeout=30_000)
            expect(page.locator("#status")).to_have_text("Ready.", timeout=30_000)
            assert BAD_USER in page.inner_text("#rec-user")
            assert BAD_TITLE in page.inner_text("#history-list") or BAD_TITLE in page.inner_text("#rec-list")
            shot = tmp_path / "web-safety.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot, f"web-safety-{'no-csp' if bypass_csp else 'csp'}.png")
            for where in ("#rec-list", "#history-list", "#search-results", "#rec-user"):
                assert page.locator(f"{where} :is({INJECTED})").count() == 0, where

            # the dashboard's most-shown list names the items that were shown
            page.goto(f"{url}/dashboard")
            page.wait_for_selector("#most-shown li", timeout=30_000)
            shown = page.inner_text("#most-shown")
            assert BAD_TITLE in shown, shown
            assert page.locator(f"#most-shown :is({INJECTED})").count() == 0
            assert page.evaluate("() => window.__pwned") is None
        finally:
            context.close()
    assert dialogs == [], dialogs
    assert not [r for r in requests if r.rstrip("/").endswith(("/x", "/y"))], requests
    assert errors == [], errors
