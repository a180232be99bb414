"""Typed, frozen configuration read from params.yaml: one dataclass per stage section.

Unknown keys and values of the wrong type are errors that name the key, so a typo in
params.yaml never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from heritageseg.core.errors import ConfigError

SourceKind = Literal["synthetic", "parquet", "folder", "hf"]
OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class IngestConfig:
    source: SourceKind = "synthetic"
    path: str | None = None  # parquet shards / PNG folder; download folder for hf
    n: int = 300  # synthetic: number of records
    seed: int = 0
    min_size: int = 128  # synthetic: each side drawn in [min_size, max_size]
    max_size: int = 192
    background_fraction: float = 0.3  # synthetic: share of images with a 255 border
    rows_per_shard: int = 100
    on_error: OnError = "fail"
    hf_repo: str = "danielaivanova/damaged-media"
    hf_revision: str | None = None
    workers: int = 0  # synthetic generation processes; 0 = one per core

    def __post_init__(self) -> None:
        if self.source in ("parquet", "folder") and not self.path:
            raise ConfigError(f"ingest.source={self.source} needs ingest.path (or --path DIR)")
        if not 0 < self.min_size <= self.max_size:
            raise ConfigError(
                f"ingest.min_size={self.min_size} and ingest.max_size={self.max_size}: "
                "need 0 < min_size <= max_size"
            )
        if self.n < 1:
            raise ConfigError(f"ingest.n={self.n}: need at least 1 record")
        if not 0.0 <= self.background_fraction <= 1.0:
            raise ConfigError(
                f"ingest.background_fraction={self.background_fraction}: need a value in [0, 1]"
            )
        if self.rows_per_shard < 1:
            raise ConfigError(f"ingest.rows_per_shard={self.rows_per_shard}: need at least 1")


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        ratios = (self.train, self.val, self.test)
        if min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
            raise ConfigError(
                f"split.train/val/test = {ratios}: need non-negative ratios that sum to 1"
            )


@dataclass(frozen=True)
class PrepareConfig:
    mode: Literal["resize", "tile"] = "resize"
    size: int = 96  # resize: side of the square cached image (aspect kept, padded with 255)
    tile_size: int = 384  # tile: side of the native-resolution tiles
    tile_overlap: int = 64
    workers: int = 0  # decoding processes; 0 = one per core

    def __post_init__(self) -> None:
        if self.size < 8 or self.tile_size < 8:
            raise ConfigError(f"prepare.size={self.size}, tile_size={self.tile_size}: need >= 8")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ConfigError(
                f"prepare.tile_overlap={self.tile_overlap}: need 0 <= overlap < tile_size"
            )


WeightMethod = Literal["inverse_sqrt_log_scaled", "inverse", "inverse_sqrt", "none"]


@dataclass(frozen=True)
class WeightsConfig:
    method: WeightMethod = "inverse_sqrt_log_scaled"
    max_ratio: float = 36.0  # cap on max/min weight; the reference's 734x collapsed

    def __post_init__(self) -> None:
        if self.max_ratio < 1.0:
            raise ConfigError(f"weights.max_ratio={self.max_ratio}: need >= 1")


@dataclass(frozen=True)
class AugmentConfig:
    """The reference's train augmentations (probabilities and strengths)."""

    hflip: float = 0.5
    vflip: float = 0.5
    rotate_limit: int = 30
    rotate: float = 0.5
    color_jitter: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    blur: float = 0.2
    blur_limit: int = 3


@dataclass(frozen=True)
class ModelConfig:
    """One architecture: what `models.build_model` builds and how it is fed."""

    encoder: str = "mit_b0"
    decoder: Literal["unet", "upernet", "segformer"] = "unet"
    encoder_weights: Literal["imagenet"] | None = None
    decoder_channels: tuple[int, ...] | None = None  # None: smp's default widths
    head: Literal["fine", "hierarchical"] = "fine"
    image_size: int = 96
    batch_size: int = 8
    lr: float | None = None  # None: base_lr * batch_size / base_batch_size

    def __post_init__(self) -> None:
        if self.image_size % 32:
            raise ConfigError(f"image_size={self.image_size}: need a multiple of 32")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: need at least 1")
        if self.decoder_channels is not None:
            _check_decoder_channels(self.decoder, tuple(self.decoder_channels))


DECODER_STAGES = {"unet": 5, "upernet": 1, "segformer": 1}
"""How many widths `decoder_channels` lists per decoder: one per U-Net stage, else one."""


def _check_decoder_channels(decoder: str, channels: tuple) -> None:
    stages = DECODER_STAGES.get(decoder, 1)
    if len(channels) != stages or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ConfigError(
            f"decoder_channels={list(channels)}: {decoder} takes {stages} positive "
            f"width(s), e.g. {[256, 128, 64, 32, 16][:stages]}; or null for the default"
        )


@dataclass(frozen=True)
class LossConfig:
    dice: float = 1.0  # multiclass Dice with class weights, ignore 255 (the reference)
    ce: float = 1.0  # + weighted cross-entropy: learns faster from random weights
    focal: float = 0.0  # + focal loss
    focal_gamma: float = 2.0
    head_weights: tuple[float, float, float] = (0.2, 0.3, 0.5)  # binary, coarse, fine


def _laptop_model(encoder: str) -> ModelConfig:
    """An architecture of the laptop default: a slim U-Net decoder (1.2-1.6x faster per step)."""
    return ModelConfig(encoder=encoder, decoder_channels=(128, 64, 32, 16, 16))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    patience: int = 4  # early stopping on validation mIoU
    base_lr: float = 2e-3
    base_batch_size: int = 8  # lr scales in proportion (the reference: 1e-3 at batch 96)
    weight_decay: float = 0.01
    scheduler: Literal["onecycle", "plateau", "none"] = "onecycle"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp16 CUDA, bf16 CPU
    accumulate: int = 1
    clip_grad_norm: float | None = 1.0
    channels_last: bool = True
    num_workers: int = 0
    seed: int = 0
    loss: LossConfig = field(default_factory=LossConfig)
    convnext: ModelConfig = field(default_factory=lambda: _laptop_model("tu-convnext_atto"))
    segformer: ModelConfig = field(default_factory=lambda: _laptop_model("mit_b0"))
    maxvit: ModelConfig = field(default_factory=lambda: _laptop_model("tu-maxvit_pico_rw_256"))

    def model(self, arch: str) -> ModelConfig:
        if arch not in ARCHS:
            raise ConfigError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
        return getattr(self, arch)

    def shared(self) -> dict[str, Any]:
        """The settings every architecture trains with (all but the per-arch sections)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ARCHS}

    def lr_for(self, arch: str) -> float:
        model = self.model(arch)
        return (
            model.lr
            if model.lr is not None
            else self.base_lr * model.batch_size / self.base_batch_size
        )


ARCHS = ("convnext", "segformer", "maxvit")
Backend = Literal[
    "eager", "bf16", "fp16", "compile", "onnx", "int8", "int8-inductor"
]  # = heritageseg.infer.backends.BACKENDS (tests/test_backends.py checks)


@dataclass(frozen=True)
class EvaluateConfig:
    split: Literal["test", "val"] = "test"
    resolution: Literal["prepared", "native", "both"] = "both"  # both: + metrics_native.json
    batch_size: int = 8
    tile_overlap: int = 32  # native: sliding-window overlap; the tile is the arch's image_size
    bootstrap: int = 1000  # resamples of test images for miou_ci95
    seed: int = 0
    backend: Backend | None = (
        None  # None: PyTorch at train.precision; else heritageseg.infer.backends
    )


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow. The env MLFLOW_TRACKING_URI wins over `uri`; None: sqlite:///mlruns/mlflow.db."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "artefact-benchmark"
    register: bool = True  # log a pyfunc model per arch and register it as heritageseg-<arch>


@dataclass(frozen=True)
class LaunchConfig:
    """Where train and evaluate run: here, or as Slurm jobs configured by a profile file."""

    executor: Literal["local", "debug", "slurm"] = "local"
    profile: str = "slurm/v100.yaml"  # sbatch settings for executor: slurm (heritageseg.ops.launch)


@dataclass(frozen=True)
class Params:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


def load_params(path: str | Path) -> Params:
    """Read a params file; keys it leaves out keep the defaults (equal to the laptop
    params.yaml). A missing or unreadable file is an error, never a silent default."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found (give --params FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the params file ({exc})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return from_mapping(Params, data, where=str(path))


def from_mapping(cls: type, data: Any, where: str, base: Any = None) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value type. Keys left
    out keep their value in `base` (default: `cls()`), so a section may name only what
    it changes."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    base = cls() if base is None else base
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            values[name] = from_mapping(hints[name], value, f"{where}: {name}", getattr(base, name))
        else:
            values[name] = _coerce(hints[name], value, f"{where}: {name}")
    return dataclasses.replace(base, **values)


def flatten_keys(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 8}} (a mapping or a config dataclass) -> {'train.epochs': 8}."""
    if dataclasses.is_dataclass(data):
        data = dataclasses.asdict(data)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_overrides(config: Any, **overrides: Any) -> Any:
    """Replace the fields given (None means 'not given'), re-running validation."""
    given = {k: v for k, v in overrides.items() if v is not None}
    hints = typing.get_type_hints(type(config))
    checked = {k: _coerce(hints[k], v, f"--{k.replace('_', '-')}") for k, v in given.items()}
    return dataclasses.replace(config, **checked)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where}={value!r}: choose one of {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if origin is tuple:
        kinds = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}={value!r}: expected a list")
        if len(kinds) == 2 and kinds[1] is Ellipsis:  # tuple[X, ...]: any length
            kinds = (kinds[0],) * len(value)
        if len(value) != len(kinds):
            raise ConfigError(f"{where}={value!r}: expected a list of {len(kinds)} values")
        return tuple(
            _coerce(k, v, f"{where}[{i}]")
            for i, (k, v) in enumerate(zip(kinds, value, strict=True))
        )
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool, float) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}={value!r}: expected {hint.__name__}")
    return value
