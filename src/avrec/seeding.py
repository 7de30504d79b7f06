"""The one place that seeds the global random generators (bottom layer: imports nothing of avrec).

Run folders (:mod:`avrec.run`) and the fine-tuning jobs (:mod:`avrec.finetune`) call
:func:`seed_everything` so a run can be repeated. Models also take their own ``seed`` setting and
draw from their own generators, so results do not hinge on the global state alone.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device) with ``seed``.

    torch is seeded when it is installed (it is imported for that); ``PYTHONHASHSEED`` is set for
    subprocesses when unset (this process's hash seed is fixed at start-up).
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():  # pragma: no cover - CPU-only here
            torch.cuda.manual_seed_all(seed)


__all__ = ["seed_everything"]
