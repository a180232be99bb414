"""Readers of what `train` and `evaluate` wrote, shared by the report and the summary: a
file that is broken or lacks what its writer writes is an error with the command that
rebuilds it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from heritageseg.core.paths import CONFIG, HISTORY, RESOLUTION_FILES, TRAIN_METRICS
from heritageseg.core.readers import (
    BrokenFile,
    read_csv_table,
    read_json,
    require,
    require_file,
)
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.core.trained import read_model_config
from heritageseg.nn.models import family

TRAIN_METRICS_KEYS = (
    "arch", "best_epoch", "best_val_miou", "epochs_run", "stopped_early", "train_seconds",
    "train_images_per_s", "params_m", "peak_mem_mb",
)  # fmt: skip
METRICS_KEYS = (
    "arch", "split", "miou", "miou_damage", "dice", "pixel_accuracy", "precision", "recall",
    "f1", "miou_ci95", "per_class", "confusion_matrix", "throughput_img_s", "latency_ms",
    "params_m", "peak_mem_mb",
)  # fmt: skip
"""What the report and the summary read of metrics.json (its schema is in ARCHITECTURE.md)."""


def read_training(model_dir: Path) -> dict | None:
    """train_metrics.json with the encoder and its family added; None before training."""
    path = model_dir / TRAIN_METRICS
    if not path.exists():
        return None
    encoder = read_model_config(model_dir / CONFIG).encoder
    training = read_json(path, rebuild_hint("model", model_dir.name), TRAIN_METRICS_KEYS)
    return {**training, "encoder": encoder, "family": family(encoder)}


HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_miou")
"""What the report's training curves read of history.csv."""


def read_history(model_dir: Path, epochs: int) -> list[dict]:
    """history.csv's rows, one per epoch run (train_metrics.json's `epochs_run`, so a file
    cut at a line end is caught too); [] for a model trained before it existed."""
    path = model_dir / HISTORY
    if not path.exists():
        return []
    hint = rebuild_hint("model", model_dir.name)
    table = read_csv_table(path, HISTORY_KEYS, hint)
    require(len(table) == epochs, path, f"has {len(table)} row(s) for {epochs} epoch(s)", hint)
    for key in HISTORY_KEYS:
        numbers = pd.to_numeric(table[key], errors="coerce")
        require(bool(numbers.notna().all()), path, f"column {key} holds a non-number", hint)
    return table.to_dict("records")


def read_metrics(folder: Path) -> dict[str, dict]:
    """resolution ("prepared", "native") -> its metrics document, for those evaluated."""
    hint = rebuild_hint("metrics", folder.name)
    return {
        resolution: read_json(folder / name, hint, METRICS_KEYS)
        for resolution, name in RESOLUTION_FILES.items()
        if (folder / name).exists()
    }


def read_per_image(path: Path, resolutions) -> dict[str, tuple[list[str], np.ndarray]]:
    """per_image.npz: resolution -> (image ids, their C x C confusion matrices), for each of
    `resolutions` it holds; never unpickled."""
    hint = rebuild_hint("per_image", path.parent.name)
    require_file(path, hint)
    try:
        with np.load(path, allow_pickle=False) as saved:
            found = [key for key in resolutions if key in saved]
            per_image = {key: (list(saved[f"{key}_ids"]), saved[key]) for key in found}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError):  # pickle advice
        problem = "is not a whole .npz archive of plain arrays: truncated or corrupt"
        raise BrokenFile(path, problem, hint) from None
    for key, (ids, matrices) in per_image.items():
        square = matrices.ndim == 3 and matrices.shape[1] == matrices.shape[2]
        require(square and len(ids) == len(matrices), path,
                f"{key}: {len(ids)} ids for matrices of shape {matrices.shape}", hint)  # fmt: skip
    return per_image
