"""The guides in docs/architecture.md run as written: the "add a model" example passes the shared suite
and joins the hybrid as a component."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from avrec.models.registry import create_model, register
from avrec.testing import RecommenderSuite, make_structured_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _python_blocks(section: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    return [re.sub(r"^ {3}", "", b, flags=re.M) for b in blocks]  # the guide indents them under a list item


_folder = Path(tempfile.mkdtemp(prefix="avrec-doc-model-"))
(_folder / "avrec_doc_model.py").write_text(_python_blocks("Add a model")[0], encoding="utf-8")
sys.path.insert(0, str(_folder))
register("genre-pop", "avrec_doc_model:GenrePopularity")


class TestDocumentedModel(RecommenderSuite):
    def make_model(self):
        return create_model("genre-pop")


def test_the_guides_suite_snippet_is_what_this_file_runs():
    snippet = _python_blocks("Add a model")[1]
    assert "class TestGenrePopularity(RecommenderSuite)" in snippet and 'create_model("genre-pop")' in snippet


def test_the_documented_model_joins_the_hybrid():
    data = make_structured_dataset()
    model = create_model("hybrid", use_lm=False, max_steps=20, eval_every=10, dim=16, hidden=16,
                         blend=["ease", "genre-pop"]).fit(data)
    assert model.warm_components == ["ease", "genre-pop"]
    ids, _ = model.recommend(["ua00"], k=5)
    assert all(i is not None and i.startswith("a") for i in ids[0])


def test_readme_links_the_architecture_page():
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "docs/architecture.md" in readme
