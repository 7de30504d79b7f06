"""Every model fits or refuses before allocating (caps lowered by config, never by allocating), and the
hybrid's size-dependent path (sampled softmax, sampled validation, IVF, components chosen by size)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from avrec.cli import main
from avrec.data.io import load_folder
from avrec.data.synth import SynthConfig, synthesize
from avrec.errors import ScaleError
from avrec.eval.validation import ValidationSet
from avrec.models.base import Recommender
from avrec.models.registry import available_models, create_model
from avrec.models.scale import Size, batched_ndcg, memory_budget, score_batch_rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "synth"
    synthesize(out, SynthConfig(n_items=1500, n_users=300, n_interactions=9000, seed=11))
    return out


@pytest.fixture(scope="module")
def dataset(folder):
    return load_folder(folder)


#: a setting per model that makes the small synthetic dataset "too big" for it
LOWERED = {
    "ease": ({"max_items": 1000}, "1,500 items need a dense 1,500×1,500 item×item matrix"),
    "itemknn": ({"max_pairs": 1000}, "item pairs to count"),
}
#: models with no cap of their own refuse through the memory budget
BUDGET_ONLY = ("seqknn", "als", "bpr")


@pytest.mark.parametrize("name", sorted(LOWERED))
def test_a_model_over_its_cap_refuses_before_fitting(dataset, name):
    settings, message = LOWERED[name]
    model = create_model(name, settings)
    with pytest.raises(ScaleError, match=message) as info:
        model.fit(dataset)
    text = str(info.value)
    assert text.startswith(f"{name}: ") and "use " in text and "\n" not in text
    assert model.items is None and model.seen is None  # refused before the fit allocated anything


@pytest.mark.parametrize("name", BUDGET_ONLY)
def test_a_model_over_the_memory_budget_refuses(dataset, name, monkeypatch):
    monkeypatch.setenv("AVREC_MEMORY_GB", "0.000001")
    model = create_model(name)
    with pytest.raises(ScaleError, match="memory budget") as info:
        model.fit(dataset)
    assert str(info.value).startswith(f"{name}: ") and model.items is None


def test_every_registered_model_takes_a_size_check(dataset):
    """check_size is part of the contract: every model answers it (None = fits) for this small dataset."""
    size = Size.of(dataset)
    for name in available_models():
        model = create_model(name)
        assert isinstance(model, Recommender), name
        model.check_size(size)  # raises ScaleError when it cannot fit; these sizes fit every model


def test_ease_refuses_a_million_items_without_data():
    with pytest.raises(ScaleError, match=r"4,000 GB.*use als or hybrid"):
        create_model("ease").check_size(Size(1_000_000, 1_000_000, 20_000_000))


def test_memory_budget_reads_the_environment(monkeypatch):
    monkeypatch.setenv("AVREC_MEMORY_GB", "3")
    assert memory_budget() == 3 * 10**9
    monkeypatch.setenv("AVREC_MEMORY_GB", "lots")
    with pytest.raises(Exception, match="AVREC_MEMORY_GB"):
        memory_budget()


def test_cli_fit_refusal_is_one_line_and_exit_2(folder, tmp_path, capsys):
    code = main(["fit", str(folder), "--model", "ease", "--set", "models.ease.max_items=1000",
                 "--out", str(tmp_path / "m"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ease: 1,500 items need a dense") and "use als or hybrid" in err[-1]
    assert not (tmp_path / "m").exists()


def test_score_batches_shrink_on_big_catalogues():
    assert score_batch_rows(512, 10_000) == 512
    assert score_batch_rows(512, 1_000_000) == 67
    assert score_batch_rows(512, 10**9) == 1


def test_batched_ndcg_equals_the_one_shot_ndcg(dataset):
    seen = dataset.matrix(binary=True)
    rng = np.random.default_rng(0)
    truth = seen.copy()
    truth.data[:] = rng.random(truth.nnz) < 0.3
    truth.eliminate_zeros()
    check = ValidationSet.from_matrices(truth, None)
    scores = rng.random((len(check), dataset.n_items)).astype(np.float32)
    one = check.ndcg(scores)
    import avrec.models.scale as scale

    old = scale.SCORE_BATCH_BYTES
    try:
        scale.SCORE_BATCH_BYTES = 4 * dataset.n_items * 7  # batches of 7 users
        batched = batched_ndcg(check, lambda rows: scores[rows], dataset.n_items)
    finally:
        scale.SCORE_BATCH_BYTES = old
    assert batched == pytest.approx(one, abs=1e-9)


def test_hybrid_chooses_its_parts_by_size(dataset, monkeypatch, tmp_path):
    """Above scale_items: sampled softmax, sampled validation, IVF retrieval, no self-tuning components, LM
    only from the cache; EASE over its cap is left out with its reason; recommendations still work."""
    import avrec.models.hybrid_scale as hybrid_scale

    monkeypatch.setattr(hybrid_scale, "LM_MAX_UNCACHED", 100)  # 1,500 uncached documents count as too many
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("hybrid", {"scale_items": 500, "tower_negatives": 200, "max_steps": 40,
                                        "eval_every": 20, "ease": {"max_items": 1000},
                                        "embedding_cache": str(tmp_path / "empty-cache")})
        model.fit(dataset)
    plan = model.report["scale_plan"]
    assert {"validation", "component_tuning", "retrieval", "lm", "content"} <= set(plan)
    assert model.config.tower_negatives == 200 and model.config.valid_users == 1000
    assert model.config.use_lm is False and "content" not in model.config.cold_blend
    assert model.ann is not None and model.ann.kind == "ivf"
    assert "ease" not in model.components and "max_items=1,000" in model.report["skipped_components"]["ease"]
    assert model.report["best_step"] > 0
    ids, scores = model.recommend(list(dataset.user_ids[:5]), k=10)
    assert (ids != None).all() and np.isfinite(scores).all()  # noqa: E711 (elementwise)


def test_small_catalogues_keep_the_full_softmax(dataset):
    from avrec.models.hybrid_scale import plan_for_size

    model = create_model("hybrid")
    config, why = plan_for_size(model.config, Size.of(dataset))
    assert why == {} and config.tower_negatives == 0 and config.valid_users == 0 and config.ann_kind == "auto"


def test_sampled_softmax_towers_learn_the_tastes(dataset):
    """The sampled-softmax towers rank held-out items well above random on the synthetic tastes."""
    from avrec.data.splits import random_split
    from avrec.eval.evaluate import evaluate_model

    split = random_split(dataset, ratios=(0.8, 0.1, 0.1), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("hybrid", {"scale_items": 500, "tower_negatives": 200, "max_steps": 200,
                                        "blend": [], "cold_blend": [], "use_lm": False})
        model.fit(split.train, valid=split.valid)
    assert model.config.tower_negatives == 200
    result = evaluate_model(model, split, k=10)
    baseline = evaluate_model(create_model("pop").fit(split.train), split, k=10)
    assert result["ndcg@10"] > 1.2 * baseline["ndcg@10"]
