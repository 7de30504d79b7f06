"""Exposure re-ranking in serving (``[serve.rerank]``, :mod:`avrec.serve.rerank`) for a plain model, over HTTP:
the popularity penalty and calibration change /recommend as the pipeline stages do, under content rules too,
and bad settings are one clear error."""

from __future__ import annotations

import numpy as np
import pytest
from serve_fixtures import ROMANCE, SCIFI, fit_tiny

from avrec.cli import main
from avrec.errors import ConfigError
from avrec.models.base import Recommender
from avrec.pipeline.calibration import PopularityPenalty

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app  # noqa: E402
from avrec.serve.rerank import RerankConfig  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp("rerank") / "model", "itemknn")


def client_for(model_dir, tmp_path, **rerank):
    config = ServeConfig(search=False, watch_interval=0, log_impressions=False, rerank=RerankConfig(**rerank),
                         insecure_dev=True,
                         profiles={"no-sf": {"blocked_values": {"genres": ["Sci-Fi"]}}})
    service = RecommenderService(model_dir, EventStore(tmp_path / f"e{len(rerank)}{sorted(rerank)}.sqlite3"), config)
    return TestClient(create_app(service, watch=False)), service


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [it["item_id"] for it in response.json()["items"]]


def test_popularity_penalty_matches_the_stage_and_lowers_popularity(model_dir, tmp_path):
    model = Recommender.load(model_dir)
    plain, _ = client_for(model_dir, tmp_path)
    penalised, service = client_for(model_dir, tmp_path, popularity_penalty=2.0, depth=30)
    with plain, penalised:
        for user in ("u0", "u20"):
            before = ids(plain.get("/recommend", params={"user_id": user, "k": 5}))
            after = ids(penalised.get("/recommend", params={"user_id": user, "k": 5}))
            u = model.user_index[user]
            cands, scores = model.topk_indices(np.array([u]), 30, exclude=model.seen[[u]])
            from avrec.pipeline.stages import Context

            c, _ = PopularityPenalty(2.0, model.popularity).apply(Context(5, user_idx=np.array([u])), cands,
                                                                  scores.astype(np.float64))
            expected = [str(model.item_ids[i]) for i in c[0] if i >= 0][:5]
            assert after == expected and after != before
            pop = {str(i): model.popularity[n] for n, i in enumerate(model.item_ids)}
            assert np.mean([pop[i] for i in after]) < np.mean([pop[i] for i in before])
        assert service.health()["rerank"] == {"popularity_penalty": 2.0, "depth": 30}


def test_calibration_brings_the_list_to_the_history_genre_mix(model_dir, tmp_path):
    history = SCIFI[:6] + ROMANCE[:2]  # a quarter romance
    plain, _ = client_for(model_dir, tmp_path)
    calibrated, _ = client_for(model_dir, tmp_path, calibration_lambda=0.9, depth=40)
    with plain, calibrated:
        body = {"history": history, "k": 8}
        before = ids(plain.post("/recommend", json=body))
        after = ids(calibrated.post("/recommend", json=body))
        share = lambda xs: sum(x in ROMANCE for x in xs) / len(xs)  # noqa: E731
        assert len(after) == 8 and not set(after) & set(history)
        assert share(before) == 0 and share(after) == 0.25, (before, after)
        # with feedback (the fold-in path) the same holds, and a profile still blocks its items
        for client in (plain, calibrated):
            for item in history:
                r = client.post("/feedback", json={"user_id": "new-user", "item_id": item, "event": "like"})
                assert r.status_code == 200, r.text
        p = {"user_id": "new-user", "k": 8}
        assert share(ids(plain.get("/recommend", params=p))) == 0
        assert share(ids(calibrated.get("/recommend", params=p))) == 0.25
        ruled = ids(calibrated.post("/recommend", json=body | {"profile": "no-sf"}))
        assert ruled and not set(ruled) & set(SCIFI)


def test_unknown_user_fallback_is_unchanged(model_dir, tmp_path):
    plain, _ = client_for(model_dir, tmp_path)
    penalised, _ = client_for(model_dir, tmp_path, popularity_penalty=3.0)
    with plain, penalised:
        p = {"user_id": "stranger", "k": 5}
        assert ids(plain.get("/recommend", params=p)) == ids(penalised.get("/recommend", params=p))


def test_bad_rerank_settings_are_one_clear_error(model_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="popularity_penalty must be 0 or more"):
        client_for(model_dir, tmp_path, popularity_penalty=-1.0)
    with pytest.raises(ConfigError, match=r"calibration_lambda must be in \[0, 1\)"):
        client_for(model_dir, tmp_path, calibration_lambda=1.0)
    with pytest.raises(ConfigError, match="no column 'moods'"):
        client_for(model_dir, tmp_path, calibration_lambda=0.3, calibration_field="moods")
    store = str(tmp_path / "cli.sqlite3")
    assert main(["serve", str(model_dir), "--store", store, "--no-search",
                 "--set", "serve.rerank.calibration_lambda=0.5", "--set", "serve.rerank.calibration_field=moods"]) == 2
    assert "no column 'moods'" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--store", store, "--set", "serve.rerank.strength=1"]) == 2
    assert "unknown setting 'serve.rerank.strength'" in capsys.readouterr().err


def test_tune_rerank_writes_settings_that_serve_reads(tmp_path, capsys):
    """``avrec tune-rerank`` refits the saved model's kind on a split, tunes β then λ within the tolerance on
    validation and writes a [serve.rerank] table; a server started with that file re-ranks with it."""
    import tomllib

    import pandas as pd

    from avrec.data.splits import random_split
    from avrec.pipeline.exposure import tune_exposure
    from avrec.testing.data import make_structured_dataset

    data = make_structured_dataset()
    folder = tmp_path / "data"
    folder.mkdir()
    data.items.to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": data.user_ids[data.user_idx], "item_id": data.items["item_id"].to_numpy()[data.item_idx],
                  "timestamp": data.timestamp}).to_csv(folder / "interactions.csv", index=False)
    assert main(["fit", str(folder), "--model", "ease", "--out", str(tmp_path / "m"),
                 "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    out = tmp_path / "rerank.toml"
    assert main(["tune-rerank", str(tmp_path / "m"), str(folder), "--out", str(out), "--depth", "20"]) == 0
    printed = capsys.readouterr().out
    table = tomllib.loads(out.read_text())["serve"]["rerank"]
    assert printed == out.read_text() and table["depth"] == 20 and table["calibration_field"] == "genres"

    split = random_split(data, seed=2026)
    from avrec.models.registry import create_model

    model = create_model("ease", **Recommender.load(tmp_path / "m").config.__dict__).fit(split.train, valid=split.valid)
    result = tune_exposure(model, split, depth=20)
    assert result["chosen"]["popularity_penalty"] == table["popularity_penalty"]
    assert result["chosen"]["calibration_lambda"] == table["calibration_lambda"]
    floor = 0.98 * result["valid"]["none"]["ndcg@10"]
    assert result["valid"]["penalty"]["ndcg@10"] >= floor and result["valid"]["both"]["ndcg@10"] >= floor

    config = ServeConfig(search=False, watch_interval=0, log_impressions=False, rerank=RerankConfig(**table))
    service = RecommenderService(tmp_path / "m", EventStore(tmp_path / "t.sqlite3"), config)
    assert service.health()["rerank"]["depth"] == 20
    assert main(["tune-rerank", str(tmp_path / "m"), str(folder), "--calibration-field", "moods"]) == 2
    assert "no item column 'moods'" in capsys.readouterr().err
    assert main(["tune-rerank", str(tmp_path / "m"), str(folder), "--tolerance", "1.5"]) == 2
