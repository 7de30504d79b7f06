"""DDP: two processes under torchrun (gloo on CPU) reach the weights one process reaches with the same
global batch and seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from finetune_helpers import make_tiny_bert

WORKER = textwrap.dedent('''
    import json, sys
    import numpy as np, torch
    from safetensors.torch import save_file
    from avrec.finetune.ranker import CrossEncoderRanker, RankerConfig
    from avrec.finetune.trainer import Trainer, TrainConfig, rank_zero, seed_everything, trainable_state

    model_dir, out, accum = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    seed_everything(11)
    model = CrossEncoderRanker(RankerConfig(model=model_dir, max_length=24, user_max_tokens=8,
                                            finetune="full", dropout=0.0))
    rng = np.random.default_rng(0)
    model.pairs.item_ids = [list(rng.integers(1000, 2000, 10)) for _ in range(20)]
    examples = [(list(rng.integers(1000, 2000, 6)), int(rng.integers(20)), float(rng.integers(2)))
                for _ in range(70)]

    def collate(batch):
        x = model.pairs.batch([b[0] for b in batch], [b[1] for b in batch])
        x["labels"] = torch.tensor([b[2] for b in batch])
        return x

    def loss_fn(m, b):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            m(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b["labels"])

    cfg = TrainConfig(batch_size=8, lr=1e-3, max_steps=6, grad_accum=accum, log_every=0, seed=3)
    result = Trainer(model, examples, collate, loss_fn, cfg, log=lambda m: None).train()
    if rank_zero():
        save_file(trainable_state(model), out)
        with open(out + ".json", "w") as f:
            json.dump({"losses": result.losses, "world_size": result.world_size}, f)
''')


def _gloo_ok() -> str | None:
    if not torch.distributed.is_available():
        return "torch.distributed is not available in this torch build"
    if not torch.distributed.is_gloo_available():
        return "the gloo backend is not available in this torch build"
    import importlib.util

    if importlib.util.find_spec("torch.distributed.run") is None:
        return "torchrun (torch.distributed.run) is not available"
    return None


@pytest.mark.timeout(900)  # two torch processes on a busy 2-core machine can take minutes
def test_two_processes_match_one(tmp_path):
    reason = _gloo_ok()
    if reason:
        pytest.skip(reason)
    from safetensors.torch import load_file

    model_dir = make_tiny_bert(tmp_path / "tiny", dropout=0.0)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    one = tmp_path / "one.safetensors"
    run = subprocess.run([sys.executable, str(script), str(model_dir), str(one), "1"], env=env,
                         capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stderr[-2000:]
    two = tmp_path / "two.safetensors"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(model_dir), str(two), "2"], env=env, capture_output=True, text=True,
                         timeout=420)
    if run.returncode != 0 and ("Address already in use" in run.stderr or "EADDRINUSE" in run.stderr):
        pytest.skip("torchrun could not open a local rendezvous port")
    assert run.returncode == 0, run.stderr[-3000:]
    meta_one = json.loads((tmp_path / "one.safetensors.json").read_text())
    meta_two = json.loads((tmp_path / "two.safetensors.json").read_text())
    assert meta_one["world_size"] == 1 and meta_two["world_size"] == 2
    # 2 processes × 2 accumulation steps × 2 examples = the same global batch of 8
    for a, b in zip(meta_one["losses"], meta_two["losses"]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    s1, s2 = load_file(str(one)), load_file(str(two))
    assert s1.keys() == s2.keys()
    moved = 0
    base = load_file(str(model_dir / "model.safetensors"))
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=1e-4, atol=1e-5, msg=k)
        short = k[len("encoder."):] if k.startswith("encoder.") else None
        if short in base and not torch.equal(base[short], s1[k]):
            moved += 1
    assert moved > 0, "training did not change the encoder"
