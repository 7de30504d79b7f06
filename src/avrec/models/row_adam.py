"""Row-wise ("lazy") AdamW for embedding tables: the towers' sampled softmax on big catalogues."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class RowAdamW:
    """AdamW for the ID embedding tables that updates only the rows a step used (item pool, batch users).

    With a sampled softmax a step touches a few thousand of a million rows; a dense AdamW step would still
    read and write every row of both tables and their two moment buffers. Moments of untouched rows stay
    as they are ("lazy" Adam); bias correction uses the global step count.
    """

    def __init__(self, model: Any, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.tables = [(e.weight, kind) for e, kind in ((model.item_id, "items"), (model.item_id_bias, "items"),
                                                         (model.user_id, "users")) if e is not None]
        self.moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w, _ in self.tables]
        self.lr, self.weight_decay, self.betas, self.eps, self.t = lr, weight_decay, betas, eps, 0

    def params(self) -> list[torch.Tensor]:
        return [w for w, _ in self.tables]

    @torch.no_grad()
    def step(self, items: np.ndarray, users: np.ndarray) -> None:
        self.t += 1
        b1, b2 = self.betas
        scale = self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for (w, kind), (m, v) in zip(self.tables, self.moments):
            if w.grad is None:
                continue
            rows = torch.from_numpy(np.unique(items if kind == "items" else users).astype(np.int64))
            g = w.grad[rows]
            m[rows] = b1 * m[rows] + (1 - b1) * g
            v[rows] = b2 * v[rows] + (1 - b2) * g * g
            w[rows] = w[rows] * (1 - self.lr * self.weight_decay) - scale * m[rows] / (v[rows].sqrt() + self.eps)
            w.grad = None


__all__ = ["RowAdamW"]
