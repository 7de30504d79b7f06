"""Generated text under rules (issue 18): the disallowed-terms filter, blocked titles refused in rewrites,
explanations under a rules mask, and ``GET /items/{id}/summary`` under profiles.

The generator here is a scripted stand-in for SmolLM2 (the ``llm`` extra is optional): it returns a fixed
rewrite, so the tests check what the library does with a rewrite that misbehaves, not the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avrec.data.dataset import build_dataset
from avrec.errors import DataError
from avrec.explain import Explainer
from avrec.explain.guard import DEFAULT_DISALLOWED_TERMS, MASK, TermFilter, guard_rewrite, names_forbidden
from avrec.explain.summarize import summarize_row
from avrec.models.registry import create_model


# ---- the filter itself ----------------------------------------------------------------------------
def test_term_filter_masks_whole_words_and_evasions():
    f = TermFilter(["darn", "heck"])
    assert f.clean("What the heck, darn it.") == f"What the {MASK}, {MASK} it."
    assert f.clean("HECK! Darned ducks") == f"{MASK}! {MASK} ducks"  # case and a suffix
    assert f.clean("he\u200bck") == MASK and f.clean("ｈｅｃｋ") == MASK  # zero-width split, full-width letters
    assert f.clean("Checkpoint undarned heckle") == "Checkpoint undarned heckle"  # other words are left alone
    assert f.found("darn and heck") == ["darn", "heck"]
    assert not TermFilter([]) and TermFilter([]).clean("heck") == "heck"


def test_default_list_applies_and_is_small():
    f = TermFilter()
    assert 5 <= len(DEFAULT_DISALLOWED_TERMS) <= 20
    assert f.clean("This shit is the best") == f"This {MASK} is the best"
    assert f.clean("The Shitake mushroom") == "The Shitake mushroom"
    assert f.clean("A Fucking good film") == f"A {MASK} good film"


def test_names_forbidden_whole_words_and_allowed_names():
    assert names_forbidden("You will love Heat.", ["Heat"]) == ["Heat"]
    assert names_forbidden("Because you watched Aliens.", ["Alien"]) == []
    assert names_forbidden('Because you liked "In the Heat of the Night".', ["Heat"],
                           ["In the Heat of the Night"]) == []
    assert names_forbidden("In the Heat of the Night, and Heat too", ["Heat"], ["In the Heat of the Night"]) == ["Heat"]
    text, problems = guard_rewrite("Watch Heat, damn", "template", TermFilter(["damn"]), ["Heat"])
    assert text == "template" and len(problems) == 2


# ---- explanations ------------------------------------------------------------------------------
class ScriptedGenerator:
    """Returns ``reply`` as its rewrite of every explanation (a stand-in for an LM that misbehaves)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def rewrite(self, facts, template, known_entities=None) -> str:
        return self.reply.format(candidate=facts.candidate_title)

    def summarize(self, row, extractive) -> str:
        return self.reply.format(candidate=row["title"])


def small_world():
    items = pd.DataFrame({
        "item_id": [f"i{n}" for n in range(8)],
        "title": ["Robot Dawn", "Robot Dusk", "Robot Noon", "Midnight Slasher", "Robot Eve", "Shit Happens",
                  "Robot Morning", "Robot Night"],
        "genres": ["Sci-Fi", "Sci-Fi", "Sci-Fi", "Horror", "Sci-Fi", "Comedy", "Sci-Fi", "Sci-Fi"],
        "director": ["Ann Lee", "Ann Lee", "Bo Chan", "Ann Lee", "Bo Chan", "Ann Lee", "Bo Chan", "Ann Lee"],
        "overview": ["Robots wake up.", "Robots sleep.", "Robots eat lunch.", "A killer stalks a camp.",
                     "Robots party.", "Things go wrong, shit happens.", "Robots jog.", "Robots dream."],
    })
    rows = [{"user_id": f"u{u}", "item_id": f"i{i}", "weight": 1.0, "timestamp": 1_600_000_000 + i}
            for u in range(6) for i in range(8) if (u + i) % 3 != 0]
    model = create_model("itemknn").fit(build_dataset(items, pd.DataFrame(rows), name="guard"))
    return model, items


def test_explanation_under_rules_never_cites_a_blocked_item():
    model, items = small_world()
    allowed = (items["genres"] != "Horror").to_numpy()
    history = ["i0", "i1", "i3"]  # i3 is the blocked horror film
    free = Explainer(model).explain_history(history, "i7")
    ruled = Explainer(model).explain_history(history, "i7", allowed=allowed)
    assert any(ev.get("item_id") == "i3" or "i3" in ev.get("history_items", []) for ev in free["evidence"])
    assert "Midnight Slasher" in free["text"]  # without rules the shared director cites it
    assert "Midnight Slasher" not in ruled["text"]
    assert all(ev.get("item_id") != "i3" and "i3" not in ev.get("history_items", []) for ev in ruled["evidence"])
    with pytest.raises(DataError, match="blocked"):
        Explainer(model).explain_history(history, "i3", allowed=allowed)
    u = str(model.user_ids[1])
    assert "Midnight Slasher" not in Explainer(model).explain(u, "i7", allowed=allowed)["text"]


def test_generated_rewrite_naming_a_blocked_title_or_a_term_is_refused():
    model, items = small_world()
    allowed = (items["genres"] != "Horror").to_numpy()
    history = ["i0", "i1", "i3"]
    template = Explainer(model).explain_history(history, "i7", allowed=allowed)["text"]
    sneaky = Explainer(model, generator=ScriptedGenerator("Fans of Midnight Slasher love {candidate}."))
    out = sneaky.explain_history(history, "i7", allowed=allowed)
    assert out["text"] == template and sneaky.guard_stats["refused"] == 1
    assert "blocked title" in sneaky.last_guard_problems[0]
    rude = Explainer(model, generator=ScriptedGenerator("This shit is {candidate}."))
    assert rude.explain_history(history, "i7", allowed=allowed)["text"] == template
    fine = Explainer(model, generator=ScriptedGenerator("You may like {candidate}."))
    assert fine.explain_history(history, "i7", allowed=allowed)["text"] == "You may like Robot Night."


def test_template_text_masks_a_term_from_item_data():
    model, _ = small_world()
    text = Explainer(model).explain_history(["i0", "i1"], "i5")["text"]
    assert "Shit" not in text and MASK in text
    assert "Shit" in Explainer(model, disallowed_terms=[]).explain_history(["i0", "i1"], "i5")["text"]


def test_summaries_mask_terms_and_refuse_bad_rewrites():
    _, items = small_world()
    row = items.iloc[5]
    s = summarize_row(row)
    assert "shit" not in s["summary"].lower() and MASK in s["summary"]
    assert all("shit" not in src["span"].lower() for src in s["sources"])
    g = summarize_row(items.iloc[0], generator=ScriptedGenerator("{candidate}: Midnight Slasher, again."),
                      forbidden_titles=["Midnight Slasher"])
    assert g["generated"] is False and "Midnight Slasher" not in g["summary"]
    ok = summarize_row(items.iloc[0], generator=ScriptedGenerator("{candidate}: robots wake up."))
    assert ok["generated"] is True and ok["summary"] == "Robot Dawn: robots wake up."


# ---- the server: summaries and explanations under profiles ------------------------------------------
def test_summary_endpoint_under_profiles(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app

    model, items = small_world()
    config = ServeConfig(search=False, watch_interval=0, log_impressions=False,
                         profiles={"kids": {"blocked_values": {"genres": ["Horror"]}}},
                         disallowed_terms=["robots"])
    service = RecommenderService(None, EventStore(tmp_path / "e.sqlite3"), config, model=model)
    with TestClient(create_app(service, watch=False)) as client:
        r = client.get("/items/i3/summary")
        assert r.status_code == 200 and "A killer stalks a camp." in r.json()["summary"]
        r = client.get("/items/i3/summary", params={"profile": "kids"})
        assert r.status_code == 404 and "kids" in r.json()["error"]
        r = client.get("/items/i0/summary", params={"profile": "kids"})
        body = r.json()
        assert r.status_code == 200 and "Robots" not in body["summary"] and MASK in body["summary"]
        assert client.get("/items/nope/summary").status_code == 404
        assert client.get("/items/i0/summary", params={"profile": "adults"}).status_code == 400
        health = client.get("/health").json()
        assert health["profiles"] == ["kids"] and health["rerank"] is None
        expl = client.get("/explain", params={"user_id": str(model.user_ids[1]), "item_id": "i7",
                                              "profile": "kids"}).json()
        assert "Midnight Slasher" not in expl["text"] and "Robots" not in expl["text"]
        listed = client.get("/recommend", params={"user_id": str(model.user_ids[1]), "explain": True,
                                                  "profile": "kids"}).json()["items"]
        assert listed and all("Midnight Slasher" not in it["explanation"] for it in listed)
        assert "i3" not in {it["item_id"] for it in listed}
    assert np.all(service.state.rule_masks[("kids",)] == (items["genres"] != "Horror").to_numpy())
