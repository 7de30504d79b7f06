"""Linear contextual bandits over per-candidate features: LinUCB and linear Thompson sampling.

Both keep a ridge regression of the reward on the features: ``A = ridge·I + Σ κ² x xᵀ`` and
``b = ridge·θ₀ + Σ κ r x``, ``θ = A⁻¹ b``. ``κ`` is the examination probability of the slot the item was
shown in (a position-based click model, :mod:`avrec.policies.clicks`): the expected reward of a shown item
is ``κ · θᵀx``, so the regressor is ``κ x``. ``θ₀`` is the prior: ``prior_score_weight`` on the
standardised retriever score (feature column :data:`SCORE_COLUMN`), so an untrained policy keeps the
retriever's order. Items are counted in ``A`` when shown (:meth:`observe`) and their reward added to ``b``
when it comes (:meth:`reward`): the same sums as a batch fit once every reward is in.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from avrec.errors import DataError
from avrec.policies.base import SlatePolicy

#: the column of the standardised retriever score in the feature matrix (:mod:`avrec.policies.features`)
SCORE_COLUMN = 1


class LinearPolicy(SlatePolicy):
    """Shared ridge-regression state of LinUCB and Thompson sampling."""

    learns: ClassVar[bool] = True
    A: np.ndarray | None = None
    b: np.ndarray | None = None

    def _init(self, d: int) -> None:
        if self.A is not None:
            if self.A.shape[0] != d:
                raise DataError(f"{self.name} policy: features have {d} columns, its parameters {self.A.shape[0]}")
            return
        r = self.config.ridge
        self.A = r * np.eye(d)
        prior = np.zeros(d)
        if d > SCORE_COLUMN:
            prior[SCORE_COLUMN] = self.config.prior_score_weight
        self.b = r * prior

    @staticmethod
    def _kappa(n: int, examination: np.ndarray | None) -> np.ndarray:
        return np.ones(n) if examination is None else np.asarray(examination, dtype=np.float64)

    def observe(self, features: np.ndarray, examination: np.ndarray | None = None) -> None:
        x = np.asarray(features, dtype=np.float64)
        self._init(x.shape[1])
        assert self.A is not None
        xk = x * self._kappa(len(x), examination)[:, None]
        self.A += xk.T @ xk
        self.version += 1

    def reward(self, features: np.ndarray, rewards: np.ndarray, examination: np.ndarray | None = None) -> None:
        x = np.asarray(features, dtype=np.float64)
        self._init(x.shape[1])
        assert self.b is not None
        self.b += x.T @ (self._kappa(len(x), examination) * np.asarray(rewards, dtype=np.float64))
        self.version += 1

    def posterior(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(θ, A⁻¹) of the ridge regression."""
        self._init(d)
        assert self.A is not None and self.b is not None
        cov = np.linalg.inv(self.A)
        return cov @ self.b, cov

    def state(self) -> dict[str, np.ndarray]:
        if self.A is None or self.b is None:
            return {}
        return {"A": self.A, "b": self.b, "version": np.array([self.version], dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if "A" in state:
            A, b = np.asarray(state["A"], np.float64), np.asarray(state["b"], np.float64)
            if A.ndim != 2 or A.shape[0] != A.shape[1] or b.shape != (A.shape[0],):
                raise DataError(f"{self.name} policy: saved parameters have shapes {A.shape} and {b.shape}")
            self.A, self.b = A.copy(), b.copy()
            self.version = int(state.get("version", np.array([0]))[0])


class LinUCB(LinearPolicy):
    """The best remaining item by ``θᵀx + α √(xᵀA⁻¹x)`` (deterministic given the state)."""

    name: ClassVar[str] = "linucb"

    def plan(self, scores: np.ndarray, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        theta, cov = self.posterior(x.shape[1])
        bonus = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", x, cov, x), 0.0))
        return (x @ theta + self.config.alpha * bonus)[None, :]


class Thompson(LinearPolicy):
    """Linear Thompson sampling: ``samples`` draws θ ~ N(θ̂, noise² A⁻¹) per request; each slot takes the
    best remaining item of one uniformly chosen draw, so its propensity is the share of draws that agree."""

    name: ClassVar[str] = "thompson"

    def plan(self, scores: np.ndarray, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        theta, cov = self.posterior(x.shape[1])
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)))
        draws = theta[None, :] + self.config.noise * rng.standard_normal((self.config.samples, len(theta))) @ chol.T
        return draws @ x.T
