"""avrec.seeding: one seed_everything, used by run folders and the fine-tuning jobs."""

from __future__ import annotations

import random

import numpy as np
import torch

from avrec import run, seeding
from avrec.finetune import contrastive, mlm, trainer


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_python_numpy_and_torch():
    seeding.seed_everything(2**32 + 5)  # seeds beyond NumPy's 32-bit range wrap instead of failing
    a = draws()
    seeding.seed_everything(2**32 + 5)
    assert draws() == a
    seeding.seed_everything(6)
    assert draws() != a


def test_one_home():
    assert run.seed_everything is trainer.seed_everything is seeding.seed_everything
    assert mlm.seed_everything is contrastive.seed_everything is seeding.seed_everything
