"""Training helpers shared by every trainer in avrec (BPR epochs, the hybrid's towers, the fine-tuners) and
the one coordinate search that tunes settings on validation (fusion weights, field weights)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class EarlyStopping:
    """Keeps the best validation score (higher is better) and says when ``patience`` checks passed without
    an improvement of more than ``min_delta``. Its state is plain data, so a resumed run continues it.
    """

    patience: int
    min_delta: float = 1e-5
    best_score: float = float("-inf")
    best_step: int = 0
    bad_checks: int = 0
    stopped: bool = False

    def update(self, score: float, step: int) -> bool:
        """Record a validation ``score`` at ``step``; True when it is the new best (keep this state)."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_step, self.bad_checks = float(score), int(step), 0
            return True
        self.bad_checks += 1
        if self.bad_checks >= self.patience:
            self.stopped = True
        return False

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EarlyStopping:
        return cls(**state)


def coordinate_search(
    objective: Callable[[dict[str, float]], float | np.ndarray],
    starts: list[dict[str, float]],
    grids: Mapping[str, Sequence[float]],
    passes: int = 3,
    min_gain: float = 1e-6,
    allowed: Callable[[dict[str, float]], bool] = lambda params: True,
) -> tuple[dict[str, float], float]:
    """Settings that maximise ``objective`` (a validation score), by coordinate ascent over ``grids``.

    Every start is scored and the best is the first incumbent, so the result is never worse on the
    objective than any start (the hybrid's fusion starts from each single component, so the fused score
    is never below its best part on validation). Each pass tries every grid value of one setting at a
    time with the others fixed; the search stops after a pass without a change.

    ``objective`` may return one score per validation fold (``ValidationSet.ndcg_folds``): a change is then
    kept only when the mean gains more than ``min_gain`` *and* no fold loses, so a setting that helps on
    one part of the data by luck and hurts on the other is not taken. The returned score is the mean.
    """
    def evaluate(params: dict[str, float]) -> np.ndarray:
        return np.atleast_1d(np.asarray(objective(params), dtype=np.float64))

    scored = [(evaluate(s), i) for i, s in enumerate(starts)]
    best, index = max(scored, key=lambda t: (float(t[0].mean()), -t[1]))
    params = dict(starts[index])
    for _ in range(passes):
        changed = False
        for name, grid in grids.items():
            for value in grid:
                if value == params.get(name):
                    continue
                trial = params | {name: float(value)}
                if not allowed(trial):
                    continue
                score = evaluate(trial)
                gain = score - best
                if gain.mean() > min_gain and (gain >= 0).all():
                    params, best, changed = trial, score, True
        if not changed:
            break
    return params, float(best.mean())
