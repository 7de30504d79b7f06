"""Exploration policies, logged propensities and off-policy evaluation (the layer above ``pipeline``).

:mod:`~avrec.policies.base` (the slate policy and its propensities), :mod:`~avrec.policies.simple`
(greedy, epsilon, softmax), :mod:`~avrec.policies.linear` (LinUCB, Thompson), :mod:`~avrec.policies.features`,
:mod:`~avrec.policies.clicks` (position bias), :mod:`~avrec.policies.rewards`, :mod:`~avrec.policies.ope`
(estimators), :mod:`~avrec.policies.stage` (a policy as a pipeline stage) and
:mod:`~avrec.policies.simulator` (interactive evaluation).
"""

from avrec.policies.base import PolicyConfig, Slate, SlatePolicy
from avrec.policies.registry import POLICIES, load_policy, make_policy, policy_config

__all__ = ["POLICIES", "PolicyConfig", "Slate", "SlatePolicy", "load_policy", "make_policy", "policy_config"]
