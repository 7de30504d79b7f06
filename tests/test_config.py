"""Typed configuration: override coercion, error messages, TOML/YAML/JSON files, --set parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from avrec.config import (
    apply_overrides, known_settings, merge, parse_set_options, read_config_file, setting_names, validate_value,
)
from avrec.errors import ConfigError
from avrec.models.registry import create_model


@dataclass
class Inner:
    size: int = 3
    name: str = "x"


@dataclass
class Sample:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    label: str = "a"
    maybe: int | None = None
    maybe_text: str | None = "keep"
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    sizes: tuple[int, ...] = ()
    mode: Literal["fast", "exact"] = "fast"
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    section: Inner | None = None


def test_coerce_scalars():
    c = apply_overrides(Sample(), {"count": "64", "rate": "1e-3", "flag": "yes", "label": 12})
    assert (c.count, c.rate, c.flag, c.label) == (64, 1e-3, True, "12")
    assert isinstance(c.count, int) and isinstance(c.rate, float)
    assert apply_overrides(Sample(), {"count": "64.0"}).count == 64
    assert apply_overrides(Sample(), {"count": 7.0}).count == 7
    assert apply_overrides(Sample(), {"rate": 2}).rate == 2.0
    for text, expected in (("true", True), ("1", True), ("on", True), ("False", False), ("0", False), ("no", False)):
        assert apply_overrides(Sample(), {"flag": text}).flag is expected
    Sample_default = Sample()
    assert apply_overrides(Sample_default, {}) == Sample_default
    assert Sample_default.count == 1  # overrides return a copy


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("count", "abc", "count: 'abc' is not a valid int"),
        ("count", "2.5", "not a valid int"),
        ("count", True, "not a valid int"),
        ("rate", "fast", "rate: 'fast' is not a valid float"),
        ("flag", "maybe", "flag: 'maybe' is not a valid bool"),
        ("maybe", "x1", "maybe: cannot read 'x1'"),
        ("values", "[1, 2", "values: '[1, 2' is not a valid list"),
        ("ratios", "0.8,0.2", "ratios: expected 3 values, got 2"),
        ("mode", "slow", "mode: 'slow' is not one of 'fast', 'exact'"),
        ("inner", "5", "inner is a section"),
        ("weights", "[1]", "weights: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Sample(), {key: value})
    assert fragment in str(e.value)


def test_optional_list_tuple_literal_dict():
    c = apply_overrides(Sample(), {"maybe": "5", "maybe_text": "none"})
    assert c.maybe == 5 and c.maybe_text is None
    assert apply_overrides(Sample(maybe=4), {"maybe": "null"}).maybe is None
    assert apply_overrides(Sample(), {"maybe": None}).maybe is None
    c = apply_overrides(Sample(), {"names": "genres, tags,title", "values": "[1, 2.5]"})
    assert c.names == ["genres", "tags", "title"] and c.values == [1.0, 2.5]
    assert apply_overrides(Sample(), {"names": ["a", 1]}).names == ["a", "1"]
    assert apply_overrides(Sample(), {"names": ""}).names == []
    c = apply_overrides(Sample(), {"ratios": "0.7,0.2,0.1", "sizes": "[1, 2, 3]"})
    assert c.ratios == (0.7, 0.2, 0.1) and isinstance(c.ratios, tuple)
    assert c.sizes == (1, 2, 3)
    assert apply_overrides(Sample(), {"ratios": [0.6, 0.2, 0.2]}).ratios == (0.6, 0.2, 0.2)
    assert apply_overrides(Sample(), {"mode": "exact"}).mode == "exact"
    assert apply_overrides(Sample(), {"weights": '{"a": "2"}'}).weights == {"a": 2.0}
    assert apply_overrides(Sample(), {"weights": {"b": 1}}).weights == {"b": 1.0}


def test_nested_sections():
    c = apply_overrides(Sample(), {"inner": {"size": "9"}})
    assert c.inner == Inner(size=9, name="x")
    c = apply_overrides(Sample(), {"section": {"name": "y"}})
    assert c.section == Inner(size=3, name="y")
    with pytest.raises(ConfigError, match=r"unknown setting 'inner.bogus' for Inner; valid: name, size"):
        apply_overrides(Sample(), {"inner": {"bogus": 1}})


def test_unknown_key_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        apply_overrides(Sample(), {"cuont": 3})
    msg = str(e.value)
    assert "unknown setting 'cuont' for Sample" in msg
    assert "count" in msg and "rate" in msg
    with pytest.raises(ConfigError, match="no settings"):
        apply_overrides(object(), {"a": 1})


def test_model_configs_use_the_same_coercion():
    m = create_model("als", factors="32", use_weights="false")
    assert m.config.factors == 32 and m.config.use_weights is False
    assert create_model("ease", {"l2": "250"}).config.l2 == 250.0
    with pytest.raises(ConfigError, match="unknown setting 'factor'.*valid: .*factors"):
        create_model("bpr", {"factor": 3})
    with pytest.raises(ConfigError, match="unknown setting"):
        create_model("itemknn", neighbors=5)


def test_parse_set_options():
    out = parse_set_options(["model.factors=64", "split.seed = 1", "model.name=a=b", "k=10"])
    assert out == {"model": {"factors": "64", "name": "a=b"}, "split": {"seed": "1"}, "k": "10"}
    assert parse_set_options(None) == {}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set_options(["model.factors"])
    with pytest.raises(ConfigError, match="empty key"):
        parse_set_options(["model.=3"])
    with pytest.raises(ConfigError, match="already set"):
        parse_set_options(["model=3", "model.factors=2"])
    with pytest.raises(ConfigError, match="is a section"):
        parse_set_options(["model.factors=2", "model=3"])
    # the parsed strings coerce through apply_overrides
    assert apply_overrides(Sample(), parse_set_options(["inner.size=4", "count=2"])).inner.size == 4


def test_read_config_files(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nfactors = 64\nname = "als"\n[split]\nratios = [0.8, 0.1, 0.1]\n')
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model:\n  factors: 64\n  name: als\nsplit:\n  ratios: [0.8, 0.1, 0.1]\n")
    json_file = tmp_path / "c.json"
    json_file.write_text('{"model": {"factors": 64, "name": "als"}, "split": {"ratios": [0.8, 0.1, 0.1]}}')
    expected = {"model": {"factors": 64, "name": "als"}, "split": {"ratios": [0.8, 0.1, 0.1]}}
    assert read_config_file(toml) == expected
    assert read_config_file(yaml_file) == expected
    assert read_config_file(json_file) == expected
    (tmp_path / "empty.yml").write_text("")
    assert read_config_file(tmp_path / "empty.yml") == {}


def test_read_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nfactors = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: cannot parse config"):
        read_config_file(bad)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot parse config"):
        read_config_file(bad_yaml)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a table"):
        read_config_file(top)


def test_merge_is_deep_and_pure():
    base = {"model": {"factors": 64, "reg": 1}, "k": 10}
    out = merge(base, {"model": {"factors": 32}, "split": {"seed": 1}})
    assert out == {"model": {"factors": 32, "reg": 1}, "k": 10, "split": {"seed": 1}}
    assert base["model"]["factors"] == 64


# ---- aliases (old flat keys) and saved configs ------------------------------------------------------
@dataclass
class Outer:
    depth: int = 1
    inner: Inner = field(default_factory=Inner)
    aliases: ClassVar[dict[str, str]] = {"inner_size": "inner.size", "old_depth": "depth"}


def test_aliases_map_old_keys_onto_nested_ones():
    c = apply_overrides(Outer(), {"inner_size": "7", "old_depth": "2"})
    assert c.inner == Inner(size=7) and c.depth == 2
    assert apply_overrides(Outer(), {"inner_size": 4, "inner": {"name": "y"}}).inner == Inner(size=4, name="y")
    assert apply_overrides(Outer(), parse_set_options(["inner.size=5"])).inner.size == 5
    with pytest.raises(ConfigError, match=r"m\.inner_size is an old name of m\.inner\.size; set only one"):
        apply_overrides(Outer(), {"inner_size": 4, "inner": {"size": 5}}, "m.")
    with pytest.raises(ConfigError, match=r"m\.inner\.size: 'x' is not a valid int"):  # named by its current key
        apply_overrides(Outer(), {"inner_size": "x"}, "m.")
    with pytest.raises(ConfigError, match=r"unknown setting 'm\.inner\.bogus' for Inner; valid: name, size"):
        apply_overrides(Outer(), {"inner": {"bogus": 1}}, "m.")
    assert setting_names(Outer) == {"depth", "inner", "inner_size", "old_depth"}


def test_known_settings_drops_unknown_keys_and_keeps_aliases():
    saved = {"depth": 3, "gone": 1, "inner_size": 6, "inner": {"name": "z", "removed": True}}
    kept = known_settings(Outer, saved)
    assert kept == {"depth": 3, "inner_size": 6, "inner": {"name": "z"}}
    assert apply_overrides(Outer(), kept) == Outer(depth=3, inner=Inner(size=6, name="z"))
    assert known_settings(Sample, {"section": {"size": 2, "x": 1}}) == {"section": {"size": 2}}


def test_validate_value_is_the_field_coercion():
    assert validate_value("3", int, "k") == 3
    assert validate_value("a, b", list[str] | None, "k") == ["a", "b"]
    assert validate_value("none", list[str] | None, "k") is None
    assert validate_value("2", Literal[1, 2], "k") == 2
    with pytest.raises(ConfigError, match=r"k: cannot read 'x' as int \| None"):
        validate_value("x", int | None, "k")
    with pytest.raises(ConfigError, match=r"k\.a: 'x' is not a valid float"):
        validate_value({"a": "x"}, dict[str, float], "k")


@dataclass
class NoSettings:
    pass


def test_unknown_setting_of_a_config_without_settings():
    expected = r"unknown setting 'bogus' for NoSettings; valid: none \(it takes no settings\)"
    with pytest.raises(ConfigError, match=expected):
        apply_overrides(NoSettings(), {"bogus": 1})
