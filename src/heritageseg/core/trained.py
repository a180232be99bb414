"""A trained model's config.json, read and typed without torch.

Everything that runs a model needs its settings (architecture, normalisation, classes); a
served model that runs its exported ONNX graph needs nothing else, so reading them must not
import torch (nn.checkpoint, which rebuilds the network, builds on this).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heritageseg.core.config import ModelConfig, from_mapping
from heritageseg.core.readers import read_json
from heritageseg.core.rebuild import rebuild_hint

_CONFIG_KEYS = ("model", "normalization", "classes")


@dataclass(frozen=True)
class TrainedConfig:
    """The typed settings a model was trained with; `config` is the whole config.json, for
    logging as it is."""

    model: ModelConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    config: dict


def read_config(config_file: Path) -> dict:
    """A trained model's config.json, with the sections the loaders need."""
    config_file = Path(config_file)
    return read_json(config_file, model_hint(config_file), _CONFIG_KEYS)


def read_model_config(config_file: Path) -> ModelConfig:
    """The typed `model` section of a config.json, without building anything."""
    return _typed_model(read_config(config_file), Path(config_file))


def read_trained_config(config_file: Path) -> TrainedConfig:
    """The whole config.json, typed."""
    config = read_config(config_file)
    norm = config["normalization"]
    return TrainedConfig(
        model=_typed_model(config, Path(config_file)), mean=tuple(norm["mean"]),
        std=tuple(norm["std"]), classes=tuple(config["classes"]), config=config,
    )  # fmt: skip


def _typed_model(config: dict, config_file: Path) -> ModelConfig:
    return from_mapping(ModelConfig, config["model"], where=str(config_file), prefix="model.")


def model_hint(path: Path) -> str:
    """How to rebuild a file of models/ARCH (the folder's name is the architecture)."""
    return rebuild_hint("model", Path(path).parent.name)
