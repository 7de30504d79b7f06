"""Every artifact avrec writes loads with pickle disabled (issue 15), and none of the files is a pickle.

Written here: a saved folder of every registered model (the pipeline's ranker checkpoint included), the
embedding cache, a versioned model folder (``avrec update``: CURRENT, versions.json, a policy's state), the
run folder, the impression log export (``avrec logs export``), a knowledge graph and a saved split. They are
then loaded while ``pickle.load``/``loads``/``Unpickler``, ``pandas.read_pickle`` and ``torch.load`` raise
and ``numpy.load`` refuses ``allow_pickle``; and every file written is scanned: no pickle suffix, no pickle
header, no ``.npy`` of object dtype.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serve_fixtures import fit_tiny, fit_tiny_pipeline, tiny_dataset

from avrec.cli import main
from avrec.models.base import Recommender
from avrec.models.registry import available_models, create_model

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".bin", ".npz")
#: small settings per model so the whole test stays fast (the rest use their defaults)
SMALL: dict[str, dict] = {
    "als": {"factors": 8, "iterations": 3},
    "bpr": {"factors": 8, "iterations": 5},
    "hybrid": {"max_steps": 20, "eval_every": 10, "dim": 16, "hidden": 32, "batch_users": 16, "use_lm": True,
               "als_factors": 4, "internal_valid_share": 0.15},
}


class PickleUsed(AssertionError):
    pass


def disable_pickle(monkeypatch) -> None:
    """Make every way of unpickling raise, and numpy.load refuse pickled arrays."""
    import numpy

    def refuse(*args, **kwargs):
        raise PickleUsed("an artifact was loaded through pickle")

    class Unpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", Unpickler)
    monkeypatch.setattr(pd, "read_pickle", refuse)
    real_load = numpy.load

    def np_load(*args, allow_pickle=False, **kwargs):
        if allow_pickle:
            refuse()
        return real_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(numpy, "load", np_load)
    try:
        import torch

        monkeypatch.setattr(torch, "load", refuse)
    except ImportError:
        pass


@pytest.fixture()
def no_pickle(monkeypatch):
    disable_pickle(monkeypatch)


def _is_pickle(path: Path) -> bool:
    head = path.read_bytes()[:2]
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _object_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read(f)  # the header only: no array, no pickle
    return dtype.hasobject


def _scan(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    bad = [p for p in files if p.suffix in PICKLE_SUFFIXES and p.name != "pytorch_model.bin"]
    bad += [p for p in files if p.suffix != ".safetensors" and _is_pickle(p)]
    bad += [p for p in files if p.suffix == ".npy" and _object_npy(p)]
    assert not bad, f"pickle-like files: {bad}"
    return files


def test_the_pickle_guard_works(no_pickle, tmp_path):
    """The guard itself: pickles and object arrays are refused, so the test below would notice them."""
    with pytest.raises(PickleUsed):
        pickle.loads(pickle.dumps({"a": 1}))
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        np.load(tmp_path / "o.npy")
    buffer = io.BytesIO(pickle.dumps([1]))
    with pytest.raises(PickleUsed):
        pickle.Unpickler(buffer).load()
    with pytest.raises(AssertionError, match="pickle-like"):
        _scan(tmp_path)


def test_every_artifact_loads_without_pickle(tmp_path, monkeypatch):
    from avrec.data.splits import Split, random_split
    from avrec.encoders.cache import EmbeddingCache
    from avrec.kg.graph import KnowledgeGraph, build_kg
    from avrec.models.versions import VersionHome
    from avrec.policies.registry import load_policy, make_policy
    from avrec.serve import EventStore, RecommenderService, ServeConfig

    cache = tmp_path / "embeddings"
    monkeypatch.setenv("AVREC_CACHE", str(cache))
    data = tiny_dataset()
    users = ["u0", "u20", "nobody"]
    expected: dict[str, list] = {}
    names = available_models()
    assert {"pop", "ease", "hybrid", "content", "pipeline"} <= set(names), names
    for name in names:
        folder = tmp_path / "models" / name
        if name == "pipeline":
            fit_tiny_pipeline(folder)
        else:
            settings = SMALL.get(name, {})
            if "embedding_cache" in create_model(name).config.__dataclass_fields__:
                settings = settings | {"embedding_cache": str(cache)}
            create_model(name, **settings).fit(data).save(folder)
        expected[name] = Recommender.load(folder).recommend(users, k=5)[0].tolist()

    # a versioned folder with a learning policy's saved state, through `avrec update`
    home = fit_tiny(tmp_path / "home", "itemknn")
    store_path = tmp_path / "events.sqlite3"
    service = RecommenderService(home, EventStore(store_path), ServeConfig(insecure_dev=True, search=False,
                                 watch_interval=0, policy="thompson", cache_dir=str(cache)))
    for u in ("u1", "u2", "u16"):
        listed = service.recommend(u, k=5)
        service.feedback([{"user_id": u, "item_id": listed["items"][0]["item_id"], "event": "like",
                           "impression_id": listed["impression_id"]}])
    service.close()
    service.store.close()
    assert main(["update", str(home), "--store", str(store_path), "--policy", "thompson"]) == 0
    assert main(["logs", "export", str(store_path), "--out", str(tmp_path / "logs")]) == 0
    assert main(["fit", str(_dataset_folder(tmp_path, data)), "--model", "pop",
                 "--out", str(tmp_path / "fitted"), "--run-dir", str(tmp_path / "run")]) == 0
    build_kg(data.items).save(tmp_path / "kg")
    random_split(data, seed=1).save(tmp_path / "split")
    policy = make_policy("linucb")
    policy.save(tmp_path / "policy")

    files = _scan(tmp_path)
    assert any(p.suffix == ".safetensors" for p in files)

    # now load everything with pickle disabled
    disable_pickle(monkeypatch)
    for name in names:
        loaded = Recommender.load(tmp_path / "models" / name)
        assert loaded.recommend(users, k=5)[0].tolist() == expected[name], name
    loaded_home = Recommender.load(home)
    assert loaded_home.n_items == 40
    versions = VersionHome(home).versions()
    assert [v["name"] for v in versions] == ["v0001", "v0002"] and versions[-1]["current"]
    saved_policy, meta = load_policy(home / "versions" / "v0002" / "policy")
    assert saved_policy.name == "thompson" and meta["impressions_upto"] >= 3
    store_cache = EmbeddingCache(cache)
    indexes = list((cache / "embeddings").glob("*/*.json"))
    assert indexes, "the content models wrote no embedding cache"
    for index in indexes:  # each model's vectors read back through the cache (safetensors shards + JSON)
        model_id = json.loads(index.read_text())["model_id"]
        assert store_cache.count(model_id) > 0, model_id
    before = {i: store_cache.count(json.loads(i.read_text())["model_id"]) for i in indexes}
    refit = create_model("content", embedding_cache=str(cache)).fit(data)  # its vectors come from the cache
    assert refit.recommend(users, k=5)[0].tolist() == expected["content"]
    assert {i: store_cache.count(json.loads(i.read_text())["model_id"]) for i in indexes} == before
    for table in (tmp_path / "logs").glob("*.parquet"):
        assert len(pd.read_parquet(table)) > 0, table
    json.loads((tmp_path / "logs" / "schema.json").read_text())
    for record in (tmp_path / "run").glob("*.json"):
        json.loads(record.read_text())
    assert Recommender.load(tmp_path / "fitted").name == "pop"
    assert KnowledgeGraph.load(tmp_path / "kg") is not None
    split = Split.load(tmp_path / "split")
    assert split.train.n_interactions + split.valid.n_interactions + split.test.n_interactions > 0
    assert load_policy(tmp_path / "policy")[0].name == "linucb"


def _dataset_folder(tmp_path: Path, data) -> Path:
    from avrec.data.io import write_folder

    return write_folder(data.items, data.interactions_frame(), tmp_path / "data")
