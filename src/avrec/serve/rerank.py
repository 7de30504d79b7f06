"""Exposure re-ranking of a served model's lists: the pipeline's ``PopularityPenalty`` and ``Calibrate``
stages (:mod:`avrec.pipeline.calibration`) around any model, from the ``[serve.rerank]`` settings.

With ``popularity_penalty`` (β > 0) or ``calibration_lambda`` (λ > 0) set, a personalised ``/recommend``
list (GET for a user, POST for a history) is taken from the model ``depth`` entries deep, among the
items the content rules allow, rescored ``z(score) − β·z(log(1 + popularity))`` and then re-ranked by
Steck's calibration against the genre mix (``calibration_field``) of the user's history; the list's
first ``k`` are served. Scores after calibration are the list's rank order (0, −1, −2, …). The popular
fallback of an unknown user without feedback, ``/similar`` and ``/search`` are left as they are.

The strengths are given, not learnt at serving time: ``benchmarks/tradeoff.py`` tunes them on validation for a
model and dataset, and ``avrec tune-rerank`` (:mod:`avrec.pipeline.exposure`) writes them as this table
(README, "Responsible recommendation").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from avrec.errors import ConfigError


@dataclass
class RerankConfig:
    """``[serve.rerank]``: ``popularity_penalty`` β ≥ 0 and ``calibration_lambda`` λ in [0, 1) (0 = off),
    ``calibration_field`` (an item column of ``|``-separated values, e.g. genres) and ``depth``, how deep
    into the model's list the stages look (at least the list length)."""

    popularity_penalty: float = 0.0
    calibration_lambda: float = 0.0
    calibration_field: str = "genres"
    depth: int = 100

    def check(self) -> None:
        if not self.popularity_penalty >= 0 or not np.isfinite(self.popularity_penalty):
            raise ConfigError(f"serve.rerank.popularity_penalty must be 0 or more, not {self.popularity_penalty}")
        if not 0 <= self.calibration_lambda < 1:
            raise ConfigError(f"serve.rerank.calibration_lambda must be in [0, 1), not {self.calibration_lambda}")
        if self.depth < 1:
            raise ConfigError(f"serve.rerank.depth must be at least 1, not {self.depth}")
        if self.calibration_lambda > 0 and not self.calibration_field.strip():
            raise ConfigError("serve.rerank.calibration_field must name an item column")

    @property
    def active(self) -> bool:
        return self.popularity_penalty > 0 or self.calibration_lambda > 0


class ServeReranker:
    """Applies :class:`RerankConfig`'s stages to a served model's candidate lists."""

    def __init__(self, config: RerankConfig) -> None:
        config.check()
        self.config = config
        self._dist: tuple[int, int, np.ndarray] | None = None  # (id of the model, its n_items, p(g | i))

    @property
    def active(self) -> bool:
        return self.config.active

    def width(self, n: int) -> int:
        """How many entries to retrieve for a list of ``n``."""
        return max(n, self.config.depth) if self.active else n

    def check_model(self, model: Any) -> None:
        """A ConfigError at start (or reload) when calibration names a column the model's items lack."""
        cfg = self.config
        if cfg.calibration_lambda > 0 and cfg.calibration_field not in model.items.columns:
            raise ConfigError(f"serve.rerank.calibration_field: the served items have no column "
                              f"{cfg.calibration_field!r}; columns: {', '.join(map(str, model.items.columns))}")

    def _distributions(self, model: Any) -> np.ndarray:
        from avrec.pipeline.calibration import genre_distributions

        cached = self._dist
        if cached is None or cached[0] != id(model) or cached[1] != model.n_items:
            cached = (id(model), model.n_items, genre_distributions(model.items, self.config.calibration_field))
            self._dist = cached
        return cached[2]

    def stages(self, model: Any) -> list[Any]:
        """The configured stages over ``model`` (penalty first, then calibration)."""
        from avrec.pipeline.calibration import Calibrate, PopularityPenalty

        cfg, out = self.config, list[Any]()
        if cfg.popularity_penalty > 0:
            out.append(PopularityPenalty(cfg.popularity_penalty, np.asarray(model.popularity)))
        if cfg.calibration_lambda > 0:
            out.append(Calibrate(cfg.calibration_lambda, cfg.depth, self._distributions(model),
                                 lambda ctx: ctx.history))
        return out

    def apply(self, model: Any, idx: np.ndarray, scores: np.ndarray, n: int,
              history_rows: Callable[[], sp.csr_matrix]) -> tuple[np.ndarray, np.ndarray]:
        """``(idx, scores)`` (one row per list, from the model) re-ranked, the first ``n`` to be served.

        ``history_rows()``: the lists' users as rows over the model's items (what calibration compares to).
        """
        if not self.active or idx.shape[1] == 0:
            return idx, scores
        from avrec.pipeline.stages import Context

        ctx = Context(n, history=sp.csr_matrix(history_rows()))
        c, s = np.asarray(idx, dtype=np.int64), np.asarray(scores, dtype=np.float64)
        for stage in self.stages(model):
            c, s = stage.apply(ctx, c, s)
        return c, s + 0.0  # no -0.0 in the answer

    def describe(self) -> dict[str, Any] | None:
        """The settings in force, for ``/health`` (None when off)."""
        if not self.active:
            return None
        cfg = self.config
        out: dict[str, Any] = {"popularity_penalty": cfg.popularity_penalty, "depth": cfg.depth}
        if cfg.calibration_lambda > 0:
            out |= {"calibration_lambda": cfg.calibration_lambda, "calibration_field": cfg.calibration_field}
        return out
