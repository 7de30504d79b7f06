"""Typed configuration: dataclasses loaded from TOML or YAML and overridden with ``key=value`` strings."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from avrec.errors import ConfigError


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a CLI/TOML value to the field's annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (ConfigError, ValueError, TypeError):
                continue
        raise ConfigError(f"{key}: cannot read {value!r} as {annotation}")
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        else:
            items = list(value)
        inner = args[0] if args else str
        out = [_coerce(v, inner, key) for v in items]
        return tuple(out) if origin is tuple else out
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {getattr(annotation, '__name__', annotation)}") from None
    return value


def apply_overrides(config: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """A copy of dataclass ``config`` with ``overrides`` applied and type-checked."""
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(
                f"unknown setting {prefix}{key!r} for {type(config).__qualname__}; valid: {', '.join(sorted(names))}"
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = apply_overrides(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return dataclasses.replace(config, **changes)


def parse_set_options(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["model.factors=64", "split.seed=1"]`` into a nested dict."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value.strip()
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML configuration file into a dict."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:  # both parsers raise their own error types
        raise ConfigError(f"{path}: cannot parse config: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/mapping")
    return data


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base``."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
