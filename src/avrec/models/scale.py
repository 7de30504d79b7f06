"""What a fit of a given size would need, checked before anything is allocated.

One home for refusals: :meth:`avrec.models.base.Recommender.check_size` calls the model's
``_size_problem(size)``, which returns None or one line saying what it would need and what to use
instead; the base class raises it as a :class:`~avrec.errors.ScaleError` (``avrec fit`` exits 2 with it).
Memory estimates are compared with :func:`memory_budget`: ``AVREC_MEMORY_GB`` when set, else 70% of
this machine's RAM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from avrec.errors import ConfigError
from avrec.eval.validation import ValidationSet


@dataclass(frozen=True)
class Size:
    """The size of a fit: users, catalogue items, interactions and (when known) interactions per user."""

    n_users: int
    n_items: int
    n_interactions: int
    user_counts: np.ndarray | None = None

    @classmethod
    def of(cls, dataset: Any) -> Size:
        """The size of a :class:`~avrec.data.dataset.Dataset` (interactions per user counted, no matrix built)."""
        counts = np.bincount(np.asarray(dataset.user_idx), minlength=dataset.n_users)
        return cls(dataset.n_users, dataset.n_items, dataset.n_interactions, counts)

    def pair_count(self) -> float:
        """Upper bound of the (user, item, item) triples an item-item co-occurrence count visits: Σ n_u²."""
        if self.user_counts is None:
            mean = self.n_interactions / max(self.n_users, 1)
            return float(self.n_users) * min(mean, self.n_items) ** 2
        c = np.minimum(np.asarray(self.user_counts, dtype=np.float64), self.n_items)
        return float((c * c).sum())


def memory_budget() -> int:
    """Bytes a fit may plan to use: ``AVREC_MEMORY_GB`` (a number) or 70% of the physical memory."""
    raw = os.environ.get("AVREC_MEMORY_GB", "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"AVREC_MEMORY_GB must be a number of gigabytes, not {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"AVREC_MEMORY_GB must be positive, not {raw!r}")
        return int(value * 1e9)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 10**9
    return int(0.7 * total)


#: a scoring batch's dense (users × items) float32 block stays under this many bytes
SCORE_BATCH_BYTES = 256 * 2**20


def score_batch_rows(batch_size: int, n_items: int) -> int:
    """Users per scoring batch: ``batch_size``, fewer on big catalogues (1,000,000 items: 67 users)."""
    return max(1, min(int(batch_size), SCORE_BATCH_BYTES // max(4 * int(n_items), 1)))


def subsample(check: ValidationSet, max_users: int, seed: int = 0) -> ValidationSet:
    """At most ``max_users`` of a validation set's users (0: all), drawn with ``seed``."""
    if not max_users or len(check) <= max_users:
        return check
    rows = np.sort(np.random.default_rng(seed).choice(len(check), max_users, replace=False))
    return ValidationSet(check.users[rows], check.truth[rows], None if check.exclude is None else check.exclude[rows],
                         check.candidates)


def batched_ndcg(check: ValidationSet, scores_for: Callable[[np.ndarray], np.ndarray], n_columns: int,
                 k: int = 10) -> float:
    """Mean NDCG@k of ``check``, scored in user batches whose (users × ``n_columns``) block stays under
    :data:`SCORE_BATCH_BYTES`; ``scores_for(rows)`` scores the rows ``rows`` of ``check``."""
    if len(check) == 0:
        return 0.0
    step = score_batch_rows(len(check), n_columns)
    total = 0.0
    for start in range(0, len(check), step):
        rows = np.arange(start, min(start + step, len(check)))
        part = ValidationSet(check.users[rows], check.truth[rows],
                             None if check.exclude is None else check.exclude[rows], check.candidates)
        total += part.ndcg(np.asarray(scores_for(rows)), k) * len(rows)
    return total / len(check)


def gb(n_bytes: float) -> str:
    """Bytes as a short human size: '4.0 GB', '12 GB', '4,000 GB'."""
    value = n_bytes / 1e9
    if value < 10:
        return f"{value:.1f} GB"
    return f"{value:,.0f} GB"


def over_budget(what: str, n_bytes: float, instead: str) -> str | None:
    """The refusal line when ``n_bytes`` exceed the memory budget, else None."""
    budget = memory_budget()
    if n_bytes <= budget:
        return None
    return f"{what} need about {gb(n_bytes)}, more than the {gb(budget)} memory budget (AVREC_MEMORY_GB); {instead}"


__all__ = ["SCORE_BATCH_BYTES", "Size", "batched_ndcg", "gb", "memory_budget", "over_budget", "score_batch_rows",
           "subsample"]
