"""Rewards from feedback events: which events count, and how much (the ``[serve.rewards]`` table)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from avrec.errors import ConfigError


@dataclass
class RewardConfig:
    """Reward of each feedback event on a shown item.

    ``like``, ``play``, ``skip``, ``dislike``: fixed rewards. ``rate``: 1 at or above
    ``rating_threshold``, else 0. ``play_completion``: a ``play`` event's ``value`` in [0, 1] is the
    fraction watched or listened and is the reward (a play without a value earns ``play``). An item shown
    without feedback earns 0; several events on one shown item earn the largest.
    """

    like: float = 1.0
    play: float = 1.0
    skip: float = 0.0
    dislike: float = 0.0
    rating_threshold: float = 3.5
    play_completion: bool = True

    def __post_init__(self) -> None:
        for key in ("like", "play", "skip", "dislike"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ConfigError(f"rewards.{key} must be a finite number, not {v!r}")

    def reward(self, event: str, value: float | None) -> float:
        """The reward of one event."""
        if event == "rate":
            return 1.0 if value is not None and value >= self.rating_threshold else 0.0
        if event == "play" and self.play_completion and value is not None:
            return float(min(max(value, 0.0), 1.0))
        fixed = {"like": self.like, "play": self.play, "skip": self.skip, "dislike": self.dislike}
        if event not in fixed:
            raise ConfigError(f"no reward defined for event {event!r}")
        return float(fixed[event])
