"""The bf16 and int8 text-encoder backends: chosen by a setting or the encoder name, keyed apart from fp32 in the
cache, and close to the fp32 vectors of the default model (speed-ups: benchmarks/encoder_scale.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avrec.encoders import EmbeddingCache, TextEncoder, encode_texts
from avrec.encoders.resolve import split_backend

DOCS = [
    "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Year: 1995.",
    "Heat (1995). Genres: Action, Crime, Thriller. Director: Michael Mann.",
    "Kind of Blue. Artist: Miles Davis. Tags: jazz, modal, trumpet.",
    "Nevermind. Artist: Nirvana. Tags: grunge, rock, 90s.",
    "A documentary about deep sea creatures and the people who film them.",
    "Space opera with rebels, an empire and a farm boy who learns the ways of a mystic order.",
] * 4


def test_backend_comes_from_the_name_or_the_setting(tmp_path):
    assert split_backend("default@int8") == ("default", "int8")
    assert split_backend("owner/model") == ("owner/model", None)
    assert split_backend("default@fp16") == ("default@fp16", None)  # not a backend: left to the resolver
    folder = tmp_path / "weights@int8"
    folder.mkdir()
    assert split_backend(str(folder)) == (str(folder), None)  # an existing folder keeps its name
    fp32, int8 = TextEncoder("default"), TextEncoder("default@int8")
    assert int8.backend == "int8" and TextEncoder("default", backend="int8").model_id == int8.model_id
    assert fp32.backend == "torch" and "backend" not in fp32.model_id  # fp32 keeps its old cache key
    assert int8.model_id == fp32.model_id + "|backend=int8"
    with pytest.raises(ValueError, match="contradicts"):
        TextEncoder("default@int8", backend="torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        TextEncoder("default", backend="onnx-gpu")


@pytest.mark.slow
def test_int8_vectors_are_close_to_fp32_and_cached_apart(tmp_path):
    fp32, int8 = TextEncoder("default", batch_size=8), TextEncoder("default@int8", batch_size=8)
    a = fp32.encode(DOCS, show_progress=False)
    b = int8.encode(DOCS, show_progress=False)
    assert b.shape == a.shape and b.dtype == np.float32
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.mean() >= 0.96, cos  # measured about 0.97 (per-tensor activation scales): below bf16
    assert not np.allclose(a, b, atol=1e-4)  # really quantised: not the fp32 model under another name
    linears = [m for m in int8.sentence_transformer.modules() if type(m) is torch.nn.Linear]
    assert not linears and any("quantized" in type(m).__module__ for m in int8.sentence_transformer.modules())
    assert any(type(m) is torch.nn.Linear for m in fp32.sentence_transformer.modules())

    cache = EmbeddingCache(tmp_path)
    encode_texts(fp32, DOCS, cache, show_progress=False)
    assert cache.count(int8.model_id) == 0  # fp32 vectors are never served as int8 ones
    got = encode_texts(int8, DOCS, cache, show_progress=False)
    assert cache.count(int8.model_id) == len(set(DOCS))
    np.testing.assert_allclose(got, cache.get(int8.model_id, DOCS)[0], atol=1e-6)


@pytest.mark.slow
def test_bf16_vectors_match_fp32_closely():
    fp32, bf16 = TextEncoder("default", batch_size=8), TextEncoder("default", batch_size=8, backend="bf16")
    assert bf16.model_id == fp32.model_id + "|backend=bf16"
    a = fp32.encode(DOCS, show_progress=False)
    b = bf16.encode(DOCS, show_progress=False)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)  # normalised in float32
    cos = np.sum(a * b, axis=1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.995, cos
    assert not np.array_equal(a, b)
