"""Profiles: overlays that switch params.yaml in place, comments kept, validated first."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from heritageseg.core.config import flatten_keys, load_params
from heritageseg.core.errors import ConfigError
from heritageseg.ops.profiles import PROFILES, apply_profile, available, set_values

from .conftest import ROOT


@pytest.fixture
def params_copy(tmp_path: Path) -> Path:
    return Path(shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml"))


def test_paper_profile_is_the_reference_configuration(params_copy):
    apply_profile("paper", params_copy)
    params = load_params(params_copy)
    train = params.train
    assert (params.ingest.source, params.prepare.mode, params.prepare.size) == ("hf", "resize", 384)
    expected = {
        "convnext": ("tu-convnext_tiny", 96, 1e-3),
        "segformer": ("mit_b3", 32, 3.333e-4),
        "maxvit": ("tu-maxvit_tiny_tf_384", 48, 5e-4),
    }
    for arch, (encoder, batch, lr) in expected.items():
        model = train.model(arch)
        assert (model.encoder, model.decoder, model.image_size) == (encoder, "unet", 384)
        assert model.batch_size == batch and train.lr_for(arch) == pytest.approx(lr, rel=1e-3)
        assert model.encoder_weights == "imagenet" and model.head == "fine"
    assert (train.epochs, train.patience, train.weight_decay) == (50, 10, 0.01)
    assert (train.scheduler, train.precision) == ("onecycle", "auto")
    assert (train.loss.dice, train.loss.ce, train.loss.focal) == (1.0, 0.0, 0.0)
    assert (params.weights.method, params.weights.max_ratio) == ("inverse_sqrt_log_scaled", 36.0)
    augment = params.augment
    assert min(augment.hflip, augment.vflip, augment.rotate, augment.color_jitter) > 0
    assert augment.blur > 0
    assert (params.launch.executor, params.launch.profile) == ("slurm", "slurm/v100.yaml")


def test_paper_native_profile_is_the_paper_profile_on_native_tiles(params_copy, tmp_path):
    paper_copy = Path(shutil.copy(params_copy, tmp_path / "paper.yaml"))
    apply_profile("paper", paper_copy)
    apply_profile("paper-native", params_copy)
    paper, native = load_params(paper_copy), load_params(params_copy)
    assert (paper.prepare.mode, native.prepare.mode) == ("resize", "tile")
    assert native.prepare.tile_size == paper.prepare.size  # tiles of the side paper resizes to
    assert dataclasses.replace(native, prepare=paper.prepare) == paper  # the rest is paper's


def test_profiles_keep_comments_and_laptop_restores_the_default_exactly(params_copy):
    original = params_copy.read_text()
    apply_profile("paper", params_copy)
    changed = params_copy.read_text()
    assert changed != original
    comments = [line.split("#", 1)[1] for line in original.splitlines() if "#" in line]
    assert comments == [line.split("#", 1)[1] for line in changed.splitlines() if "#" in line]
    apply_profile("laptop", params_copy)
    assert params_copy.read_text() == original


def test_the_laptop_profile_is_the_committed_default(params_copy):
    original = params_copy.read_text()
    apply_profile("laptop", params_copy)
    assert params_copy.read_text() == original
    touched = set()
    for name in available():
        touched |= set(_flat_keys(PROFILES / f"{name}.yaml"))
    assert touched == set(_flat_keys(PROFILES / "laptop.yaml"))  # laptop undoes every profile


def _flat_keys(path: Path) -> list[str]:
    return list(flatten_keys(yaml.safe_load(path.read_text())))


def test_unknown_profile_key_or_bad_value_leaves_params_untouched(params_copy, tmp_path):
    original = params_copy.read_text()
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        set_values(original, {"train.epochz": 3})
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "broken.yaml").write_text("train:\n  scheduler: sometimes\n")
    with pytest.raises(ConfigError, match="scheduler"):
        apply_profile("broken", params_copy, folder)
    assert params_copy.read_text() == original
    with pytest.raises(ConfigError, match="available: broken"):
        apply_profile("nope", params_copy, folder)
