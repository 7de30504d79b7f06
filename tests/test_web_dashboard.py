"""The web page's explored slots and the dashboard in headless Chromium (as tests/test_web.py drives the user
page): an explored slot is marked "new for you" and its like carries the impression id; the dashboard
shows the policy's impressions and reward rate (table and chart), the model versions with probe NDCG and
history, the latest off-policy estimates and coverage. Screenshots go to tmp_path and, when
$AVREC_WEB_SHOTS is set, into that folder (web-explore.png, dashboard.png)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_fixtures import live_app, tiny_dataset
from test_web import CHROMIUM, LAUNCH_FLAGS, _keep, _require_browser

from avrec.cli import main
from avrec.models.registry import create_model
from avrec.serve.probe import draw_probe, save_probe


@pytest.fixture()
def versioned_server(tmp_path: Path):
    """itemknn with a probe, one `avrec update` (v0001 → v0002), served with epsilon exploring slot 3."""

    from avrec.serve import EventStore, RecommenderService, ServeConfig

    train, probe = draw_probe(tiny_dataset(), 8, 0.25, seed=2)
    home = tmp_path / "model"
    create_model("itemknn").fit(train).save(home)
    save_probe(home, probe, seed=2)
    store_path = tmp_path / "events.sqlite3"
    with EventStore(store_path) as s:
        s.add_events([{"user_id": "fresh", "item_id": "s1", "event": "like"}])
    assert main(["update", str(home), "--store", str(store_path)]) == 0
    config = ServeConfig(insecure_dev=True, search=False, watch_interval=0, policy="epsilon")
    config.exploration.epsilon, config.exploration.explore_slots = 1.0, [3]
    service = RecommenderService(home, EventStore(store_path), config)
    with live_app(service) as url:
        yield url, service, store_path
    service.store.close()


def test_explored_slot_feedback_and_dashboard(versioned_server, tmp_path: Path):
    sync_playwright = _require_browser()
    url, service, store_path = versioned_server
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-dashboard"), executable_path=CHROMIUM, headless=True,
            args=LAUNCH_FLAGS, viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/?user=u2")
            page.wait_for_selector('#rec-list[data-user="u2"] li.card')
            explored = page.locator("#rec-list li.card.explored")
            assert explored.count() == 1 and explored.locator(".new-for-you").inner_text() == "new for you"
            assert page.locator("#rec-list li.card .new-for-you").count() == 1  # only the explored slot
            item = explored.get_attribute("data-item-id")
            impression = page.get_attribute("#rec-list", "data-impression")
            version = page.get_attribute("#rec-list", "data-version")
            explored.locator("button.like").click()
            page.wait_for_function(f'() => document.querySelector("#rec-list").dataset.version !== "{version}"')
            liked = [e for e in service.store.events("u2") if e.item_id == item]
            assert len(liked) == 1 and liked[0].impression_id == impression and liked[0].position == 2
            shot = tmp_path / "web-explore.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep(shot, "web-explore.png")

            assert main(["ope", str(store_path), "--policy", "greedy", "--policy", "epsilon", "--bootstrap", "10"]) == 0
            page.click("#dashboard-link")
            page.wait_for_selector('#dashboard[data-loaded="1"]')
            row = page.locator('#policy-table tr[data-policy="epsilon"]')
            assert row.locator("td").nth(1).inner_text() == "2"  # two lists: before and after the like
            assert float(row.locator("td.reward-rate").inner_text()) == pytest.approx(1 / 20)
            page.wait_for_selector('#chart-impressions path.series[data-policy="epsilon"]', state="attached")
            page.wait_for_selector('#chart-reward path.series[data-policy="epsilon"]', state="attached")
            versions = page.eval_on_selector_all("#versions-table tbody tr", "rs => rs.map(r => r.dataset.version)")
            assert versions == ["v0002", "v0001"]
            assert "current" in page.get_attribute('#versions-table tr[data-version="v0002"]', "class")
            assert page.locator('#history-list li[data-action="update"]').count() == 1
            assert page.locator('#ope-table tr[data-policy="epsilon"]').count() == 1
            assert "of 40 catalogue items shown" in page.inner_text("#coverage-note")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            _keep(shot, "dashboard.png")
            assert errors == [], errors
        finally:
            context.close()
