"""Pools built ahead of the first request (:mod:`avrec.serve.warm`): the same lists, served from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_fixtures import ROMANCE, fit_tiny

from avrec.errors import ConfigError


@pytest.fixture(scope="module", params=["ease", "itemknn"])
def model_dir(request, tmp_path_factory) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("warm") / "model", model=request.param)


def _service(model_dir: Path, store_path: Path, **config):
    from avrec.serve import EventStore, RecommenderService, ServeConfig

    config.setdefault("search", False)
    config.setdefault("watch_interval", 0)
    return RecommenderService(model_dir, EventStore(store_path), ServeConfig(**config))


def _warmed(service) -> dict:
    assert service.warmer is not None and service.warmer.done.wait(60)
    return service.warmer.describe()


def _listed(out: dict) -> list[tuple[str, float]]:
    return [(it["item_id"], it["score"]) for it in out["items"]]


def test_warmed_pools_are_the_lists_requests_build(model_dir, tmp_path):
    warm = _service(model_dir, tmp_path / "a.sqlite3")
    cold = _service(model_dir, tmp_path / "b.sqlite3", warm_pools=0)
    users = list(warm.state.model.user_index)
    info = _warmed(warm)
    assert info["built"] == len(users) == len(warm.state.pools) and info["error"] is None
    assert cold.warmer is None and len(cold.state.pools) == 0
    for u in users:
        assert _listed(warm.recommend(u, k=10)) == _listed(cold.recommend(u, k=10)), u
        assert warm.recommend_json(u, k=10)  # the finished answer is built on the warmed pool
    stats = warm.state.pools.describe()
    assert stats["misses"] == 0 and stats["hits"] == 2 * len(users)  # no user's first list was scored on request
    assert warm.health()["pool_warmup"]["built"] == len(users)


def test_users_with_events_are_left_to_the_request_path(model_dir, tmp_path):
    first = _service(model_dir, tmp_path / "s.sqlite3", warm_pools=0)
    first.feedback([{"user_id": "u0", "item_id": r, "event": "like"} for r in ROMANCE[:8]])
    service = _service(model_dir, tmp_path / "s.sqlite3")
    info = _warmed(service)
    assert info["skipped_with_events"] == 1 and info["built"] == len(service.state.model.user_index) - 1
    listed = [i for i, _ in _listed(service.recommend("u0", k=5))]
    assert any(i in ROMANCE for i in listed) and not set(listed) & set(ROMANCE[:8])  # the likes count


def _fit_plays(folder: Path, plays: dict[str, int]) -> Path:
    """EASE on users who each played the first ``plays[user]`` sci-fi items."""
    import pandas as pd
    from serve_fixtures import SCIFI, tiny_items

    from avrec.data.dataset import build_dataset
    from avrec.models.registry import create_model

    rows = [{"user_id": u, "item_id": SCIFI[j], "weight": 1.0, "timestamp": 1_600_000_000 + j}
            for u, n in plays.items() for j in range(n)]
    create_model("ease").fit(build_dataset(tiny_items(), pd.DataFrame(rows), name="t")).save(folder)
    return folder


def test_most_active_users_first_up_to_the_limit(tmp_path):
    _fit_plays(tmp_path / "m", {"light": 2, "heavy": 9, "medium": 5, "busiest": 12})
    service = _service(tmp_path / "m", tmp_path / "l.sqlite3", warm_pools=2)
    assert _warmed(service)["built"] == 2
    user_ids = list(service.state.model.user_index)
    assert [user_ids[u] for u in service.warmer.users()] == ["busiest", "heavy"]
    for u in ("busiest", "heavy", "light"):
        service.recommend(u, k=5)
    assert service.state.pools.describe()["hits"] == 2 and service.state.pools.describe()["misses"] == 1
    service.state.pools.capacity = 1  # never more than the cache holds
    assert len(service.warmer.users()) == 1


def test_item_additions_warm_the_pools_again(model_dir, tmp_path):
    service = _service(model_dir, tmp_path / "i.sqlite3")
    _warmed(service)
    before = service.warmer
    service.add_items([{"item_id": "new-1", "title": "A new robot film", "genres": "Sci-Fi"}])
    assert service.warmer is not before
    assert _warmed(service)["built"] == len(service.state.model.user_index) == len(service.state.pools)
    cold = _service(model_dir, tmp_path / "j.sqlite3", warm_pools=0)
    cold.add_items([{"item_id": "new-1", "title": "A new robot film", "genres": "Sci-Fi"}])
    for u in ("u0", "u20"):
        assert _listed(service.recommend(u, k=10)) == _listed(cold.recommend(u, k=10))


def test_negative_limit_is_one_error():
    from avrec.serve import ServeConfig

    with pytest.raises(ConfigError, match="serve.warm_pools"):
        ServeConfig(warm_pools=-1)


def test_unknown_users_share_one_answer_template(tmp_path, monkeypatch):
    import orjson

    from avrec.serve.impressions import ImpressionLog

    model_dir = _fit_plays(tmp_path / "m", {f"u{n}": 1 + n for n in range(20)})  # no ties in popularity
    kept = _service(model_dir, tmp_path / "a.sqlite3")
    fresh = _service(model_dir, tmp_path / "b.sqlite3", warm_pools=0)
    fresh.state.pools.capacity = 0  # every answer computed afresh
    chosen = []
    present = kept.explorer.present
    monkeypatch.setattr(kept.explorer, "present", lambda *a, **kw: chosen.append(1) or present(*a, **kw))
    visitors = ["visitor-1", "visitor-2", 'odd "visitor" \\ 3']
    answers = [orjson.loads(kept.recommend_json(v, k=5)) for v in visitors]
    assert len(chosen) == 1  # one slate chosen; the others joined from its template
    assert len({a["impression_id"] for a in answers}) == 3
    for v, answer in zip(visitors, answers):
        want = orjson.loads(fresh.recommend_json(v, k=5))
        assert answer["user_id"] == v and {**answer, "impression_id": None} == {**want, "impression_id": None}
        imp = ImpressionLog(kept.store).get(answer["impression_id"])
        assert imp is not None and imp.user_id == v and imp.context["fallback"] is True
    explained = kept.recommend_json("visitor-9", k=5, explain=True)  # explanations name the user: not shared
    assert len(chosen) == 2 and orjson.loads(explained)["user_id"] == "visitor-9"
