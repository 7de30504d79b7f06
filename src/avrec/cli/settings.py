"""The one settings resolver of every command: defaults < ``--config FILE`` < ``--set key=value`` < explicit flags.

A command names where its settings live with a :class:`Layout`; :func:`load_settings` reads the file and
the ``--set`` options into one raw nested dict, and :func:`section` / :func:`own_fields` type-check a part
of it onto a config dataclass (through :func:`avrec.config.apply_overrides`, so every command has the
same coercion and the same error messages), applying a command's explicit flags last.

The fit/evaluate/demo/data layout (:data:`CORE`): ``seed``, ``data`` (:class:`DataConfig`), ``split``
(:class:`SplitConfig`), ``eval`` (:class:`EvalConfig`), ``demo`` (:class:`DemoConfig`), ``model`` (fields
of the chosen models' Configs, applied to every model that has the field) and ``models.<name>`` (one
model only). ``--set l2=200`` is short for ``--set model.l2=200``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from avrec.errors import ConfigError

DEFAULT_SEED = 2026
#: Top-level keys of fit, evaluate, demo and data; any other ``--set`` key is taken as a model setting.
SECTIONS = ("seed", "data", "split", "eval", "demo", "model", "models")


@dataclass(frozen=True)
class Layout:
    """Where one command's settings live.

    ``sections``: the top-level keys it reads. ``loose``: the section that ``--set`` keys outside
    ``sections`` belong to (``l2=200`` means ``model.l2=200``); None leaves them at the top level, as the
    command's own fields (the finetune jobs). ``other_keys``: what a config file's other top-level keys
    are: ``"error"`` (an unknown section), ``"own"`` (the command's own fields) or ``"ignore"`` (tables
    of other commands, e.g. a shared file read by ``avrec serve``).
    """

    sections: tuple[str, ...]
    loose: str | None = None
    other_keys: str = "error"


CORE = Layout(SECTIONS, loose="model")


def _default_beyond() -> Any:
    from avrec.eval.beyond import BeyondConfig

    return BeyondConfig()


#: ``eval.metrics`` / ``--metrics``: the accuracy columns only, or the beyond-accuracy ones too
METRIC_SETS = ("accuracy", "all")


@dataclass
class EvalConfig:
    """``k``: list length for every metric; ``part``: which held-out part to score (test or valid);
    ``metrics``: ``accuracy`` or ``all`` (adds exposure, popularity and calibration metrics, whose
    settings are the ``eval.beyond`` section: :class:`avrec.eval.beyond.BeyondConfig`)."""

    k: int = 10
    part: str = "test"
    batch_size: int = 512
    metrics: str = "accuracy"
    beyond: Any = field(default_factory=_default_beyond)


@dataclass
class DemoConfig:
    """``models``: what ``avrec demo`` fits (None: the default demo models that are registered)."""

    models: list[str] | None = None
    dataset: str = "ml-latest-small"


@dataclass
class Settings:
    """Everything fit, evaluate, demo and data need, resolved and type-checked."""

    seed: int
    data: Any
    split: Any
    eval: EvalConfig
    demo: DemoConfig
    models: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        """The run record's ``config.json``: ``extra`` first, then every section."""
        out = dict(extra)
        out.update(
            seed=self.seed,
            data=dataclasses.asdict(self.data),
            split=dataclasses.asdict(self.split),
            eval=dataclasses.asdict(self.eval),
            models={n: dataclasses.asdict(c) if dataclasses.is_dataclass(c) and not isinstance(c, type) else {}
                    for n, c in self.models.items()},
        )
        return out


# ---- the raw layers ------------------------------------------------------------------------------
def load_settings(config_file: str | None, set_options: list[str] | None, layout: Layout = CORE) -> dict[str, Any]:
    """Merge the config file and the ``--set`` options (which win) into one raw nested dict."""
    from avrec.config import merge, parse_set_options, read_config_file

    raw = read_config_file(config_file) if config_file else {}
    other = [k for k in raw if k not in layout.sections]
    if other and layout.other_keys == "error":
        raise ConfigError(f"{config_file}: unknown section {other[0]!r}; valid: {', '.join(layout.sections)}")
    if layout.other_keys == "ignore":
        raw = {k: v for k, v in raw.items() if k in layout.sections}
    sets = parse_set_options(set_options)
    if layout.loose:
        loose = {k: sets.pop(k) for k in list(sets) if k not in layout.sections}
        if loose:
            sets = merge(sets, {layout.loose: loose})
    return merge(raw, sets)


def table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """``raw[name]`` (empty when absent); a ConfigError when it is a single value, not a table."""
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table of settings, not {value!r}")
    return value


def section(raw: dict[str, Any], name: str, config: Any, flags: dict[str, Any] | None = None) -> Any:
    """``config`` (the defaults) with ``raw[name]`` and then the explicit ``flags`` (None: not given) applied."""
    from avrec.config import apply_overrides

    config = apply_overrides(config, table(raw, name), f"{name}.")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    return apply_overrides(config, given, f"{name}.") if given else config


def own_fields(raw: dict[str, Any], layout: Layout, config: Any) -> Any:
    """``config`` with the top-level keys outside ``layout.sections`` applied (a finetune job's own fields)."""
    from avrec.config import apply_overrides

    return apply_overrides(config, {k: v for k, v in raw.items() if k not in layout.sections})


def run_seed(raw: dict[str, Any]) -> int:
    """The run's ``seed`` (:data:`DEFAULT_SEED` when not set)."""
    from avrec.config import validate_value

    value = raw.get("seed", DEFAULT_SEED)
    try:
        return validate_value(value, int, "seed")
    except ConfigError:
        raise ConfigError(f"seed: {value!r} is not an integer") from None


def with_run_seed(config: Any, given: dict[str, Any], seed: int, path: str = "seed") -> Any:
    """``config`` with the run seed at the dotted ``path`` (e.g. ``train.seed``), unless ``given`` sets it."""
    from avrec.config import apply_overrides

    *parents, leaf = path.split(".")
    target, explicit = config, given
    for part in parents:
        target = getattr(target, part, None)
        sub = explicit.get(part)
        explicit = sub if isinstance(sub, dict) else {}
    has_field = dataclasses.is_dataclass(target) and leaf in {f.name for f in dataclasses.fields(target)}
    if not has_field or leaf in explicit:
        return config
    change: dict[str, Any] = {leaf: seed}
    for part in reversed(parents):
        change = {part: change}
    return apply_overrides(config, change)


# ---- fit, evaluate, demo and data ----------------------------------------------------------------
def parse_model_names(text: str) -> list[str]:
    """``"ease,als"`` -> ``["ease", "als"]``, each checked against the registry."""
    from avrec.models.registry import get_model_class

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--model: give at least one model name")
    for n in names:
        get_model_class(n)
    return list(dict.fromkeys(names))


def model_configs(raw: dict[str, Any], model_names: list[str], seed: int) -> dict[str, Any]:
    """One Config per model: ``model.*`` keys apply to each listed model that has the field (an error if
    none has it), ``models.<name>.*`` to that model only; a ``seed`` field gets the run's seed unless set."""
    from avrec.config import apply_overrides, merge, setting_names
    from avrec.models.registry import get_model_class

    shared = table(raw, "model")
    per_model = table(raw, "models")
    used: set[str] = set()
    configs: dict[str, Any] = {}
    for name in model_names:
        config = get_model_class(name).Config()
        mine = {key: v for key, v in shared.items() if key in setting_names(type(config))}
        used |= mine.keys()
        specific = per_model.get(name, {})
        if not isinstance(specific, dict):
            raise ConfigError(f"models.{name}: expected a table of settings")
        if dataclasses.is_dataclass(config):
            config = with_run_seed(config, merge(mine, specific), seed)
        config = apply_overrides(config, mine, "model.")
        configs[name] = apply_overrides(config, specific, f"models.{name}.")
    for name in sorted(set(per_model) - set(model_names)):  # not fitted now: still checked, so a typo shows
        try:
            other = get_model_class(name).Config()
        except ConfigError as e:
            raise ConfigError(f"models.{name}: {e}") from None
        if not isinstance(per_model[name], dict):
            raise ConfigError(f"models.{name}: expected a table of settings")
        apply_overrides(other, per_model[name], f"models.{name}.")
    unknown = sorted(set(shared) - used)
    if unknown:
        valid = sorted({f.name for c in configs.values() if dataclasses.is_dataclass(c) for f in dataclasses.fields(c)})
        raise ConfigError(
            f"unknown setting model.{unknown[0]} for {', '.join(model_names)}; valid: {', '.join(valid) or 'none'}"
        )
    return configs


def resolve_settings(
    raw: dict[str, Any], model_names: list[str], *, split_method: str | None = None, k: int | None = None,
    metrics: str | None = None,
) -> Settings:
    """Type-check every section of the :data:`CORE` layout and build one Config per model.

    ``split_method`` (``--split``) and ``k`` (``--k``) are explicit flags: they beat the file and ``--set``.
    """
    from avrec.data.io import DataConfig
    from avrec.data.splits import SplitConfig

    seed = run_seed(raw)
    data = section(raw, "data", DataConfig())
    split = section(raw, "split", SplitConfig(seed=seed), {"method": split_method})
    eval_cfg = section(raw, "eval", EvalConfig(), {"k": k, "metrics": metrics})
    if eval_cfg.k < 1:
        raise ConfigError(f"eval.k must be at least 1, not {eval_cfg.k}")
    if eval_cfg.metrics not in METRIC_SETS:
        raise ConfigError(f"eval.metrics must be one of {', '.join(METRIC_SETS)}, not {eval_cfg.metrics!r}")
    demo = section(raw, "demo", DemoConfig())
    return Settings(seed=seed, data=data, split=split, eval=eval_cfg, demo=demo,
                    models=model_configs(raw, model_names, seed))


def add_settings_options(p: argparse.ArgumentParser,
                         example: str = "model.l2=200, data.rating_threshold=4, split.seed=1",
                         config_help: str = "TOML or YAML settings file") -> None:
    """``--config FILE`` and ``--set KEY=VALUE`` (repeatable), the same for every command."""
    p.add_argument("--config", metavar="FILE", default=None, help=config_help)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help=f"override one setting, e.g. {example} (repeatable)")
