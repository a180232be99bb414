"""Typed, frozen configuration read from params.yaml: one dataclass per stage section.

Unknown keys, values of the wrong type and values outside the range declared beside each
field (`Annotated[int, Ge(1)]`, the annotated-types vocabulary pydantic also reads) are
errors that name the full key, so a typo in params.yaml never silently falls back to a
default and a zero batch size never reaches torch.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, MultipleOf

from heritageseg.core.errors import ConfigError

SourceKind = Literal["synthetic", "parquet", "folder", "hf"]
OnError = Literal["fail", "skip"]

Count = Annotated[int, Ge(1)]
Workers = Annotated[int, Ge(0)]  # 0: one per core, or in this process
Seed = Annotated[int, Ge(0)]  # numpy refuses negative seeds
Probability = Annotated[float, Ge(0.0), Le(1.0)]
NonNegative = Annotated[float, Ge(0.0)]
Positive = Annotated[float, Gt(0.0)]


class FieldError(ConfigError):
    """A value its field does not allow; the loader adds the section and the file."""

    def __init__(self, key: str, value: Any, need: str):
        self.key, self.value, self.need = key, value, need
        super().__init__(f"{key}={value!r}: {need}")

    def at(self, where: str, prefix: str) -> ConfigError:
        return ConfigError(f"{where}: {prefix}{self.key}={self.value!r}: {self.need}")


def check_fields(config: Any) -> None:
    """Check every field of a config dataclass against the bounds declared in its hint."""
    for name, hint in _hints(type(config)).items():
        _check_value(hint, getattr(config, name), name)


def _check_value(hint: Any, value: Any, key: str) -> None:
    if value is None:
        return  # None is only ever valid where the type allows it, which _coerce checks
    hint = without_none(hint)
    if typing.get_origin(hint) is tuple and isinstance(value, tuple):
        kinds = typing.get_args(hint)
        kinds = (kinds[0],) * len(value) if kinds[-1] is Ellipsis else kinds
        for index, (kind, item) in enumerate(zip(kinds, value, strict=False)):
            _check_value(kind, item, f"{key}[{index}]")
    for bound in bounds(hint):
        if not _within(bound, value):
            raise FieldError(key, value, f"need {_describe(bound)}")


def bounds(hint: Any) -> tuple:
    """The annotated-types bounds declared on a field's type (Ge, Gt, Le, MultipleOf)."""
    hint = without_none(hint)
    if typing.get_origin(hint) is Annotated:
        return tuple(m for m in hint.__metadata__ if isinstance(m, Ge | Gt | Le | MultipleOf))
    return ()


def without_none(hint: Any) -> Any:
    """X for `X | None`, else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def _within(bound: Any, value: Any) -> bool:
    if isinstance(bound, Ge):
        return value >= bound.ge  # written so that NaN is outside every bound
    if isinstance(bound, Gt):
        return value > bound.gt
    if isinstance(bound, Le):
        return value <= bound.le
    return value % bound.multiple_of == 0


def _describe(bound: Any) -> str:
    if isinstance(bound, Ge):
        return f">= {bound.ge}"
    if isinstance(bound, Gt):
        return f"> {bound.gt}"
    if isinstance(bound, Le):
        return f"<= {bound.le}"
    return f"a multiple of {bound.multiple_of}"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


# Records larger than this are rejected by ingest, from the header, before decoding; the
# folder ingest writes carries the limit it used to prepare and the native evaluation.
RECORD_MAX_PIXELS = 1_000_000_000
RECORD_PIXELS_OPTION = "ingest.max_pixels in params.yaml"


@dataclass(frozen=True)
class IngestConfig:
    source: SourceKind = "synthetic"
    path: str | None = None  # parquet shards / PNG folder; download folder for hf
    n: Count = 300  # synthetic: number of records
    seed: Seed = 0
    min_size: Count = 128  # synthetic: each side drawn in [min_size, max_size]
    max_size: Count = 192
    background_fraction: Probability = 0.3  # synthetic: share of images with a 255 border
    rows_per_shard: Count = 100
    on_error: OnError = "fail"
    hf_repo: str = "danielaivanova/damaged-media"
    hf_revision: str | None = None
    workers: Workers = 0  # synthetic generation processes; 0 = one per core
    max_pixels: Count = RECORD_MAX_PIXELS  # a record's largest image, width x height

    def __post_init__(self) -> None:
        check_fields(self)
        if self.source in ("parquet", "folder") and not self.path:
            raise FieldError("path", self.path, f"source {self.source} needs a path (or --path)")
        if self.min_size > self.max_size:
            raise FieldError("min_size", self.min_size, f"need <= max_size ({self.max_size})")


@dataclass(frozen=True)
class SplitConfig:
    train: Probability = 0.70
    val: Probability = 0.15
    test: Probability = 0.15
    seed: Seed = 0

    def __post_init__(self) -> None:
        check_fields(self)
        ratios = (self.train, self.val, self.test)
        if abs(sum(ratios) - 1.0) > 1e-6:
            raise FieldError("train/val/test", ratios, "need fractions that sum to 1")


@dataclass(frozen=True)
class PrepareConfig:
    mode: Literal["resize", "tile"] = "resize"
    size: Annotated[int, Ge(8)] = 96  # resize: side of the cached square (aspect kept, 255 pad)
    tile_size: Annotated[int, Ge(8)] = 384  # tile: side of the native-resolution tiles
    tile_overlap: Annotated[int, Ge(0)] = 64
    workers: Workers = 0  # decoding processes; 0 = one per core

    def __post_init__(self) -> None:
        check_fields(self)
        if self.tile_overlap >= self.tile_size:
            raise FieldError(
                "tile_overlap", self.tile_overlap, f"need < tile_size ({self.tile_size})"
            )


WeightMethod = Literal["inverse_sqrt_log_scaled", "inverse", "inverse_sqrt", "none"]


@dataclass(frozen=True)
class WeightsConfig:
    method: WeightMethod = "inverse_sqrt_log_scaled"
    max_ratio: Annotated[float, Ge(1.0)] = 36.0  # cap on max/min weight; the reference's 734x

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class AugmentConfig:
    """The reference's train augmentations (probabilities and strengths)."""

    hflip: Probability = 0.5
    vflip: Probability = 0.5
    rotate_limit: Annotated[int, Ge(0), Le(180)] = 30  # degrees either way
    rotate: Probability = 0.5
    color_jitter: Probability = 0.5
    brightness: NonNegative = 0.2
    contrast: NonNegative = 0.2
    saturation: NonNegative = 0.2
    hue: Annotated[float, Ge(0.0), Le(0.5)] = 0.05
    blur: Probability = 0.2
    blur_limit: Annotated[int, Ge(3)] = 3  # albumentations' smallest kernel

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ModelConfig:
    """One architecture: what `models.build_model` builds and how it is fed."""

    encoder: str = "mit_b0"
    decoder: Literal["unet", "upernet", "segformer"] = "unet"
    encoder_weights: Literal["imagenet"] | None = None
    decoder_channels: tuple[Count, ...] | None = None  # None: smp's default widths
    head: Literal["fine", "hierarchical"] = "fine"
    image_size: Annotated[int, Ge(32), MultipleOf(32)] = 96  # encoders downsample 32x
    batch_size: Count = 8
    lr: Positive | None = None  # None: base_lr * batch_size / base_batch_size

    def __post_init__(self) -> None:
        check_fields(self)
        if self.decoder_channels is not None:
            _check_decoder_channels(self.decoder, tuple(self.decoder_channels))


DECODER_STAGES = {"unet": 5, "upernet": 1, "segformer": 1}
"""How many widths `decoder_channels` lists per decoder: one per U-Net stage, else one."""


def _check_decoder_channels(decoder: str, channels: tuple) -> None:
    stages = DECODER_STAGES.get(decoder, 1)
    if len(channels) != stages or not all(isinstance(c, int) and c > 0 for c in channels):
        raise FieldError(
            "decoder_channels",
            list(channels),
            f"{decoder} takes {stages} positive width(s), "
            f"e.g. {[256, 128, 64, 32, 16][:stages]}; or null for the default",
        )


@dataclass(frozen=True)
class LossConfig:
    dice: NonNegative = 1.0  # multiclass Dice with class weights, ignore 255 (the reference)
    ce: NonNegative = 1.0  # + weighted cross-entropy: learns faster from random weights
    focal: NonNegative = 0.0  # + focal loss
    focal_gamma: NonNegative = 2.0
    head_weights: tuple[NonNegative, NonNegative, NonNegative] = (0.2, 0.3, 0.5)  # bin/coarse/fine

    def __post_init__(self) -> None:
        check_fields(self)
        if not (self.dice or self.ce or self.focal):
            raise FieldError("dice/ce/focal", (0, 0, 0), "need at least one loss term > 0")


def _laptop_model(encoder: str) -> ModelConfig:
    """An architecture of the laptop default: a slim U-Net decoder (1.2-1.6x faster per step)."""
    return ModelConfig(encoder=encoder, decoder_channels=(128, 64, 32, 16, 16))


@dataclass(frozen=True)
class TrainConfig:
    epochs: Count = 8
    patience: Count = 4  # early stopping on validation mIoU
    base_lr: Positive = 2e-3
    base_batch_size: Count = 8  # lr scales in proportion (the reference: 1e-3 at batch 96)
    weight_decay: NonNegative = 0.01
    scheduler: Literal["onecycle", "plateau", "none"] = "onecycle"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp16 CUDA, bf16 CPU
    accumulate: Count = 1
    clip_grad_norm: Positive | None = 1.0
    channels_last: bool = True
    num_workers: Workers = 0
    seed: Seed = 0
    loss: LossConfig = field(default_factory=LossConfig)
    convnext: ModelConfig = field(default_factory=lambda: _laptop_model("tu-convnext_atto"))
    segformer: ModelConfig = field(default_factory=lambda: _laptop_model("mit_b0"))
    maxvit: ModelConfig = field(default_factory=lambda: _laptop_model("tu-maxvit_pico_rw_256"))

    def __post_init__(self) -> None:
        check_fields(self)

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
    batch_size: Count = 8
    tile_overlap: Annotated[int, Ge(0)] = 32  # native: window overlap; tile = arch's image_size
    bootstrap: Count = 1000  # resamples of test images for miou_ci95
    seed: Seed = 0
    backend: Backend | None = (
        None  # None: PyTorch at train.precision; else heritageseg.infer.backends
    )

    def __post_init__(self) -> None:
        check_fields(self)


MAX_PIXELS_OPTION = "predict.max_pixels in params.yaml"  # what raises the pixel limit


@dataclass(frozen=True)
class PredictConfig:
    """Damage maps of new scans (`heritageseg predict` and the served model)."""

    # Refused above this, from the header, before decoding (a conservation scan: 100-500 Mpx).
    max_pixels: Count = 1_000_000_000
    # Side of the inference tiles, decoupled from training where the encoder accepts any size
    # (convolutional, MiT; a multiple of 32, the U-Net's stride); None, and any encoder built
    # for one size (MaxViT's windows), use the training size. Measured on the laptop model
    # (96 px): 256-512 px tiles are ~3x faster but relabel ~6 % of pixels, so None here.
    tile: Annotated[int, Ge(32), MultipleOf(32)] | None = None
    overlap: Annotated[float, Ge(0.0), Le(0.5)] = 0.3333  # share of the tile neighbours overlap
    batch_size: Count = 32  # tiles per forward pass: small tiles need many to be efficient

    def __post_init__(self) -> None:
        check_fields(self)


PREDICT_DEFAULTS = PredictConfig()  # one instance for argument defaults


FoldKind = Literal["none", "content", "material"]  # none: the split as it is; else paths.FOLD_BY


@dataclass(frozen=True)
class StudyConfig:
    """`heritageseg study`: one training + test evaluation per (arch, seed, held-out fold),
    so a verdict can be checked against the spread of the training run itself."""

    archs: tuple[str, ...] = ARCHS
    seeds: tuple[Seed, ...] = (0, 1)  # train.seed of each run (0 is the benchmark's own)
    folds: FoldKind = "none"  # content / material: leave one out, every value in turn
    bootstrap: Count = 1000  # resamples of seeds and test images per comparison
    seed: Seed = 0  # of the resampling

    def __post_init__(self) -> None:
        check_fields(self)
        _check_names("archs", self.archs, ARCHS)
        _check_names("seeds", self.seeds, None)


def _check_names(key: str, values: tuple, valid: tuple | None) -> None:
    """A non-empty list without repeats, of `valid` names when given."""
    if not values:
        raise FieldError(key, list(values), "need at least one")
    unknown = [v for v in values if valid is not None and v not in valid]
    if unknown:
        raise FieldError(key, list(values), f"unknown {unknown[0]!r}; valid: {', '.join(valid)}")
    if len(set(values)) != len(values):
        raise FieldError(key, list(values), "each value at most once")


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
    predict: PredictConfig = field(default_factory=PredictConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
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


def from_mapping(cls: type, data: Any, where: str, base: Any = None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key, value type and bound.
    Keys left out keep their value in `base` (default: `cls()`), so a section may name only
    what it changes. Errors read `WHERE: prefix.key=value: what is allowed`."""
    if not isinstance(data, dict):
        section = f"{prefix.rstrip('.')}: " if prefix else ""
        raise ConfigError(f"{where}: {section}expected a mapping, got {type(data).__name__}")
    base = cls() if base is None else base
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(prefix + str(k) for k in unknown)}; "
            f"valid keys: {', '.join(fields)}"
        )
    hints = _hints(cls)
    values = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            section = getattr(base, name)
            values[name] = from_mapping(hints[name], value, where, section, f"{prefix}{name}.")
        else:
            values[name] = _coerce(hints[name], value, f"{where}: {prefix}{name}")
    try:
        return dataclasses.replace(base, **values)
    except FieldError as error:
        raise error.at(where, prefix) from None


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
    hints = _hints(type(config))
    checked = {k: _coerce(hints[k], v, f"--{k.replace('_', '-')}") for k, v in given.items()}
    try:
        return dataclasses.replace(config, **checked)
    except FieldError as error:
        flag = error.key.replace("_", "-")
        raise ConfigError(f"--{flag}={error.value!r}: {error.need}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check the type of one value (bounds are the dataclass's own check)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _coerce(typing.get_args(hint)[0], value, where)
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
        if abs(value) > 2**53:
            raise ConfigError(f"{where}={value!r}: expected a float this side of 2**53")
        return float(value)
    if hint in (int, str, bool, float) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}={value!r}: expected {hint.__name__}")
    return value
