"""params.yaml is read into typed dataclasses; mistakes name their key."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from annotated_types import Ge, Gt, Le
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heritageseg.core.config import (
    IngestConfig,
    Params,
    bounds,
    flatten_keys,
    load_params,
    with_overrides,
    without_none,
)
from heritageseg.core.errors import ConfigError

from .conftest import ROOT


def test_the_projects_params_yaml_loads_every_value_as_written():
    written = flatten_keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    loaded = flatten_keys(load_params(ROOT / "params.yaml"))
    loaded = {key: list(v) if isinstance(v, tuple) else v for key, v in loaded.items()}
    assert {key: loaded[key] for key in written} == written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest:\n  nn: 3\n", "unknown key(s) ingest.nn"),
        ("ingestt: {}\n", "unknown key(s) ingestt"),
        ("ingest:\n  n: many\n", "ingest.n='many': expected int"),
        ("ingest:\n  n: true\n", "expected int"),
        ("ingest:\n  source: s3\n", "choose one of synthetic, parquet, folder, hf"),
        ("ingest:\n  source: parquet\n", "ingest.path=None: source parquet needs a path"),
        ("ingest:\n  min_size: 500\n  max_size: 100\n", "ingest.min_size=500: need <= max_size"),
        ("ingest: [1, 2]\n", "expected a mapping"),
        ("ingest: {n: [\n", "not valid YAML"),
        ("train:\n  segformer:\n    decoder_channels: 64\n", "expected a list"),
        (
            "train:\n  segformer:\n    decoder_channels: [64, 32]\n",
            "train.segformer.decoder_channels=[64, 32]: unet takes 5 positive",
        ),
        (
            "train:\n  segformer:\n    decoder: segformer\n    decoder_channels: [64, 32]\n",
            "segformer takes 1 positive",
        ),
    ],
)
def test_bad_params_name_the_key(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert message in str(caught.value)


def test_overrides_are_checked_and_none_means_not_given():
    cfg = IngestConfig()
    assert with_overrides(cfg, n=5, seed=None).n == 5
    with pytest.raises(ConfigError, match="--on-error"):
        with_overrides(cfg, on_error="ignore")


def test_ints_are_accepted_for_floats(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  background_fraction: 1\n")
    assert load_params(path).ingest.background_fraction == 1.0


# ------------------------------------------------------------- every field, any bad value


def _leaves(cls: type = Params, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, type hint) of every value params.yaml can set."""
    leaves = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if dataclasses.is_dataclass(hint):
            leaves += _leaves(hint, f"{prefix}{name}.")
        else:
            leaves.append((f"{prefix}{name}", hint))
    return leaves


LEAVES = _leaves()
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _base(hint):
    """The plain type under Annotated and Optional."""
    hint = without_none(hint)
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def _outside(bound, kind) -> st.SearchStrategy:
    """Values of `kind` that break one annotated-types bound."""
    if kind is int:
        if isinstance(bound, Ge):
            return st.integers(max_value=bound.ge - 1)
        if isinstance(bound, Gt):
            return st.integers(max_value=bound.gt)
        if isinstance(bound, Le):
            return st.integers(min_value=bound.le + 1)
        return st.integers(min_value=1).filter(lambda v: v % bound.multiple_of)
    if isinstance(bound, Ge):
        return st.floats(max_value=bound.ge, exclude_max=True) | st.just(math.nan)
    if isinstance(bound, Gt):
        return st.floats(max_value=bound.gt) | st.just(math.nan)
    return st.floats(min_value=bound.le, exclude_min=True)


def bad_values(hint) -> st.SearchStrategy:
    """Wrong-typed and out-of-range values for a field of this type."""
    kind = _base(hint)
    if typing.get_origin(kind) is typing.Literal:
        allowed = typing.get_args(kind)
        return (WORDS | st.integers() | st.booleans()).filter(lambda v: v not in allowed)
    if typing.get_origin(kind) is tuple:
        inner = typing.get_args(kind)[0]
        broken = (
            st.lists(bad_values(inner), min_size=3, max_size=3) if bounds(inner) else st.nothing()
        )
        return WORDS | st.integers() | st.dictionaries(WORDS, st.integers(), max_size=2) | broken
    wrong = {
        int: WORDS | st.floats() | st.booleans() | st.lists(st.integers(), max_size=2),
        float: WORDS | st.booleans() | st.lists(st.floats(), max_size=2),
        bool: WORDS | st.integers() | st.floats(),
        str: st.integers() | st.floats() | st.booleans() | st.lists(WORDS, max_size=2),
    }[kind]
    return st.one_of(wrong, *(_outside(bound, kind) for bound in bounds(hint)))


def _write_value(folder: Path, key: str, value) -> Path:
    *sections, last = key.split(".")
    document: dict = {}
    node = document
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


@pytest.mark.parametrize(("key", "hint"), LEAVES, ids=[key for key, _ in LEAVES])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_any_bad_value_is_a_config_error_naming_its_key(key, hint, data):
    value = data.draw(bad_values(hint), label=key)
    with tempfile.TemporaryDirectory() as folder:
        path = _write_value(Path(folder), key, value)
        with pytest.raises(ConfigError) as caught:
            load_params(path)
    assert f"{key}" in str(caught.value)


def test_every_numeric_field_declares_its_range():
    unbounded = [key for key, hint in LEAVES if _base(hint) in (int, float) and not bounds(hint)]
    assert not unbounded, f"declare a bound (annotated_types Ge/Gt/Le) beside {unbounded}"
