"""``/similar/{item_id}?by=...`` over HTTP: by audio (media files through musicnn), by a bring-your-own
vector file, by text and by the model, with one clear 4xx for a modality the catalogue or the item lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("httpx")
sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")
from fastapi.testclient import TestClient  # noqa: E402

from avrec.data.io import load_folder, write_folder  # noqa: E402
from avrec.data.vectors import write_vector_file  # noqa: E402
from avrec.models.registry import create_model  # noqa: E402
from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app  # noqa: E402


def _clip(path: Path, kind: str, seed: int) -> str:
    sr, t = 16000, np.arange(16000 * 2) / 16000
    rng = np.random.default_rng(seed)
    if kind == "tone":  # a low sustained chord
        y = sum(np.sin(2 * np.pi * f * (1 + 0.01 * seed) * t) for f in (110.0, 165.0, 220.0)) / 3
    else:  # bright noise bursts
        y = rng.normal(0, 0.5, t.size) * (np.mod(t, 0.25) < 0.05)
    sf.write(path, (0.5 * y).astype(np.float32), sr)
    return path.name


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    folder = root / "ds"
    folder.mkdir()
    kinds = ["tone", "tone", "tone", "noise", "noise", "noise"]
    items = pd.DataFrame({"item_id": [f"a{i}" for i in range(6)] + ["silent"],
                          "title": [f"Track {i}" for i in range(6)] + ["No audio"],
                          "audio_path": [_clip(folder / f"a{i}.wav", k, i) for i, k in enumerate(kinds)] + [""]})
    rows = [(f"u{u}", f"a{(u + j) % 6}") for u in range(12) for j in range(3)] + [("u0", "silent"), ("u3", "silent")]
    write_folder(items, pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(weight=1.0), folder)
    # a bring-your-own modality: a0 and a5 close, the rest far apart
    vec = np.eye(7, dtype=np.float32)[:6]
    vec[5] = vec[0] + 0.1 * vec[5]
    write_vector_file(folder / "item_vectors" / "clap.parquet", items["item_id"][:6], vec)
    model = create_model("itemknn").fit(load_folder(folder))
    model.save(root / "model")
    service = RecommenderService(root / "model", EventStore(root / "events.sqlite3"),
                                 ServeConfig(search=False, watch_interval=0, api_key="k"))
    with TestClient(create_app(service, watch=False)) as client:
        yield client


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [it["item_id"] for it in r.json()["items"]]


def test_similar_by_audio_finds_the_same_kind_of_sound(served: TestClient) -> None:
    tones = _ids(served.get("/similar/a0", params={"by": "audio", "k": 2}))
    assert sorted(tones) == ["a1", "a2"]
    noise = _ids(served.get("/similar/a4", params={"by": "audio", "k": 2}))
    assert sorted(noise) == ["a3", "a5"]
    assert "silent" not in _ids(served.get("/similar/a0", params={"by": "audio", "k": 10}))  # no audio: never shown


def test_similar_by_vector_file_and_by_model(served: TestClient) -> None:
    assert _ids(served.get("/similar/a0", params={"by": "clap", "k": 1})) == ["a5"]
    by_model = _ids(served.get("/similar/a0", params={"by": "model", "k": 3}))
    assert sorted(_ids(served.get("/similar/a0", params={"k": 3}))) == sorted(by_model)  # the default


def test_similar_by_a_missing_modality_is_one_clear_4xx(served: TestClient) -> None:
    r = served.get("/similar/a0", params={"by": "video"})
    assert r.status_code == 400 and "no such modality" in r.json()["error"] and "audio" in r.json()["error"]
    r = served.get("/similar/silent", params={"by": "audio"})
    assert r.status_code == 400 and r.json()["error"] == "item 'silent' has no audio (no file or vector for it)"
    assert served.get("/similar/a0", params={"by": "../etc"}).status_code == 422
    assert served.get("/similar/nope", params={"by": "audio"}).status_code == 404


def test_similar_by_text_without_a_search_index_says_so(served: TestClient) -> None:
    r = served.get("/similar/a0", params={"by": "text"})
    assert r.status_code in (400, 503) and "error" in r.json()
