"""The ONNX Runtime text-encoder backends: ``onnx`` gives the fp32 vectors, ``onnx-int8`` vectors close to them,
the exported transformer is cached on disk and reused, and a missing onnxruntime is one clear error
(speed-ups: benchmarks/encoder_scale.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from avrec.encoders import TextEncoder
from avrec.encoders.resolve import split_backend
from avrec.errors import ConfigError

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

DOCS = [
    "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Year: 1995.",
    "Heat (1995). Genres: Action, Crime, Thriller. Director: Michael Mann.",
    "Kind of Blue. Artist: Miles Davis. Tags: jazz, modal, trumpet.",
    "Nevermind. Artist: Nirvana. Tags: grunge, rock, 90s.",
    "A documentary about deep sea creatures and the people who film them, shot over three years.",
    "Space opera with rebels, an empire and a farm boy who learns the ways of a mystic order.",
    "千与千寻 (2001). 动画 | 奇幻",
    "x",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("avrec-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVREC_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def fp32_vectors():
    return TextEncoder("default", max_length=64).encode(DOCS, show_progress=False)


def test_onnx_matches_fp32_and_is_cached(onnx_cache, fp32_vectors):
    assert split_backend("default@onnx-int8") == ("default", "onnx-int8")
    enc = TextEncoder("default@onnx", max_length=64, batch_size=3)  # several batches, different lengths
    vectors = enc.encode(DOCS, show_progress=False)
    assert vectors.shape == fp32_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, fp32_vectors, atol=1e-4)
    assert enc.model_id.endswith("|backend=onnx")
    exported = list((onnx_cache / "onnx").glob("*/model.onnx"))
    assert len(exported) == 1 and not list((onnx_cache / "onnx").glob("*/.export-*"))  # no temp left behind
    mtime = exported[0].stat().st_mtime_ns
    again = TextEncoder("default@onnx", max_length=64).encode(DOCS[:2], show_progress=False)
    np.testing.assert_allclose(again, vectors[:2], atol=1e-5)
    assert exported[0].stat().st_mtime_ns == mtime  # reused, not exported again


def test_onnx_int8_is_close_to_fp32(onnx_cache, fp32_vectors):
    enc = TextEncoder("default", max_length=64, backend="onnx-int8")
    vectors = enc.encode(DOCS, show_progress=False)
    cosine = (vectors * fp32_vectors).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, cosine
    assert not np.allclose(vectors, fp32_vectors, atol=1e-4)  # int8 weights really are in use
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert list((onnx_cache / "onnx").glob("*/model-int8.onnx"))
    assert TextEncoder("default@onnx-int8", max_length=64).model_id == enc.model_id != TextEncoder(
        "default@onnx", max_length=64).model_id


def test_missing_onnxruntime_is_a_config_error(onnx_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'avrec\[onnx\]'"):
        TextEncoder("default@onnx", max_length=48).encode(["a"], show_progress=False)
