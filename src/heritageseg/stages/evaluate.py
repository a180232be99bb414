"""The evaluate stage: a trained architecture on the test (or val) split -> metrics.json.

Two resolutions: `prepared` scores the cached samples the model was trained at; `native`
predicts every original image at full size with the sliding window and scores it against
the full-size annotation, which is where thin damage (hair, scratches, dust) survives.
Confusion matrices are kept per image, so the 95 % interval of mIoU is a bootstrap over
artworks, and memory does not grow with the split beyond N small 16x16 matrices. They are
saved (`per_image.npz`) for the report's paired comparison of architectures.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from heritageseg.core.classes import CLASS_NAMES, NUM_CLASSES
from heritageseg.core.config import Params
from heritageseg.core.errors import ConfigError, HeritagesegError
from heritageseg.core.fileio import atomic_dir, write_json
from heritageseg.core.paths import (
    METRICS_FILE,
    NATIVE_METRICS_FILE,
    PER_CLASS,
    PER_IMAGE,
    PLOTS,
    SPLIT_TABLE,
)
from heritageseg.data.artefact import decode_record, iter_parquet
from heritageseg.data.cache import CacheDataset
from heritageseg.data.splits import read_split
from heritageseg.data.transforms import eval_transform
from heritageseg.infer.backends import model_predictor
from heritageseg.infer.window import Predict, sliding_window_predict
from heritageseg.nn.checkpoint import Trained, load_trained
from heritageseg.nn.engine import peak_memory_mb, resolve_precision
from heritageseg.nn.metrics import bootstrap_miou, confusion, scores
from heritageseg.nn.models import count_parameters
from heritageseg.stages import pictures

SAMPLES = 9


@dataclass
class Scored:
    """Per-image confusion matrices (ids in the same order) and the time spent in the model."""

    ids: list[str]
    per_image: np.ndarray  # (N, C, C)
    model_seconds: float
    images: int


@dataclass
class Evaluation:
    """Everything the evaluate stage writes: one scored set per resolution and the samples."""

    arch: str
    split: str
    scored: dict[str, Scored]  # "prepared" / "native"
    documents: dict[str, dict]  # file name -> metrics.json document
    samples: list[pictures.Sample]


def score_prepared(
    predict: Predict, cache: Path, split: str, trained: Trained, batch_size: int
) -> Scored:
    """Each cached sample of the split, grouped back into images (tiles of one id summed)."""
    transform = eval_transform(trained.model.image_size, trained.mean, trained.std)
    dataset = CacheDataset(cache, split, transform)
    if len(dataset) == 0:
        raise HeritagesegError(f"{cache}: the {split} split is empty")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    matrices, seconds = [], 0.0
    with torch.no_grad():
        for batch in loader:
            start = time.perf_counter()
            prediction = torch.from_numpy(predict(batch["image"].numpy())).argmax(dim=1)
            seconds += time.perf_counter() - start
            matrices += [
                confusion(p, t).numpy() for p, t in zip(prediction, batch["mask"], strict=True)
            ]
    ids = dataset.index["id"].to_numpy()
    per_image = pd.Series(list(matrices), index=ids).groupby(level=0, sort=False).sum()
    return Scored(list(per_image.index), np.stack(per_image.to_list()), seconds, len(dataset))


def score_native(
    predict: Predict, raw: Path, split_ids: set[str], trained: Trained, batch_size: int,
    overlap: int,
) -> Scored:  # fmt: skip
    """Every original image of the split, predicted at full size by the sliding window
    (`overlap` checked against the tile by run_evaluation, before any work)."""
    tile = trained.model.image_size
    ids, matrices, seconds, images = [], [], 0.0, 0
    for record in _records(raw, split_ids):
        start = time.perf_counter()
        labels = sliding_window_predict(
            predict, record.image, tile=tile, overlap=overlap, num_classes=16,
            mean=trained.mean, std=trained.std, batch_size=batch_size,
        )  # fmt: skip
        seconds += time.perf_counter() - start
        images += 1
        ids.append(record.raw.id)
        truth = torch.from_numpy(np.array(record.mask))  # a writable copy for torch
        matrices.append(confusion(torch.from_numpy(labels), truth).numpy())
    if not matrices:
        raise HeritagesegError(f"{raw}: no record of the split found")
    return Scored(ids, np.stack(matrices), seconds, images)


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
) -> Evaluation:  # fmt: skip
    """Score `arch` at the resolutions params ask for, and predict the picture samples."""
    cfg = params.evaluate
    trained = load_trained(model_dir)
    native, tile = cfg.resolution in ("native", "both"), trained.model.image_size
    if native and not 0 <= cfg.tile_overlap < tile:  # the window's side is the model's
        raise ConfigError(
            f"evaluate.tile_overlap={cfg.tile_overlap}: need 0 <= overlap < {tile} (tile)"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = trained.network.to(device)
    predict = evaluation_predictor(
        model, cfg.backend, device, params.train.precision, trained, cache
    )
    params_m = count_parameters(model)
    scored: dict[str, Scored] = {}
    if cfg.resolution in ("prepared", "both"):
        scored["prepared"] = score_prepared(predict, cache, split, trained, cfg.batch_size)
    if native:
        table = read_split(splits / SPLIT_TABLE)
        ids = set(table.loc[table["split"] == split, "id"])
        scored["native"] = score_native(
            predict, raw, ids, trained, cfg.batch_size, cfg.tile_overlap
        )
    names = dict(zip(scored, (METRICS_FILE, NATIVE_METRICS_FILE), strict=False))
    documents = {
        names[key]: metrics_document(arch, split, result, params_m, cfg.bootstrap, cfg.seed, device)
        for key, result in scored.items()
    }
    samples = predict_samples(predict, cache, split, trained, SAMPLES)
    return Evaluation(arch, split, scored, documents, samples)


def predict_samples(
    predict: Predict, cache: Path, split: str, trained: Trained, count: int
) -> list[pictures.Sample]:
    """`count` cached samples chosen to show as many classes as possible, with predictions."""
    transform = eval_transform(trained.model.image_size, trained.mean, trained.std)
    dataset = CacheDataset(cache, split, transform)
    masks = CacheDataset(cache, split)
    supports = np.stack(
        [
            np.bincount(masks[i]["mask"].ravel(), minlength=256)[:NUM_CLASSES]
            for i in range(len(masks))
        ]
    )
    mean = torch.tensor(trained.mean).view(3, 1, 1)
    std = torch.tensor(trained.std).view(3, 1, 1)
    samples = []
    with torch.no_grad():
        for index in pictures.select_samples(supports, count):
            item = dataset[index]
            logits = predict(item["image"][None].numpy())
            image = ((item["image"] * std + mean) * 255).clamp(0, 255).byte()
            samples.append(
                pictures.Sample(
                    name=str(dataset.index["id"].iloc[index]),
                    image=image.permute(1, 2, 0).numpy(),
                    truth=item["mask"].numpy().astype(np.uint8),
                    prediction=logits.argmax(axis=1)[0].astype(np.uint8),
                )
            )
    return samples


def write_evaluation(evaluation: Evaluation, folder: Path) -> None:
    """metrics.json (+ native), per-image matrices, the per-class table and the pictures,
    swapped in together so a failed run leaves the previous results whole."""
    with atomic_dir(folder) as staging:
        for name, document in evaluation.documents.items():
            write_json(staging / name, document)
        np.savez_compressed(
            staging / PER_IMAGE,
            **{f"{key}_ids": np.array(s.ids) for key, s in evaluation.scored.items()},
            **{key: s.per_image for key, s in evaluation.scored.items()},
        )
        (staging / PER_CLASS).write_text(per_class_table(evaluation.documents))
        for name, png in evaluation_pictures(evaluation).items():
            (staging / PLOTS).mkdir(exist_ok=True)
            (staging / PLOTS / name).write_bytes(png)


def per_class_table(documents: dict[str, dict]) -> str:
    """CSV, one row per class: the prepared-size scores, and native IoU when evaluated."""
    columns = ["class", "iou", "dice", "precision", "recall", "f1", "support", "present"]
    first = next(iter(documents.values()))
    native = documents.get(NATIVE_METRICS_FILE) if METRICS_FILE in documents else None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + (["native_iou", "native_support"] if native else []))
    for name in CLASS_NAMES:
        entry = first["per_class"][name]
        row = [name, *(entry[key] for key in columns[1:])]
        if native:
            row += [native["per_class"][name]["iou"], native["per_class"][name]["support"]]
        writer.writerow(row)
    return buffer.getvalue()


def evaluation_pictures(evaluation: Evaluation) -> dict[str, bytes]:
    """PNG files of plots/: samples, confusion heatmaps, per-class IoU, class distribution."""
    title = f"{evaluation.arch} on {evaluation.split}"
    out = {}
    if evaluation.samples:
        out["samples.png"] = pictures.sample_panels(evaluation.samples, title)
    series = {}
    for key, scored in evaluation.scored.items():
        matrix = scored.per_image.sum(axis=0)
        suffix = "" if key == "prepared" or len(evaluation.scored) == 1 else f"_{key}"
        out[f"confusion{suffix}.png"] = pictures.confusion_heatmap(
            matrix, f"{title}: confusion ({key} resolution, row-normalised)"
        )
        per_class = scores(matrix)["per_class"]
        series[key] = {n: (e["iou"] if e["present"] else None) for n, e in per_class.items()}
        if key == "prepared" or len(evaluation.scored) == 1:
            out["class_distribution.png"] = pictures.class_distribution(
                matrix, f"{title}: class distribution ({key} resolution)"
            )
    out["per_class_iou.png"] = pictures.per_class_bars(series, f"{title}: IoU per class", "IoU (%)")
    return out


def evaluation_predictor(
    model: torch.nn.Module, backend: str | None, device: torch.device, precision: str,
    trained: Trained, cache: Path,
) -> Predict:  # fmt: skip
    """`evaluate.backend` null: PyTorch at `train.precision`, as results always were; else a
    backend of heritageseg.infer.backends (int8 calibrated on `cache`'s train images)."""
    if backend is None:
        return model_predictor(model, resolve_precision(precision, device).autocast)
    from heritageseg.infer.backends import CALIBRATED, build_predictor, calibration_images

    size = trained.model.image_size
    calibration = None
    if backend in CALIBRATED:
        calibration = calibration_images(cache, size, trained.mean, trained.std)
    return build_predictor(model, backend, device, size, calibration)
