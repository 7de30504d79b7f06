"""Settings of the ``pipeline`` model (the keys of ``--set`` and of a saved folder's ``config.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avrec.errors import ConfigError


@dataclass
class PipelineConfig:
    """Settings of the three stages (``ranker``/``view``/``pairs``/``train`` are nested tables).

    Retrieve: ``retriever`` (``auto``: hybrid when registered, else ease), ``retriever_config``,
    ``n_candidates`` (N), filters ``media_types``, ``blocked_items`` and content ``rules`` (a table of
    :class:`avrec.pipeline.rules.RuleSet` settings, checked after every stage). Exposure: Steck's
    calibrated re-ranking with ``calibration_lambda`` (0 = off) on ``calibration_field``, and the popularity
    penalty ``popularity_penalty`` (β, 0 = off), both from :mod:`avrec.pipeline.calibration`. Rank:
    ``ranker_path`` (a trained ranker) or ``ranker``/``view``/``pairs``/``train``/``eval_users`` to train
    one; the blend weight ``blend_weight`` (tuned over ``blend_grid`` when None; ``fallback_weight`` until
    tuned). Re-rank: ``dedupe``/``dedupe_fields``; MMR ``mmr_lambda`` (1 = off; tuned over ``mmr_grid`` within
    ``mmr_tolerance`` when None) on ``mmr_vectors``. Tuning: ``tune_users``; ``internal_valid_share`` is
    held out when ``fit`` gets no validation data. ``threads``: torch threads (0: leave as is).
    Explore: ``policy``, the settings of an exploration policy (:class:`avrec.policies.PolicyConfig`, e.g.
    ``{name = "thompson", explore_slots = [3, 4, 5]}``) saved with the model: ``avrec serve --policy model``
    serves it and :func:`avrec.policies.stage.attach_policy` runs it as the pipeline's last stage.
    """

    retriever: str = "auto"
    retriever_config: dict = field(default_factory=dict)
    n_candidates: int = 50
    ranker_path: str = ""
    ranker: Any = None
    view: Any = None
    pairs: Any = None
    train: Any = None
    eval_users: int = 200
    blend_weight: float | None = None
    blend_grid: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    fallback_weight: float = 0.3
    mmr_lambda: float | None = None
    mmr_grid: list[float] = field(default_factory=lambda: [1.0, 0.95, 0.9, 0.8, 0.7])
    mmr_tolerance: float = 0.01
    mmr_vectors: str = "auto"
    dedupe: bool = True
    dedupe_fields: list[str] = field(default_factory=lambda: ["title", "year"])
    media_types: list[str] = field(default_factory=list)
    blocked_items: list[str] = field(default_factory=list)
    rules: dict = field(default_factory=dict)
    calibration_lambda: float = 0.0
    calibration_field: str = "genres"
    popularity_penalty: float = 0.0
    tune_users: int = 300
    internal_valid_share: float = 0.1
    threads: int = 0
    policy: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from avrec.finetune.ranker_training import type_ranker_sections

        type_ranker_sections(self)
        if self.n_candidates < 1:
            raise ConfigError("pipeline n_candidates must be at least 1")
        if self.blend_weight is not None and not 0 <= self.blend_weight <= 1:
            raise ConfigError("pipeline blend_weight must be in [0, 1]")
        if self.mmr_lambda is not None and not 0 <= self.mmr_lambda <= 1:
            raise ConfigError("pipeline mmr_lambda must be in [0, 1]")
        from avrec.pipeline.rules import parse_ruleset

        parse_ruleset(self.rules, "pipeline.rules")  # a bad rule fails when the settings are read
        if not 0 <= self.calibration_lambda < 1:
            raise ConfigError("pipeline calibration_lambda must be in [0, 1)")
        if self.popularity_penalty < 0:
            raise ConfigError("pipeline popularity_penalty must be 0 or more")
        if self.policy and not isinstance(self.policy.get("name"), str):
            raise ConfigError("pipeline policy needs a name (greedy, epsilon, softmax, linucb or thompson)")
        if self.mmr_vectors not in ("auto", "retriever", "metadata"):
            raise ConfigError("pipeline mmr_vectors must be auto, retriever or metadata")
