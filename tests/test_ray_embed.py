"""``avrec embed --engine ray``: two local Ray actors give the vectors the local engine gives, into the same
cache a fit reads; skipped (loudly) without ray[data] (the ``scale`` extra)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from finetune_helpers import make_tiny_bert

from avrec.cli import main
from avrec.data.documents import DocumentConfig, build_documents
from avrec.encoders import EmbeddingCache, TextEncoder
from avrec.encoders.ray_embed import ray_available
from avrec.encoders.text_embed import embed_texts

pytestmark = pytest.mark.skipif(not ray_available(), reason="ray[data] is not installed (pip install 'avrec[scale]'): "
                                "the Ray engine is NOT tested")


@pytest.mark.timeout(600)
def test_two_ray_actors_match_the_local_engine(tmp_path, capsys):
    folder = tmp_path / "catalogue"
    folder.mkdir()
    rng = np.random.default_rng(5)
    words = ["night", "river", "song", "drums", "city", "ghost", "love", "war", "space", "dance"]
    n = 200
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)],
                          "title": [" ".join(rng.choice(words, size=1 + k % 6)) + f" {k}" for k in range(n)],
                          "genres": ["Rock|Live" if k % 3 else "Drama" for k in range(n)]})
    items.to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": [f"u{k % 20}" for k in range(2 * n)], "item_id": [f"i{k % n}" for k in range(2 * n)],
                  "rating": 4}).to_csv(folder / "interactions.csv", index=False)
    model = make_tiny_bert(tmp_path / "bert", dropout=0.0)

    code = main(["embed", str(folder), "--engine", "ray", "--actors", "2", "--batch-size", "16", "--chunk-size",
                 "50", "--cache", str(tmp_path / "ray-cache"), "--set", f"model.encoder={model}", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["engine"] == "ray" and summary["encoded"] == n and summary["unique"] == n

    encoder = TextEncoder(str(model), batch_size=16)
    assert summary["encoder"] == encoder.model_id
    docs = build_documents(pd.read_csv(folder / "items.csv", dtype=str), DocumentConfig())
    local = EmbeddingCache(tmp_path / "local-cache")
    embed_texts(encoder, docs, local, chunk_size=50)
    a, found_a = local.get(encoder.model_id, docs)
    b, found_b = EmbeddingCache(tmp_path / "ray-cache").get(encoder.model_id, docs)
    assert found_a.all() and found_b.all()
    np.testing.assert_allclose(b, a, atol=1e-5)
    work = tmp_path / "ray-cache" / "ray-embed"
    assert not work.exists() or not any(work.iterdir())  # documents and shards in transit are cleaned up

    # a rerun finds everything cached and starts no Ray job
    code = main(["embed", str(folder), "--engine", "ray", "--cache", str(tmp_path / "ray-cache"),
                 "--set", f"model.encoder={model}", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["encoded"] == 0
