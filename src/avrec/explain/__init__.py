"""Grounded explanations of recommendations (see :mod:`avrec.explain.explainer`)."""

from avrec.explain.explainer import Explainer, ExplainerConfig, split_sentences
from avrec.explain.faithfulness import check_explanation, measure_faithfulness, sample_pairs
from avrec.explain.generate import SmolLMGenerator, build_prompt, generator_available, verify_text
from avrec.explain.recommend import recommend_explained
from avrec.explain.templates import ExplanationFacts, render_template

__all__ = [
    "Explainer",
    "ExplainerConfig",
    "ExplanationFacts",
    "SmolLMGenerator",
    "build_prompt",
    "check_explanation",
    "generator_available",
    "measure_faithfulness",
    "recommend_explained",
    "render_template",
    "sample_pairs",
    "split_sentences",
    "verify_text",
]
