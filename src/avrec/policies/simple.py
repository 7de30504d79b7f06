"""Policies over the retriever's scores alone: greedy, epsilon-greedy per slot, Plackett–Luce softmax."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from avrec.policies.base import SlatePolicy, best_of, standardise


class Greedy(SlatePolicy):
    """Today's behaviour: the best remaining item at every slot (propensity 1, ties shared)."""

    name: ClassVar[str] = "greedy"


class EpsilonGreedy(SlatePolicy):
    """Per slot: the best remaining item with probability 1 - ε, else a uniformly drawn remaining one."""

    name: ClassVar[str] = "epsilon"

    def slot_probs(self, plan: np.ndarray, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        eps = self.config.epsilon
        uniform = available / available.sum()
        return (1 - eps) * best_of(plan, available)[0] + eps * uniform


class Softmax(SlatePolicy):
    """Plackett–Luce sampling without replacement: slot probabilities ∝ exp(z / temperature) over the
    remaining candidates, ``z`` the scores standardised over the request's candidates."""

    name: ClassVar[str] = "softmax"

    def plan(self, scores: np.ndarray, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (standardise(scores) / self.config.temperature)[None, :]

    def slot_probs(self, plan: np.ndarray, scores: np.ndarray, available: np.ndarray) -> np.ndarray:
        z = np.where(available, plan[0], -np.inf)
        w = np.exp(z - z[available].max())
        return w / w.sum()
