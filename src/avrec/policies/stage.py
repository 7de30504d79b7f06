"""A policy as a pipeline stage (``Pipeline.extra_stages``): each list's top candidates are re-drawn by the
policy, and the propensities of the last batch are kept for the caller to log."""

from __future__ import annotations

import numpy as np

from avrec.models.base import Recommender
from avrec.pipeline.stages import Context
from avrec.policies.base import Slate, SlatePolicy
from avrec.policies.features import FeatureBuilder


class PolicyStage:
    """Replace each row's first ``ctx.k`` entries by the policy's slate drawn from its first ``n`` entries.

    The rest of the row keeps its order after them. ``last_slates`` holds one :class:`Slate` per row of the
    latest batch (positions into that row), so a caller can log the propensities.
    """

    def __init__(self, policy: SlatePolicy, model: Recommender, seed: int | None = None) -> None:
        self.policy = policy
        self.features = FeatureBuilder(model)
        self.rng = np.random.default_rng(policy.config.seed if seed is None else seed)
        self.last_slates: list[Slate] = []

    def apply(self, ctx: Context, candidates: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_c, out_s = candidates.copy(), scores.copy()
        histories = ctx.history_lists() if ctx.history is not None else None
        assert ctx.user_idx is not None or histories is not None
        self.last_slates = []
        for r in range(len(candidates)):
            n_valid = int((candidates[r] >= 0).sum())
            n = min(n_valid, self.policy.config.candidates)
            if n == 0:
                self.last_slates.append(Slate(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)))
                continue
            cand, sc = candidates[r, :n], scores[r, :n]
            if histories is not None:
                history = histories[r]
            else:
                seen = self.features.model.seen
                history = seen[int(ctx.user_idx[r])].indices if seen is not None else []  # type: ignore[index]
            slate = self.policy.choose(sc, self.features.build(cand, sc, history), ctx.k, self.rng)
            rest = np.setdiff1d(np.arange(n), slate.items, assume_unique=True)
            order = np.r_[slate.items, rest]
            out_c[r, :n] = cand[order]
            # scores keep the slate's order for the stages after this one: descending by slot
            out_s[r, :n] = np.sort(sc)[::-1]
            self.last_slates.append(slate)
        return out_c, out_s


def attach_policy(model: Recommender) -> PolicyStage | None:
    """Run the exploration policy in a pipeline model's ``policy`` setting as its last stage (None when the
    model is not a pipeline or has no policy); a :class:`~avrec.errors.ConfigError` for bad settings."""
    from avrec.pipeline.model import Pipeline
    from avrec.policies.registry import make_policy

    if not isinstance(model, Pipeline) or not model.config.policy:
        return None
    stage = PolicyStage(make_policy(dict(model.config.policy)), model)
    model.extra_stages = [s for s in model.extra_stages if not isinstance(s, PolicyStage)] + [stage]
    return stage
