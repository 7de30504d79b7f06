"""Extractive item summaries and ``avrec summarize``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from avrec.cli import main
from avrec.errors import DataError
from avrec.explain import generator_available
from avrec.explain.summarize import SummaryConfig, central_sentences, metadata_line, summarize_item, summarize_items

DATA = Path(os.environ.get("AVREC_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")

OVERVIEW = (
    "Batman raises the stakes in his war on crime. With the help of Lt. Jim Gordon and District Attorney Harvey "
    "Dent, Batman sets out to dismantle the remaining criminal organizations that plague the streets. The "
    "partnership proves to be effective, but they soon find themselves prey to a reign of chaos unleashed by a "
    "rising criminal mastermind known as the Joker. Popcorn is sold in the lobby."
)


def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["m1", "m2", "s1"],
            "title": ["The Dark Knight", "Quiet Film", "Song One"],
            "year": ["2008", "1970", ""],
            "genres": ["Action|Crime|Drama|Thriller", "Drama", ""],
            "director": ["Christopher Nolan", "", ""],
            "artist": ["", "", "The Band"],
            "tags": ["batman|joker|dark", "slow|quiet", "indie|lo-fi"],
            "overview": [OVERVIEW, "", ""],
        }
    )


def test_extractive_summary_is_verbatim_and_budgeted():
    s = summarize_item(items(), "m1")
    assert s["item_id"] == "m1" and s["title"] == "The Dark Knight" and s["generated"] is False
    assert s["summary"].startswith("The Dark Knight (2008) · Action, Crime, Drama · directed by Christopher Nolan. ")
    assert 1 <= len(s["sources"]) <= 2
    for src in s["sources"]:
        assert src["field"] == "overview" and src["span"] in OVERVIEW and src["span"] in s["summary"]
    assert "Lt. Jim Gordon" in OVERVIEW and not any(src["span"].endswith("Lt.") for src in s["sources"])
    assert "Popcorn" not in s["summary"]  # the off-topic sentence shares no words with the rest
    body = " ".join(src["span"] for src in s["sources"])
    assert len(body.split()) <= SummaryConfig().max_words
    positions = [OVERVIEW.index(src["span"]) for src in s["sources"]]
    assert positions == sorted(positions)  # original order kept


def test_central_sentences_budget_and_single_sentence():
    picked = central_sentences(OVERVIEW, k=1, max_words=12)
    assert len(picked) == 1 and len(picked[0].split()) <= 12
    assert central_sentences("One short line", k=2, max_words=10) == ["One short line"]
    assert central_sentences("", k=2, max_words=10) == []


def test_items_without_text_use_metadata_and_tags():
    s = summarize_item(items(), "s1")
    assert s["summary"] == "Song One · by The Band. Tags: indie, lo-fi."
    assert s["sources"] == [{"field": "tags", "span": "indie|lo-fi"}]
    assert metadata_line(items().iloc[1]) == "Quiet Film (1970) · Drama"
    assert [x["item_id"] for x in summarize_items(items(), ["s1", "m2"])] == ["m2", "s1"]


def test_unknown_item():
    with pytest.raises(DataError, match="'zz'"):
        summarize_item(items(), "zz")


def test_cli_summarize(tmp_path, capsys):
    folder = tmp_path / "ds"
    folder.mkdir()
    items().to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u"], "item_id": ["m1"]}).to_csv(folder / "interactions.csv", index=False)
    assert main(["summarize", str(folder), "--item", "m1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == summarize_item(items(), "m1")
    assert main(["summarize", str(folder), "--item", "m1", "--sentences", "1"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.count(". ") >= 1 and text.startswith("The Dark Knight (2008)")
    assert main(["summarize", str(folder), "--item", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_cli_summarize_from_model_folder(tmp_path, capsys):
    from avrec.data.dataset import build_dataset
    from avrec.models.registry import create_model

    ds = build_dataset(items(), pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["m1", "m2", "s1"]}))
    folder = create_model("pop").fit(ds).save(tmp_path / "model")
    assert main(["summarize", str(folder), "--item", "m1"]) == 0
    assert "Batman" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("AVREC_TEST_LLM") != "1" or not generator_available(),
                    reason="set AVREC_TEST_LLM=1 with the 'llm' extra installed to run SmolLM2")
def test_generated_summary_is_verified(tmp_path):
    from avrec.explain import SmolLMGenerator, verify_text

    gen = SmolLMGenerator(cache_dir=tmp_path / "smol")
    s = summarize_item(items(), "m1", generator=gen)
    extractive = summarize_item(items(), "m1")["summary"]
    assert gen.stats["accepted"] + gen.stats["rejected"] == 1
    if s["generated"]:
        allowed = [str(v) for v in items().iloc[0].tolist()] + "Action|Crime|Drama|Thriller|batman|joker|dark".split("|")
        assert verify_text(s["summary"], allowed).ok
    else:
        assert s["summary"] == extractive


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "tmdb-5000-movies").is_dir(), reason="needs AVREC_DATA with TMDB")
def test_ml_latest_small_summaries(monkeypatch):
    from avrec.data.builtin import load_dataset
    from avrec.data.io import DataConfig

    monkeypatch.setenv("AVREC_DATA", str(DATA))
    ds = load_dataset("ml-latest-small", DataConfig(enrich=["tmdb"]))
    s = summarize_item(ds.items, "1")
    assert s["summary"].startswith("Toy Story (1995)") and "Woody" in s["summary"]
    sample = ds.items.sample(200, random_state=0)
    for out, (_, row) in zip(summarize_items(sample), sample.iterrows()):
        for src in out["sources"]:
            assert src["span"] in str(row[src["field"]])
