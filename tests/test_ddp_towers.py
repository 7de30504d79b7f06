"""DDP towers: two gloo processes under torchrun train the hybrid's towers to the weights one process
reaches with the same data, seed and global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import sys
    import numpy as np, scipy.sparse as sp, torch
    from safetensors.torch import save_file
    from avrec.finetune.distributed import rank_zero
    from avrec.models.towers import ItemFeatures, Towers, TowerTrainConfig, TowerTrainer, item_outputs, user_outputs
    from avrec.testing.data import make_structured_dataset

    out = sys.argv[1]
    torch.set_num_threads(1)
    data = make_structured_dataset(seed=4)
    seen, timestamps = data.matrix(binary=True), data.timestamp_matrix()
    rng = np.random.default_rng(0)
    n_items = data.n_items
    lm = rng.normal(size=(n_items, 12)).astype(np.float32)
    sparse = sp.random(n_items, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    features = ItemFeatures(lm, sparse, groups=((20, 30),), group_dropout=0.3)
    torch.manual_seed(0)
    towers = Towers(n_items, data.n_users, 12, 30, dim=8, hidden=16, use_item_ids=True, use_user_ids=True)
    warm = np.asarray(seen.sum(axis=0)).ravel() > 0
    config = TowerTrainConfig(max_steps=12, batch_users=10, lr=0.02, weight_decay=0.01, id_dropout=0.5,
                              user_id_dropout=0.5, input_keep=0.5, history_len=6, eval_every=4, patience=100, seed=3)

    def validate(model):
        vecs, bias = item_outputs(model, features, warm)
        return float(np.abs(vecs).mean() + np.abs(bias - bias.mean()).mean())

    best_step, best_score, curve = TowerTrainer(towers, features, seen, timestamps, warm, config).train(validate)
    if rank_zero():
        vecs, bias = item_outputs(towers, features, warm)
        users = user_outputs(towers, vecs, seen, timestamps, np.arange(data.n_users), config.history_len)
        # the softmax is blind to a shift of every item's bias, so bias_head.bias gets only rounding noise
        # as its gradient (which Adam scales up): compare what ranks, the scores minus their row mean
        scores = users @ vecs.T + bias
        state = {k: v.detach().clone() for k, v in towers.state_dict().items() if k != "bias_head.bias"}
        state["__scores"] = torch.from_numpy(scores - scores.mean(axis=1, keepdims=True))
        state["__item_vectors"] = torch.from_numpy(vecs)
        state["__curve"] = torch.tensor([s for _, s in curve], dtype=torch.float64)
        state["__best_step"] = torch.tensor([best_step])
        save_file(state, out)
''')


def _gloo_ok() -> str | None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return "torch.distributed with the gloo backend is not available in this torch build"
    return None


@pytest.mark.timeout(900)  # two torch processes on a busy 2-core machine can take minutes
def test_two_processes_train_the_towers_one_process_trains(tmp_path):
    reason = _gloo_ok()
    if reason:
        pytest.skip(reason)
    from safetensors.torch import load_file

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    run = subprocess.run([sys.executable, str(script), str(one)], env=env, capture_output=True, text=True,
                         timeout=420)
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(two)], env=env, capture_output=True, text=True, timeout=420)
    if run.returncode != 0 and ("Address already in use" in run.stderr or "EADDRINUSE" in run.stderr):
        pytest.skip("torchrun could not open a local rendezvous port")
    assert run.returncode == 0, run.stderr[-3000:]
    s1, s2 = load_file(str(one)), load_file(str(two))
    assert s1.keys() == s2.keys()
    assert int(s1["__best_step"]) == int(s2["__best_step"])
    for key in s1:
        torch.testing.assert_close(s2[key], s1[key], rtol=1e-4, atol=1e-5, msg=key)
    torch.manual_seed(0)  # the untrained towers: training must have moved the weights
    from avrec.models.towers import Towers
    from avrec.testing.data import make_structured_dataset

    data = make_structured_dataset(seed=4)
    start = Towers(data.n_items, data.n_users, 12, 30, dim=8, hidden=16, use_item_ids=True, use_user_ids=True)
    assert not torch.allclose(start.state_dict()["lm_proj.weight"], s1["lm_proj.weight"])


@pytest.mark.timeout(900)
def test_avrec_fit_under_torchrun_writes_one_model_and_one_run_record(tmp_path):
    reason = _gloo_ok()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    data, out, run_dir = tmp_path / "data", tmp_path / "model", tmp_path / "run"
    made = subprocess.run([sys.executable, "-m", "avrec.cli", "data", "synth", "--items", "200", "--users", "80",
                           "--interactions", "2500", "--out", str(data), "--seed", "1"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "avrec.cli", "fit", str(data), "--model", "hybrid", "--out", str(out),
                          "--run-dir", str(run_dir), "--set", "models.hybrid.max_steps=20"],
                         env=env, capture_output=True, text=True, timeout=800, cwd=tmp_path)
    if run.returncode != 0 and ("Address already in use" in run.stderr or "EADDRINUSE" in run.stderr):
        pytest.skip("torchrun could not open a local rendezvous port")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("fitted hybrid") == 1  # only rank 0 saves and reports
    from avrec.models.base import Recommender

    model = Recommender.load(out)
    ids, _ = model.recommend(model.user_ids[:3], k=5)
    assert ids.shape == (3, 5)
    assert (run_dir / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model", "run"]
