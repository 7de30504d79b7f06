"""The retrieve → rank → re-rank pipeline (the layer above :mod:`avrec.models`).

:mod:`avrec.pipeline.stages` defines the :class:`Stage` protocol over candidate lists and the
``Retrieve``, ``CrossEncoderRank`` and ``Filters`` stages; :mod:`avrec.pipeline.rerank` the ``MMR`` and
``Dedupe`` re-rankers; :mod:`avrec.pipeline.tuning` picks the blend weight and MMR λ on validation;
:mod:`avrec.pipeline.model` composes them into the ``pipeline`` model (registered through the
``avrec.models`` entry point).
"""

from avrec.pipeline.config import PipelineConfig
from avrec.pipeline.model import Pipeline, raise_picks
from avrec.pipeline.rerank import MMR, Dedupe, mmr_select
from avrec.pipeline.stages import Context, CrossEncoderRank, Filters, Retrieve, Stage, run_stages

__all__ = [
    "MMR",
    "Context",
    "CrossEncoderRank",
    "Dedupe",
    "Filters",
    "Pipeline",
    "PipelineConfig",
    "Retrieve",
    "Stage",
    "mmr_select",
    "raise_picks",
    "run_stages",
]
