"""Typed configuration: dataclasses loaded from TOML, YAML or JSON and overridden with ``key=value`` strings.

Values are validated by pydantic (``TypeAdapter`` of each field's annotation), after a small pre-pass for
what command-line strings need and pydantic does not do: comma-separated or JSON lists, JSON objects,
``none``/``null`` for optional fields. A field whose value is a dataclass is a nested *section*
(``models.hybrid.ease.l2``). A config class may declare ``aliases: ClassVar[dict[str, str]]``
mapping old (flat) keys onto the dotted path that replaced them; every function here honours them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from avrec.errors import ConfigError

_NONE_WORDS = ("none", "null")
_TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "string": "str"}


# ---- annotations ---------------------------------------------------------------------------------
def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _members(annotation: Any) -> tuple[Any, ...]:
    """The non-None members of a union (or the annotation itself)."""
    if _is_union(annotation):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _section_class(annotation: Any) -> type | None:
    """The dataclass of a section annotation (``Inner`` or ``Inner | None``), else None."""
    for member in _members(annotation):
        if isinstance(member, type) and dataclasses.is_dataclass(member):
            return member
    return None


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic reads True as 1; a setting that wants a count should not
        raise PydanticCustomError("int_type", "a bool is not an int")
    return value


def _choice(choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    def match(value: Any) -> Any:  # "3" picks the choice 3, as it would on the command line
        return next((c for c in choices if value == c or str(value) == str(c)), value)

    return match


def _lax(annotation: Any) -> Any:
    """The annotation as pydantic validates it: ints refuse bools, bare list/tuple hold strings."""
    if annotation is int:
        return Annotated[int, BeforeValidator(_no_bool)]
    if annotation is list:
        return list[str]
    if annotation is tuple:
        return tuple[str, ...]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return Annotated[annotation, BeforeValidator(_choice(args))]
    if _is_union(annotation):
        return typing.Union[tuple(_lax(a) for a in args)]  # noqa: UP007 (built at run time; no `|` form)
    if origin in (list, tuple, dict) and args:
        return origin[tuple(a if a is Ellipsis else _lax(a) for a in args)]
    return annotation


@functools.lru_cache(maxsize=512)
def _adapter(annotation: Any) -> TypeAdapter:
    config = ConfigDict(coerce_numbers_to_str=True, arbitrary_types_allowed=True)
    return TypeAdapter(_lax(annotation), config=config)


# ---- the pre-pass: strings from the command line ---------------------------------------------------
def _as_list(value: Any, key: str) -> list:
    if isinstance(value, str):
        text = value.strip()
        try:
            items = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}: {value!r} is not a valid list ({e.msg})") from None
        return items if isinstance(items, list) else [items]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _prepare(value: Any, annotation: Any, key: str) -> Any:
    """Shape a raw value for pydantic: ``"a,b"``/``"[1, 2]"`` to lists, JSON text to dicts, ``"none"`` to None."""
    if _is_union(annotation) and type(None) in typing.get_args(annotation):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if origin in (list, tuple):
            if not isinstance(value, (str, list, tuple)) and len(_members(annotation)) > 1:
                continue  # e.g. ``int | list[int]`` given an int
            items = _as_list(value, key)
            args = typing.get_args(member)
            if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis and len(items) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(items)} ({value!r})")
            return items
        if origin is dict:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{key}: {value!r} is not a JSON object ({e.msg})") from None
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, not {value!r}")
            return value
    return value


def _message(error: ValidationError, value: Any, annotation: Any, key: str) -> str:
    """One line naming the key, the offending value and what was expected."""
    if _is_union(annotation):
        return f"{key}: cannot read {value!r} as {annotation}"
    first = error.errors()[0]
    bad = first.get("input", value)
    origin = typing.get_origin(annotation)
    if origin is dict:
        key += "".join(f".{part}" for part in first["loc"] if isinstance(part, str) and not part.startswith("["))
    kind = first["type"]
    if kind == "literal_error":
        choices = typing.get_args(annotation) if origin is typing.Literal else ()
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is typing.Literal:
                choices = typing.get_args(arg)
        return f"{key}: {bad!r} is not one of {', '.join(map(repr, choices))}"
    name = _TYPE_NAMES.get(kind.split("_")[0])
    if name:
        return f"{key}: {bad!r} is not a valid {name}"
    return f"{key}: {bad!r} is not valid ({first['msg']})"


def validate_value(value: Any, annotation: Any, key: str) -> Any:
    """``value`` (a string from ``--set``, or a TOML/JSON value) as ``annotation``; a ConfigError naming ``key``."""
    section = _section_class(annotation)
    if section is not None:  # e.g. ``section: Inner | None = None`` given a table
        if _is_union(annotation) and (value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS)):
            return None
        if isinstance(value, section):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} is a section; set its fields, e.g. {key}.<name>=value")
        return apply_overrides(section(), value, f"{key}.")
    prepared = _prepare(value, annotation, key)
    try:
        return _adapter(annotation).validate_python(prepared)
    except ValidationError as e:
        raise ConfigError(_message(e, value, annotation, key)) from None


# ---- dataclass configs ---------------------------------------------------------------------------
def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def aliases_of(cls: type) -> dict[str, str]:
    """``{old_key: "section.key"}`` declared by a config class (``aliases`` class attribute)."""
    return dict(getattr(cls, "aliases", None) or {})


def setting_names(cls: type) -> set[str]:
    """Every key a config class accepts at its top level: its fields and its alias keys."""
    if not dataclasses.is_dataclass(cls):
        return set()
    return set(_field_names(cls)) | set(aliases_of(cls))


def resolve_aliases(cls: type, overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``overrides`` with the alias keys of ``cls`` moved onto their dotted targets (a copy)."""
    aliases = aliases_of(cls)
    if not any(key in aliases for key in overrides):
        return overrides
    out = {k: v for k, v in overrides.items() if k not in aliases}
    for old, new in aliases.items():
        if old not in overrides:
            continue
        *parents, leaf = new.split(".")
        node = out
        for depth, part in enumerate(parents):
            child = node.get(part, {})
            if not isinstance(child, dict):
                where = prefix + ".".join(parents[: depth + 1])
                raise ConfigError(f"{prefix}{old} sets {prefix}{new}, but {where} is given a value, not a table")
            node[part] = node = dict(child)
        if leaf in node:
            raise ConfigError(f"{prefix}{old} is an old name of {prefix}{new}; set only one of them")
        node[leaf] = overrides[old]
    return out


def apply_overrides(config: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """A copy of dataclass ``config`` with ``overrides`` (a nested dict) applied and type-checked.

    ``prefix`` (e.g. ``"models.hybrid."``) is how error messages name the keys.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"{prefix or 'config'}: {type(config).__name__} has no settings to override")
    cls = type(config)
    overrides = resolve_aliases(cls, overrides, prefix)
    names = _field_names(cls)
    hints: dict[str, Any] | None = None
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            valid = ", ".join(sorted(names)) or "none (it takes no settings)"
            raise ConfigError(f"unknown setting {prefix + str(key)!r} for {cls.__qualname__}; valid: {valid}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            if isinstance(value, type(current)):
                changes[key] = value
            elif not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} is a section; set its fields, e.g. {prefix}{key}.<name>=value")
            else:
                changes[key] = apply_overrides(current, value, f"{prefix}{key}.")
        else:
            hints = hints if hints is not None else typing.get_type_hints(cls)
            changes[key] = validate_value(value, hints[key], f"{prefix}{key}")
    return dataclasses.replace(config, **changes)


def known_settings(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the keys ``cls`` does not know, recursively in its sections (e.g. a saved config.json
    written by another version); alias keys are kept, for ``apply_overrides`` to map."""
    if not dataclasses.is_dataclass(cls):
        return {}
    defaults = cls()
    out = {}
    for key, value in data.items():
        if key in aliases_of(cls):
            out[key] = value
        elif key in _field_names(cls):
            current = getattr(defaults, key)
            nested = type(current) if dataclasses.is_dataclass(current) else None
            if nested is None and isinstance(value, dict):
                nested = _section_class(typing.get_type_hints(cls).get(key))
            out[key] = known_settings(nested, value) if nested and isinstance(value, dict) else value
    return out


# ---- raw settings: --set pairs and files -----------------------------------------------------------
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


def cache_home(*parts: str) -> Path:
    """avrec's cache folder (``$AVREC_CACHE``, else ``~/.cache/avrec``), or ``parts`` inside it: the one
    rule every cache (embeddings, ONNX exports, downloads, the generator's weights) follows."""
    env = os.environ.get("AVREC_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "avrec").joinpath(*parts)
