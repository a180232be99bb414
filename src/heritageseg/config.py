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

from heritageseg.errors import ConfigError

SourceKind = Literal["synthetic", "parquet", "folder", "hf"]
OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class IngestConfig:
    source: SourceKind = "synthetic"
    path: str | None = None  # parquet shards / PNG folder; download folder for hf
    n: int = 300  # synthetic: number of records
    seed: int = 0
    min_size: int = 256  # synthetic: each side drawn in [min_size, max_size]
    max_size: int = 512
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
    size: int = 192  # resize: side of the square cached image (aspect kept, padded with 255)
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
class Params:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml; a missing file gives the defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return from_mapping(Params, data, where=str(path))


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}: {name}") for name, value in data.items()}
    return cls(**values)


def with_overrides(config: Any, **overrides: Any) -> Any:
    """Replace the fields given (None means 'not given'), re-running validation."""
    given = {k: v for k, v in overrides.items() if v is not None}
    hints = typing.get_type_hints(type(config))
    checked = {k: _coerce(hints[k], v, f"--{k.replace('_', '-')}") for k, v in given.items()}
    return dataclasses.replace(config, **checked)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
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
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool, float) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}={value!r}: expected {hint.__name__}")
    return value
