"""Knowledge graph: building, lookups, persistence, features, the kgpath model and the ``avrec kg`` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from avrec.testing import RecommenderSuite, make_structured_dataset

from avrec.cli import main
from avrec.data.dataset import build_dataset
from avrec.errors import ConfigError, DataError
from avrec.kg import KnowledgeGraph, build_kg, decade_of, entity_fields, kg_item_features
from avrec.models.base import Recommender
from avrec.models.registry import create_model

DATA = Path(os.environ.get("AVREC_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def small_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "title": ["Inception", "Memento", "Toy Story", "Heat"],
            "year": ["2010", "2000", "1995", ""],
            "genres": ["Sci-Fi|Thriller", "Thriller|Mystery", "Animation|Comedy", "Crime|Thriller"],
            "director": ["Christopher Nolan", "christopher  NOLAN", "John Lasseter", "Michael Mann"],
            "tags": ["dreams|mind-bending", "memory|Mind-Bending", "toys", ""],
            "studio": ["Warner|Legendary", "Summit", "Pixar|Disney", "Warner"],
            "overview": ["A thief steals | secrets.", "", "", ""],
        }
    )


def test_build_entities_fields_and_normalisation():
    kg = build_kg(small_items())
    assert kg.n_items == 4
    ents = dict(zip(kg.entities["entity"], kg.entities["field"]))
    # first spelling wins for display; case and spacing are ignored when matching
    assert ents["director:Christopher Nolan"] == "director"
    assert "director:christopher  NOLAN" not in ents
    assert ents["genre:Thriller"] == "genres"
    assert ents["decade:2010s"] == "year" and ents["decade:1990s"] == "year"
    assert ents["tag:mind-bending"] == "tags"
    assert ents["studio:Warner"] == "studio"  # any other |-separated column becomes an entity field
    assert not any(e.startswith(("overview:", "title:")) for e in ents)  # free text is not an entity
    nolan = kg.entity_column("DIRECTOR: christopher nolan")
    assert nolan >= 0 and kg.entity_column("director:Nobody") == -1 and kg.entity_column("nonsense") == -1
    assert sorted(kg.item_ids[kg.entity_items()[:, nolan].indices]) == ["i1", "i2"]
    assert int(kg.entities["n_items"][nolan]) == 2
    thriller = kg.entity_column("genre:thriller")
    assert kg.adjacency[:, thriller].nnz == 3
    assert set(kg.entities["entity"][kg.item_entities("i4")]) == {"genre:Crime", "genre:Thriller", "director:Michael Mann",
                                                                  "studio:Warner"}
    assert entity_fields(small_items()) == ["year", "genres", "director", "tags", "studio"]
    assert decade_of("1994") == "1990s" and decade_of("unknown") == ""


def test_min_items_and_unknown_field():
    kg = build_kg(small_items(), min_items=2)
    assert (kg.entities["n_items"] >= 2).all()
    assert "director:Christopher Nolan" in set(kg.entities["entity"]) and "genre:Animation" not in set(kg.entities["entity"])
    with pytest.raises(DataError, match="'nope'"):
        build_kg(small_items(), fields=["genres", "nope"])


def test_idf_and_features():
    kg = build_kg(small_items())
    idf = kg.idf()
    thriller, nolan = kg.entity_column("genre:Thriller"), kg.entity_column("director:Christopher Nolan")
    assert idf[nolan] > idf[thriller] > 0  # rarer entities weigh more
    x = kg_item_features(kg)
    assert x.shape == (4, kg.n_entities)
    # unit rows, except Toy Story, whose entities are all on no other item
    np.testing.assert_allclose(np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()), [1, 1, 0, 1], atol=1e-5)
    sim = (x @ x.T).toarray()
    assert sim[0, 1] > sim[0, 2]  # Inception is closer to Memento (Nolan, Thriller) than to Toy Story
    assert np.all(x[:, kg.entity_column("genre:Animation")].toarray() == 0)  # single-item entities carry no signal
    down = kg_item_features(kg, field_weights={"director": 0.0})
    assert down[:, nolan].nnz == 0


def test_save_load_round_trip_and_networkx(tmp_path):
    kg = build_kg(small_items())
    folder = kg.save(tmp_path / "kg")
    assert {p.name for p in folder.iterdir()} == {"adjacency.safetensors", "entities.parquet", "items.parquet", "kg.json"}
    back = KnowledgeGraph.load(folder)
    assert (back.adjacency != kg.adjacency).nnz == 0
    pd.testing.assert_frame_equal(back.entities, kg.entities)
    assert list(back.item_ids) == list(kg.item_ids)
    assert back.stats() == kg.stats()
    g = kg.to_networkx()
    assert g.number_of_nodes() == kg.n_items + kg.n_entities and g.number_of_edges() == kg.n_edges
    assert g.edges["item:i1", "director:Christopher Nolan"]["field"] == "director"
    with pytest.raises(DataError, match="not a knowledge-graph folder"):
        KnowledgeGraph.load(tmp_path)


def test_link_new_items():
    kg = build_kg(small_items())
    new = pd.DataFrame({"item_id": ["n1"], "director": ["CHRISTOPHER NOLAN"], "genres": ["Western|Thriller"]})
    rows = kg.link(new)
    assert rows.shape == (1, kg.n_entities)
    assert set(kg.entities["entity"][rows.indices]) == {"director:Christopher Nolan", "genre:Thriller"}


def test_stats_counts():
    s = build_kg(small_items()).stats(top=2)
    assert s["items"] == 4 and s["edges"] == sum(f["edges"] for f in s["fields"].values())
    assert s["fields"]["director"]["entities"] == 3
    assert s["fields"]["genres"]["top"][0] == ["genre:Thriller", 3]
    assert s["fields"]["year"]["items_with_any"] == 3


# ---- kgpath model ---------------------------------------------------------------------------------
class TestKGPath(RecommenderSuite):
    def make_model(self):
        return create_model("kgpath")


def test_kgpath_score_is_the_sum_of_entity_paths():
    data = make_structured_dataset()
    model = create_model("kgpath", popularity_tiebreak=0.0).fit(data)
    u, i = 0, model.item_index["a_cold"]
    contrib = model.entity_contributions(u, i)
    assert contrib and all(v > 0 for v in contrib.values())
    score = model.score_users(np.array([u]), np.array([i]))[0, 0]
    assert score == pytest.approx(sum(contrib.values()), rel=1e-5)
    # every contributing entity is linked to the candidate and to at least one history item
    hist = model.seen[u].indices
    for e in contrib:
        assert model.kg.adjacency[i, e] == 1 and model.kg.adjacency[hist, e].nnz >= 1


def test_kgpath_config_validation_and_no_metadata():
    with pytest.raises(ConfigError, match="user_weighting"):
        create_model("kgpath", user_weighting="squared")
    with pytest.raises(ConfigError, match="item_norm"):
        create_model("kgpath", item_norm="max")
    items = pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"]})
    inter = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["x", "y"]})
    with pytest.raises(ConfigError, match="no metadata entities"):
        create_model("kgpath").fit(build_dataset(items, inter))


def test_kgpath_saved_kg_is_not_pickle(tmp_path):
    model = create_model("kgpath").fit(make_structured_dataset())
    folder = model.save(tmp_path / "m")
    assert (folder / "kg" / "adjacency.safetensors").is_file()
    loaded = Recommender.load(folder)
    assert loaded.kg.n_entities == model.kg.n_entities
    np.testing.assert_allclose(loaded.entity_weights, model.entity_weights)


# ---- CLI ------------------------------------------------------------------------------------------
def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ds"
    folder.mkdir()
    small_items().to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i2", "i3"]}).to_csv(folder / "interactions.csv", index=False)
    return folder


def test_cli_kg_build_and_stats(tmp_path, capsys):
    folder = _folder(tmp_path)
    out = tmp_path / "kg"
    assert main(["kg", "build", str(folder), "--out", str(out), "--graphml", str(tmp_path / "g.graphml")]) == 0
    assert "4 items" in capsys.readouterr().out
    assert (tmp_path / "g.graphml").stat().st_size > 0
    assert KnowledgeGraph.load(out).n_entities == build_kg(small_items()).n_entities
    assert main(["kg", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == 4 and "director" in stats["fields"]
    assert main(["kg", "stats", str(folder)]) == 0  # a dataset folder works too
    text = capsys.readouterr().out
    assert "director" in text and "Christopher Nolan (2)" in text


def test_cli_kg_bad_input(tmp_path, capsys):
    assert main(["kg", "stats", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["kg", "build", str(_folder(tmp_path)), "--fields", "genres,nope", "--out", str(tmp_path / "k")]) == 2
    assert "'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "hetrec2011-movielens-2k-v2").is_dir(), reason="needs AVREC_DATA with hetrec + TMDB")
def test_ml_latest_small_enriched_graph(monkeypatch):
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig

    monkeypatch.setenv("AVREC_DATA", str(DATA))
    ds = load_dataset("ml-latest-small", DataConfig(enrich=["tmdb", "hetrec"]))
    kg = build_kg(ds.items)
    assert {"director", "genres", "tags", "keywords", "country", "year"} <= set(kg.entities["field"])
    nolan = kg.entity_column("director:Christopher Nolan")
    titles = set(ds.items["title"].iloc[kg.entity_items()[:, nolan].indices])
    assert {"Memento", "Batman Begins", "Dark Knight, The", "Prestige, The"} <= titles
    assert sp.issparse(kg_item_features(kg))
