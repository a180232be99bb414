"""params.yaml is read into typed dataclasses; mistakes name their key."""

from __future__ import annotations

import pytest
import yaml

from heritageseg.core.config import IngestConfig, flatten_keys, load_params, with_overrides
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
        ("ingest:\n  nn: 3\n", "unknown key(s) nn"),
        ("ingestt: {}\n", "unknown key(s) ingestt"),
        ("ingest:\n  n: many\n", "n='many': expected int"),
        ("ingest:\n  n: true\n", "expected int"),
        ("ingest:\n  source: s3\n", "choose one of synthetic, parquet, folder, hf"),
        ("ingest:\n  source: parquet\n", "needs ingest.path"),
        ("ingest:\n  min_size: 500\n  max_size: 100\n", "min_size <= max_size"),
        ("ingest: [1, 2]\n", "expected a mapping"),
        ("ingest: {n: [\n", "not valid YAML"),
        ("train:\n  segformer:\n    decoder_channels: 64\n", "expected a list"),
        ("train:\n  segformer:\n    decoder_channels: [64, 32]\n", "unet takes 5 positive"),
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
