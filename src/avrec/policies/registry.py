"""Policy names → classes, building a policy from settings, and loading a saved one."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from avrec.errors import ConfigError, DataError
from avrec.policies.base import PolicyConfig, SlatePolicy, read_saved
from avrec.policies.linear import LinUCB, Thompson
from avrec.policies.simple import EpsilonGreedy, Greedy, Softmax

POLICIES: dict[str, type[SlatePolicy]] = {
    cls.name: cls for cls in (Greedy, EpsilonGreedy, Softmax, LinUCB, Thompson)
}


def policy_config(settings: dict[str, Any] | PolicyConfig | str | None) -> PolicyConfig:
    """A :class:`PolicyConfig` from a name, a dict of settings or a config (unknown keys are an error)."""
    if isinstance(settings, PolicyConfig):
        config = settings
    elif settings is None or isinstance(settings, str):
        config = PolicyConfig(name=settings or "greedy")
    else:
        known = {f.name for f in fields(PolicyConfig)}
        bad = sorted(set(settings) - known)
        if bad:
            raise ConfigError(f"policy: unknown setting {bad[0]!r}; known: {', '.join(sorted(known))}")
        try:
            config = PolicyConfig(**settings)
        except TypeError as e:
            raise ConfigError(f"policy: {e}") from None
    if config.name not in POLICIES:
        raise ConfigError(f"unknown policy {config.name!r}; choose one of {', '.join(POLICIES)}")
    return config


def make_policy(settings: dict[str, Any] | PolicyConfig | str | None = None) -> SlatePolicy:
    """A fresh policy (no learned parameters) from settings."""
    config = policy_config(settings)
    return POLICIES[config.name](config)


def load_policy(folder: str | Path, expected: PolicyConfig | None = None) -> tuple[SlatePolicy, dict[str, Any]]:
    """(policy, meta) saved in ``folder``; with ``expected``, its settings win and the saved parameters are
    used only when the saved policy has the same name (else a :class:`DataError`)."""
    meta, state = read_saved(folder)
    saved = policy_config(meta["config"])
    if expected is not None and expected.name != saved.name:
        raise DataError(f"{folder}: the saved policy is {saved.name!r}, not {expected.name!r}")
    policy = POLICIES[saved.name](expected or saved)
    policy.load_state(state)
    policy.version = int(meta.get("version", policy.version))
    return policy, meta
