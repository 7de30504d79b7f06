"""Training helpers shared by every trainer in avrec (BPR epochs, the hybrid's towers, the fine-tuners)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
