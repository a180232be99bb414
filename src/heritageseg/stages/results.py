"""Readers of what `train` and `evaluate` wrote, shared by the report and the summary."""

from __future__ import annotations

import json
from pathlib import Path

from heritageseg.core.paths import CONFIG, RESOLUTION_FILES, TRAIN_METRICS
from heritageseg.nn.checkpoint import read_model_config
from heritageseg.nn.models import family


def read_training(model_dir: Path) -> dict | None:
    """train_metrics.json with the encoder and its family added; None before training."""
    if not (model_dir / TRAIN_METRICS).is_file():
        return None
    encoder = read_model_config(model_dir / CONFIG).encoder
    training = json.loads((model_dir / TRAIN_METRICS).read_text())
    return {**training, "encoder": encoder, "family": family(encoder)}


def read_metrics(folder: Path) -> dict[str, dict]:
    """resolution ("prepared", "native") -> its metrics document, for those evaluated."""
    return {
        resolution: json.loads((folder / name).read_text())
        for resolution, name in RESOLUTION_FILES.items()
        if (folder / name).is_file()
    }
