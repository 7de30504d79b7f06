"""``avrec embed`` for text: fills exactly the cache entries a later fit reads, resumes an interrupted run,
and reports bad options as one error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from finetune_helpers import make_tiny_bert

from avrec.cli import main
from avrec.encoders import EmbeddingCache, TextEncoder
from avrec.encoders.text_embed import embed_texts


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """60 items in two genres, 24 users who each like six items of one genre."""
    folder = tmp_path_factory.mktemp("catalogue")
    rng = np.random.default_rng(3)
    items = [f"i{n}" for n in range(60)]
    genres = ["Jazz|Live" if n % 2 else "Horror|Thriller" for n in range(60)]
    pd.DataFrame({"item_id": items, "title": [f"Item number {n} " + "word " * (n % 7) for n in range(60)],
                  "genres": genres, "year": [1950 + n for n in range(60)]}).to_csv(folder / "items.csv", index=False)
    rows = []
    for u in range(24):
        pool = [n for n in range(60) if n % 2 == u % 2]
        for j, n in enumerate(rng.choice(pool, size=6, replace=False)):
            rows.append((f"u{u}", f"i{n}", 4, 1000 + 10 * u + j))
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        folder / "interactions.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert"), dropout=0.0)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("model", ["content", "hybrid"])
def test_embed_then_fit_reads_only_the_cache(model, catalogue, tiny_encoder, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    sets = ["--set", f"model.encoder={tiny_encoder}", "--set", f"model.embedding_cache={cache}"]
    if model == "hybrid":
        sets += ["--set", "models.hybrid.max_steps=3"]
    code, out, err = _cli(capsys, "embed", catalogue, "--for-model", model, "--chunk-size", "16", "--json",
                          "--out", tmp_path / "vectors.parquet", *sets)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["unique"] == 60 and summary["encoded"] == 60 and summary["chunks"] == 4
    vectors = pd.read_parquet(tmp_path / "vectors.parquet")
    assert len(vectors) == 60 and len(vectors["vector"].iloc[0]) == summary["dim"]

    def refuse(self):
        raise RuntimeError("the encoder must not load: every vector should come from the cache")

    monkeypatch.setattr(TextEncoder, "_load", refuse)
    code, _, err = _cli(capsys, "fit", catalogue, "--model", model, "--out", tmp_path / "model", *sets)
    assert code == 0, err
    assert (tmp_path / "model" / "config.json").is_file()
    # and without the embed, the same fit does need the encoder (so the check above can fail)
    empty = tmp_path / "empty"
    code, _, err = _cli(capsys, "fit", catalogue, "--model", model, "--out", tmp_path / "model2",
                        "--set", f"model.encoder={tiny_encoder}", "--set", f"model.embedding_cache={empty}", *sets[4:])
    assert code != 0


class _Counting:
    """A real TextEncoder that counts the texts it encodes and can be told to fail after some chunks."""

    def __init__(self, encoder: TextEncoder, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.calls, self.texts = encoder, fail_after, 0, 0
        self.model_id, self.dim = encoder.model_id, encoder.dim

    def encode(self, texts, show_progress=True):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of the run
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, show_progress=False)


def test_interrupted_run_resumes_where_it_stopped(tiny_encoder, tmp_path):
    docs = [f"Document {n}: " + "a long text " * (n % 9) for n in range(50)]
    docs += docs[:5]  # duplicates are encoded once
    encoder = TextEncoder(str(tiny_encoder))
    whole = EmbeddingCache(tmp_path / "whole")
    report = embed_texts(_Counting(encoder), docs, whole, chunk_size=8)
    assert report.unique == 50 and report.encoded == 50 and report.chunks == 7

    resumed = EmbeddingCache(tmp_path / "resumed")
    first = _Counting(encoder, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        embed_texts(first, docs, resumed, chunk_size=8)
    assert resumed.count(encoder.model_id) == 24  # three chunks committed before the interruption
    second = _Counting(encoder)
    report = embed_texts(second, docs, resumed, chunk_size=8)
    assert report.reused == 24 and report.encoded == 26 and second.texts == 26
    a, found_a = whole.get(encoder.model_id, docs)
    b, found_b = resumed.get(encoder.model_id, docs)
    assert found_a.all() and found_b.all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert embed_texts(_Counting(encoder), docs, resumed, chunk_size=8).encoded == 0


@pytest.mark.parametrize("argv, needle", [
    (["--chunk-size", "0"], "--chunk-size"),
    (["--for-model", "ease"], "no text encoder"),
    (["--model", "default@int8", "--backend", "torch"], "contradicts"),
])
def test_bad_options_are_one_error(argv, needle, catalogue, tmp_path, capsys):
    code, _, err = _cli(capsys, "embed", catalogue, "--cache", tmp_path, *argv)
    assert code == 2
    assert needle in err and "Traceback" not in err
