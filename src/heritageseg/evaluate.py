"""The evaluate stage: a trained architecture on the test (or val) split -> metrics.json.

Two resolutions: `prepared` scores the cached samples the model was trained at; `native`
predicts every original image at full size with the sliding window and scores it against
the full-size annotation, which is where thin damage (hair, scratches, dust) survives.
Confusion matrices are kept per image, so the 95 % interval of mIoU is a bootstrap over
artworks, and memory does not grow with the split beyond N small 16x16 matrices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from heritageseg.checkpoint import load_weights
from heritageseg.config import ModelConfig, Params
from heritageseg.data.artefact import decode_record, iter_parquet
from heritageseg.data.cache import CacheDataset, read_split
from heritageseg.data.transforms import eval_transform
from heritageseg.engine import peak_memory_mb, resolve_precision
from heritageseg.errors import ConfigError, HeritagesegError
from heritageseg.infer import Predict, model_predictor, sliding_window_predict
from heritageseg.metrics import bootstrap_miou, confusion, scores
from heritageseg.models import build_model, count_parameters

METRICS = "metrics.json"
NATIVE_METRICS = "metrics_native.json"


@dataclass
class Scored:
    """Per-image confusion matrices and the time spent in the model."""

    per_image: np.ndarray  # (N, C, C)
    model_seconds: float
    images: int


def load_trained(model_dir: Path) -> tuple[torch.nn.Module, dict]:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise HeritagesegError(f"{config_path} not found: run `heritageseg train` first")
    config = json.loads(config_path.read_text())
    model = build_model(ModelConfig(**config["model"]))
    load_weights(model, model_dir)
    return model.eval(), config


def score_prepared(
    predict: Predict, cache: Path, split: str, config: dict, batch_size: int
) -> Scored:
    """Each cached sample of the split, grouped back into images (tiles of one id summed)."""
    norm = config["normalization"]
    dataset = CacheDataset(
        cache, split, eval_transform(config["model"]["image_size"], norm["mean"], norm["std"])
    )
    if len(dataset) == 0:
        raise HeritagesegError(f"{cache}: the {split} split is empty")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    matrices, seconds = [], 0.0
    with torch.no_grad():
        for batch in loader:
            start = time.perf_counter()
            prediction = predict(batch["image"]).argmax(dim=1)
            seconds += time.perf_counter() - start
            matrices += [
                confusion(p, t).numpy() for p, t in zip(prediction, batch["mask"], strict=True)
            ]
    ids = dataset.index["id"].to_numpy()
    per_image = pd.Series(list(matrices), index=ids).groupby(level=0, sort=False).sum()
    return Scored(np.stack(per_image.to_list()), seconds, len(dataset))


def score_native(
    predict: Predict, raw: Path, split_ids: set[str], config: dict, batch_size: int,
    overlap: int,
) -> Scored:  # fmt: skip
    """Every original image of the split, predicted at full size by the sliding window."""
    norm = config["normalization"]
    tile = config["model"]["image_size"]
    if not 0 <= overlap < tile:
        raise ConfigError(f"evaluate.tile_overlap={overlap}: need 0 <= overlap < {tile} (tile)")
    matrices, seconds, images = [], 0.0, 0
    for record in _records(raw, split_ids):
        start = time.perf_counter()
        labels = sliding_window_predict(
            predict, record.image, tile=tile, overlap=overlap, num_classes=16,
            mean=norm["mean"], std=norm["std"], batch_size=batch_size,
        )  # fmt: skip
        seconds += time.perf_counter() - start
        images += 1
        truth = torch.from_numpy(np.array(record.mask))  # a writable copy for torch
        matrices.append(confusion(torch.from_numpy(labels), truth).numpy())
    if not matrices:
        raise HeritagesegError(f"{raw}: no record of the split found")
    return Scored(np.stack(matrices), seconds, images)


def _records(raw: Path, ids: set[str]) -> Iterator:
    for item in iter_parquet(raw):
        if item.id in ids:
            yield decode_record(item)


def metrics_document(
    arch: str, split: str, scored: Scored, params_m: float, bootstrap: int, seed: int,
    device: torch.device,
) -> dict:  # fmt: skip
    """metrics.json in the schema of ARCHITECTURE.md, keys in its order."""
    summary = scores(scored.per_image.sum(axis=0))
    throughput = scored.images / scored.model_seconds if scored.model_seconds > 0 else 0.0
    return {
        "arch": arch,
        "split": split,
        **{k: summary[k] for k in ("miou", "miou_damage", "dice", "pixel_accuracy")},
        **{k: summary[k] for k in ("precision", "recall", "f1")},
        "miou_ci95": list(bootstrap_miou(scored.per_image, bootstrap, seed)),
        "per_class": summary["per_class"],
        "confusion_matrix": summary["confusion_matrix"],
        "throughput_img_s": throughput,
        "latency_ms": 1000.0 / throughput if throughput else 0.0,
        "params_m": params_m,
        "peak_mem_mb": peak_memory_mb(device),
    }


def run_evaluation(
    params: Params, arch: str, *, cache: Path, raw: Path, splits: Path, model_dir: Path,
    split: str,
) -> dict[str, dict]:  # fmt: skip
    """Score `arch` and return {file name: document} for the resolutions params ask for."""
    cfg = params.evaluate
    model, config = load_trained(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    predict = evaluation_predictor(
        model, cfg.backend, device, params.train.precision, config, cache
    )
    params_m = count_parameters(model)
    documents = {}

    def document(scored: Scored) -> dict:
        return metrics_document(arch, split, scored, params_m, cfg.bootstrap, cfg.seed, device)

    if cfg.resolution in ("prepared", "both"):
        documents[METRICS] = document(score_prepared(predict, cache, split, config, cfg.batch_size))
    if cfg.resolution in ("native", "both"):
        table = read_split(splits / "split.csv")
        ids = set(table.loc[table["split"] == split, "id"])
        scored = score_native(predict, raw, ids, config, cfg.batch_size, cfg.tile_overlap)
        documents[NATIVE_METRICS if METRICS in documents else METRICS] = document(scored)
    return documents


def evaluation_predictor(
    model: torch.nn.Module, backend: str | None, device: torch.device, precision: str,
    config: dict, cache: Path,
) -> Predict:  # fmt: skip
    """`evaluate.backend` null: PyTorch at `train.precision`, as results always were; else a
    backend of heritageseg.backends (int8 calibrated on `cache`'s train images)."""
    if backend is None:
        return model_predictor(model, resolve_precision(precision, device).autocast)
    from heritageseg.backends import build_predictor, calibration_images

    size = config["model"]["image_size"]
    calibration = None
    if backend == "int8":
        calibration = calibration_images(cache, size, config["normalization"])
    return build_predictor(model, backend, device, size, calibration)
