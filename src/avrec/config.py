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
    if annotation in (list, tuple):  # bare ``list`` / ``tuple``: items stay strings
        annotation = annotation[str, ...] if annotation is tuple else list[str]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
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
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):  # e.g. an Optional section
        if not isinstance(value, dict):
            raise ConfigError(f"{key} is a section; set its fields, e.g. {key}.<name>=value")
        return apply_overrides(annotation(), value, f"{key}.")
    if annotation is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key}: {value!r} is not a JSON object ({e.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, not {value!r}")
        if len(args) == 2:
            return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            try:
                items = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key}: {value!r} is not a valid list ({e.msg})") from None
            if not isinstance(items, list):
                items = [items]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) > 1:
            if len(items) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(items)} ({value!r})")
            out = [_coerce(v, a, key) for v, a in zip(items, args)]
        else:
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
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str) and value.strip().lower().lstrip("+-").replace(".", "", 1).isdigit():
                value = float(value) if "." in value else int(value)  # "64" and "64.0" but not "64.5"
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
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"{prefix or 'config'}: {type(config).__name__} has no settings to override")
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(
                f"unknown setting {prefix + str(key)!r} for {type(config).__qualname__}; valid: {', '.join(sorted(names))}"
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} is a section; set its fields, e.g. {prefix}{key}.<name>=value")
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
        parts = [p.strip() for p in key.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"--set {pair!r}: empty key name")
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {'.'.join(parts[: depth + 1])} was already set to a value")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"--set {pair!r}: {key.strip()} is a section, not a single value")
        node[parts[-1]] = value.strip()
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (default), YAML (.yaml/.yml) or JSON (.json) configuration file into a dict."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
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
