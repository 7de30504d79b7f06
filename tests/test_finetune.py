"""Fine-tuning: ranker training, checkpoint/resume, LoRA, MLM and contrastive checkpoints, the CLI.

Everything runs on a 2-layer, 32-wide BERT built in the test (no download) and the generated
two-group catalogue of the model suite, so the file trains in well under a minute on CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avrec.data.documents import build_documents
from avrec.data.splits import random_split
from avrec.errors import ConfigError
from avrec.finetune.contrastive import ContrastiveConfig, info_nce, train_contrastive
from avrec.finetune.data import PairConfig, UserViews, co_consumed_pairs, recent_items, sample_pairs
from avrec.finetune.mlm import MLMConfig, mask_tokens, train_mlm
from avrec.finetune.ranker import CrossEncoderRanker, RankerConfig
from avrec.finetune.ranker_training import RankerTrainingConfig, fit_ranker
from avrec.finetune.trainer import TrainConfig, Trainer, seed_everything, trainable_state
from avrec.models.registry import create_model
from finetune_helpers import make_tiny_bert
from avrec.testing import make_structured_dataset


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def data():
    return make_structured_dataset()


@pytest.fixture(scope="module")
def split(data):
    return random_split(data, seed=0)


@pytest.fixture(scope="module")
def retriever(split):
    return create_model("ease").fit(split.train)


# ---- data ------------------------------------------------------------------------------------------
def test_user_views_and_pairs(split, retriever):
    train = split.train
    views = UserViews(train.items)
    recent = recent_items(train, 5)
    u = 0
    hist = train.history(train.user_ids[u])  # oldest first
    assert [train.item_ids[i] for i in recent[u] if i >= 0] == hist[::-1][:5]
    text = views.view(recent[u])
    assert text.startswith("Liked:") and train.items["title"].iloc[recent[u][0]] in text
    hard, _ = retriever.topk_indices(np.arange(train.n_users), 10, exclude=train.matrix(binary=True))
    pairs = sample_pairs(train, views, PairConfig(positives_per_user=2, hard_negatives=2, random_negatives=1), hard)
    counts = pairs.counts()
    assert counts["positives"] == 2 * train.n_users and counts["negatives"] == 3 * counts["positives"]
    seen = train.matrix(binary=True)
    for v, i, y, u in zip(pairs.view_idx, pairs.item_idx, pairs.label, pairs.user_idx):
        assert (seen[u, i] > 0) == (y == 1.0)  # positives are consumed, negatives are not
    # the target is held out of its own view
    pos = np.flatnonzero(pairs.label == 1)[0]
    title = train.items["title"].iloc[pairs.item_idx[pos]]
    assert f"{title} (" not in pairs.views[pairs.view_idx[pos]]
    with pytest.raises(ConfigError):
        PairConfig(min_history=1)


def test_co_consumed_pairs(data):
    pairs = co_consumed_pairs(data, max_pairs=100)
    assert 0 < len(pairs) <= 100 and pairs.shape[1] == 2
    same_group = np.mean([data.item_ids[a][0] == data.item_ids[b][0] for a, b in pairs])
    assert same_group > 0.95  # co-consumption follows the taste groups


# ---- ranker training -------------------------------------------------------------------------------
def _job(tiny, **train):
    return RankerTrainingConfig(
        ranker=RankerConfig(model=tiny, max_length=48, user_max_tokens=16, finetune="full"),
        pairs=PairConfig(positives_per_user=3, hard_negatives=2, random_negatives=1),
        train=TrainConfig(**{"batch_size": 16, "lr": 2e-3, "max_steps": 30, "log_every": 0, **train}),
        n_candidates=10, eval_users=30,
    )


def test_ranker_loss_goes_down_and_round_trips(tiny, split, retriever, tmp_path):
    job = _job(tiny, eval_every=10)
    seed_everything(0)
    ranker = CrossEncoderRanker(job.ranker)
    ranker.set_items(build_documents(split.train.items))
    # a fixed probe of labelled pairs (another seed than training) to measure the loss before and after
    probe = sample_pairs(split.train, UserViews(split.train.items), PairConfig(seed=99, hard_negatives=0,
                                                                             random_negatives=3))

    def probe_loss() -> float:
        logits = ranker.score(probe.views, probe.view_idx, probe.item_idx)
        return float(torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(logits), torch.from_numpy(probe.label)))

    before = probe_loss()
    result, counts = fit_ranker(ranker, split.train, retriever, job, valid=split.valid)
    assert result.steps == 30 and counts["pairs"] > 0 and len(result.losses) == 30
    assert probe_loss() < before - 0.05, (before, probe_loss())
    assert len(result.evals) == 3 and result.best_metric == max(m for _, m in result.evals)
    ranker.save(tmp_path / "r")
    assert (tmp_path / "r" / "ranker.safetensors").is_file()
    loaded = CrossEncoderRanker.load(tmp_path / "r")
    docs = build_documents(split.train.items)
    ranker.set_items(docs)
    loaded.set_items(docs)
    views = ["Liked: Space Robot (Sci-Fi)", "Liked: Love Wedding (Romance)"]
    vi, ii = np.array([0, 0, 1, 1]), np.array([0, 30, 0, 30])
    np.testing.assert_allclose(ranker.score(views, vi, ii), loaded.score(views, vi, ii), rtol=1e-5, atol=1e-5)
    # it learned the groups: an A-history prefers an A item, a B-history a B item
    a_item, b_item = 0, 30
    s = ranker.score(views, vi, np.array([a_item, b_item, a_item, b_item]))
    assert s[0] - s[1] > s[2] - s[3]


def _crash_after(n_calls, collate):
    calls = {"n": 0}

    def wrapped(batch):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise KeyboardInterrupt("simulated crash")
        return collate(batch)

    return wrapped


def _toy_trainer(tiny, out_dir, collate_wrap=None, **train):
    seed_everything(7)
    model = CrossEncoderRanker(RankerConfig(model=tiny, max_length=24, user_max_tokens=8, finetune="full"))
    rng = np.random.default_rng(0)
    model.pairs.item_ids = [list(rng.integers(1000, 2000, 10)) for _ in range(20)]
    examples = [(list(rng.integers(1000, 2000, 6)), int(rng.integers(20)), float(rng.integers(2))) for _ in range(64)]

    def collate(batch):
        x = model.pairs.batch([b[0] for b in batch], [b[1] for b in batch])
        x["labels"] = torch.tensor([b[2] for b in batch])
        return x

    def loss_fn(m, b):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            m(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b["labels"])

    cfg = TrainConfig(**{"batch_size": 8, "lr": 1e-3, "max_steps": 6, "log_every": 0, "seed": 3, **train})
    c = collate_wrap(collate) if collate_wrap else collate
    return model, Trainer(model, examples, c, loss_fn, cfg, out_dir=out_dir, log=lambda m: None)


def test_checkpoint_resume_gives_identical_state(tiny, tmp_path):
    model_a, trainer_a = _toy_trainer(tiny, tmp_path / "a", checkpoint_every=3)
    trainer_a.train()
    # same run, killed during step 5 (after the step-3 checkpoint), then resumed in a fresh process state
    model_b, trainer_b = _toy_trainer(tiny, tmp_path / "b", collate_wrap=lambda c: _crash_after(4, c),
                                      checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):
        trainer_b.train()
    meta = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert meta["trainer"]["global_step"] == 3
    torch.manual_seed(12345)  # a resumed run must not depend on the RNG state it starts with
    model_c, trainer_c = _toy_trainer(tiny, tmp_path / "b", checkpoint_every=3)
    result = trainer_c.train(resume=True)
    assert result.steps == 6
    sa, sc = trainable_state(model_a), trainable_state(model_c)
    assert sa.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k
    # the dropout-bearing model really used randomness: a different seed gives different weights
    model_d, trainer_d = _toy_trainer(tiny, None, seed=4)
    trainer_d.train()
    assert not all(torch.equal(sa[k], v) for k, v in trainable_state(model_d).items())


def test_grad_accumulation_matches_one_big_batch(tiny):
    m1, t1 = _toy_trainer(tiny, None)
    m1.apply(lambda x: setattr(x, "p", 0.0) if isinstance(x, torch.nn.Dropout) else None)
    t1.train()
    m2, t2 = _toy_trainer(tiny, None, grad_accum=2)
    m2.apply(lambda x: setattr(x, "p", 0.0) if isinstance(x, torch.nn.Dropout) else None)
    t2.train()
    for (k, a), b in zip(trainable_state(m1).items(), trainable_state(m2).values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_lora_trains_only_adapters(tiny, split, retriever):
    job = _job(tiny, max_steps=4)
    job.ranker = RankerConfig(model=tiny, max_length=48, user_max_tokens=16, finetune="lora", lora_r=4,
                              lora_target_modules=["query", "value"])
    seed_everything(0)
    ranker = CrossEncoderRanker(job.ranker)
    assert ranker.lora
    trainable = [n for n, p in ranker.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    before = {n: p.detach().clone() for n, p in ranker.named_parameters()}
    fit_ranker(ranker, split.train, retriever, job)
    after = dict(ranker.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= set(trainable)
    assert any("lora_B" in n for n in changed)
    # "auto" picks full fine-tuning for a small encoder
    assert not CrossEncoderRanker(RankerConfig(model=tiny)).lora
    with pytest.raises(ConfigError):
        RankerConfig(finetune="adapters-maybe")


# ---- encoder adaptation ----------------------------------------------------------------------------
def test_mlm_masking_is_deterministic():
    ids = [101] + list(range(2000, 2030)) + [102]
    a = mask_tokens(ids, {101, 102}, 103, 30000, 0.15, seed=5)
    b = mask_tokens(ids, {101, 102}, 103, 30000, 0.15, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[1] != -100).sum() >= 1 and a[1][0] == -100 and a[1][-1] == -100


def test_mlm_and_contrastive_checkpoints_load_with_text_encoder(tiny, data, tmp_path):
    from avrec.encoders import TextEncoder

    docs = build_documents(data.items)
    texts = docs[:3]
    base = TextEncoder(tiny, max_length=48).encode(texts, show_progress=False)
    out, res = train_mlm(docs, MLMConfig(model=tiny, max_length=48, valid_share=0.1,
                                         train={"batch_size": 8, "max_steps": 8, "lr": 1e-3, "log_every": 0}),
                         tmp_path / "mlm", log=lambda m: None)
    assert res.steps == 8 and (out / "config.json").is_file() and (out / "avrec_finetune.json").is_file()
    mlm_vecs = TextEncoder(str(out), max_length=48).encode(texts, show_progress=False)
    assert mlm_vecs.shape == base.shape and not np.allclose(mlm_vecs, base)
    pairs = co_consumed_pairs(data, max_pairs=200)
    out, res = train_contrastive(docs, pairs, ContrastiveConfig(
        model=tiny, max_length=48, valid_share=0.1,
        train={"batch_size": 16, "max_steps": 10, "lr": 1e-3, "log_every": 0, "eval_every": 5}),
        tmp_path / "con", log=lambda m: None)
    assert res.steps == 10 and len(res.evals) == 2
    con_vecs = TextEncoder(str(out), max_length=48).encode(texts, show_progress=False)
    assert con_vecs.shape == base.shape and not np.allclose(con_vecs, base)


def test_info_nce_masks_repeated_items():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    p = a.clone()
    ids = torch.tensor([1, 2, 3, 4])
    low = info_nce(a, p, ids, ids, 20.0, True)
    p_ids = torch.tensor([5, 5, 6, 7])  # two anchors share a positive: not a negative for each other
    p2 = p.clone()
    p2[1] = p2[0]
    masked = info_nce(a, p2, ids, p_ids, 20.0, False)
    assert torch.isfinite(low) and torch.isfinite(masked) and float(low) < 0.1


# ---- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory, data):
    from avrec.data.io import write_folder

    out = tmp_path_factory.mktemp("two-groups")
    write_folder(data.items, data.interactions_frame(), out)
    return out


def test_cli_finetune_ranker_and_pipeline(tiny, folder, tmp_path, capsys):
    from avrec.cli import main
    from avrec.models.base import Recommender

    out = tmp_path / "ranker"
    code = main(["finetune", "ranker", str(folder), "--out", str(out), "--set", f"ranker.model={tiny}",
                 "--set", "ranker.max_length=48", "--set", "ranker.user_max_tokens=16", "--set", "retriever=ease",
                 "--set", "train.max_steps=6", "--set", "train.batch_size=8", "--set", "train.log_every=0",
                 "--set", "n_candidates=10", "--set", "eval_users=20"])
    assert code == 0, capsys.readouterr().err
    assert (out / "ranker.safetensors").is_file() and (out / "training_report.json").is_file()
    assert "ranker: 6 steps" in capsys.readouterr().out
    # resume from the written checkpoint: nothing left to do, same weights
    assert main(["finetune", "ranker", str(folder), "--out", str(out), "--resume", "--set", f"ranker.model={tiny}",
                 "--set", "ranker.max_length=48", "--set", "ranker.user_max_tokens=16", "--set", "retriever=ease",
                 "--set", "train.max_steps=6", "--set", "train.batch_size=8", "--set", "n_candidates=10"]) == 0
    model_dir = tmp_path / "pipe"
    code = main(["--debug", "fit", str(folder), "--model", "pipeline", "--out", str(model_dir),
                 "--set", "retriever=ease", "--set", f"ranker_path={out}", "--set", "n_candidates=10",
                 "--set", "tune_users=20", "--run-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    model = Recommender.load(model_dir)
    assert model.name == "pipeline" and (model_dir / "ranker" / "ranker.safetensors").is_file()
    assert (model_dir / "retriever" / "config.json").is_file()
    assert "tuning" in model.fit_report or (model_dir / "pipeline_report.json").is_file()
    capsys.readouterr()
    code = main(["recommend", str(model_dir), "--user", str(model.user_ids[0]), "--k", "5"])
    assert code == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 6  # header + 5 rows


def test_cli_finetune_errors(folder, tmp_path, capsys):
    from avrec.cli import main

    assert main(["finetune", "ranker", str(folder), "--out", str(tmp_path / "x"), "--set", "train.lr=fast"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(["finetune", "mlm", str(folder), "--out", str(tmp_path / "x"), "--set", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert main(["finetune", "contrastive", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["finetune", "mlm", str(folder), "--out", str(tmp_path / "x"), "--set", "model=/nonexistent/model"]) == 2
    assert "/nonexistent/model" in capsys.readouterr().err
