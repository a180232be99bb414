"""`heritageseg bench infer`: every backend against eager fp32 on the test split, in one run.

Speed is measured in interleaved rounds (each round runs every backend once over the same
images), so a shared machine's load falls on all backends alike; ratios to eager are taken
within a round and reported as median and range. Accuracy: pixel agreement with eager's
labels and the mIoU difference on the cached test images. At a size other than the cache's,
the cached images are resized by the evaluation transform (bilinear image, nearest mask).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from heritageseg.core.config import ModelConfig, Params
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_write_text, write_json
from heritageseg.core.paths import CONFIG
from heritageseg.core.trained import read_model_config
from heritageseg.data.cache import CacheDataset
from heritageseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from heritageseg.infer.backends import (
    CALIBRATED,
    build_predictor,
    calibration_images,
    check_backend,
)
from heritageseg.nn.checkpoint import load_trained
from heritageseg.nn.metrics import confusion, scores
from heritageseg.nn.models import build_model

# The reference's encoders at its 384 px; at their own image_size, the params' small ones.
REFERENCE_ENCODERS = {
    "convnext": "tu-convnext_tiny",
    "segformer": "mit_b3",
    "maxvit": "tu-maxvit_tiny_tf_384",
}


@dataclass(frozen=True)
class BenchModel:
    model: torch.nn.Module
    encoder: str
    trained: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


def bench_model(params: Params, arch: str, size: int, models: Path) -> BenchModel:
    """The trained models/ARCH when its encoder fits `size`, else a seeded untrained one.

    At the default size the params' encoder is used, at another size the reference's.
    """
    cfg = params.train.model(arch)
    encoder = cfg.encoder if size == cfg.image_size else REFERENCE_ENCODERS[arch]
    config_file = models / arch / CONFIG
    if config_file.is_file():  # load the weights only when they are the ones benchmarked
        saved = read_model_config(config_file)
        if saved.encoder == encoder and _size_fits(saved, size):
            trained = load_trained(models / arch)
            return BenchModel(trained.network, encoder, True, trained.mean, trained.std)
    torch.manual_seed(params.train.seed)
    model_cfg = ModelConfig(
        encoder=encoder, decoder=cfg.decoder, encoder_weights=None, head=cfg.head,
        decoder_channels=cfg.decoder_channels if encoder == cfg.encoder else None,
        image_size=size, batch_size=cfg.batch_size, lr=None,
    )  # fmt: skip
    return BenchModel(build_model(model_cfg).eval(), encoder, False, IMAGENET_MEAN, IMAGENET_STD)


def _size_fits(model: ModelConfig, size: int) -> bool:
    return "maxvit" not in model.encoder or model.image_size == size


def cached_test_images(
    cache: Path, size: int, mean: Sequence[float], std: Sequence[float], limit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `limit` normalised test images (N, 3, size, size) and their masks (N, size, size)."""
    dataset = CacheDataset(cache, "test", eval_transform(size, mean, std))
    if len(dataset) == 0:
        raise HeritagesegError(f"{cache}: the test split is empty; run `heritageseg prepare`")
    items = [dataset[i] for i in range(min(limit, len(dataset)))]
    return torch.stack([i["image"] for i in items]), torch.stack([i["mask"] for i in items])


class _PeakRss:
    """Peak resident memory of this process while the block runs, sampled every 5 ms."""

    def __enter__(self) -> _PeakRss:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def _run(predict, images: np.ndarray, batch_size: int) -> tuple[torch.Tensor, float]:
    """Labels of all images and the seconds it took."""
    start = time.perf_counter()
    parts = [
        predict(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)
    ]
    return torch.from_numpy(np.concatenate(parts)).to(torch.uint8), time.perf_counter() - start


def _miou(labels: torch.Tensor, masks: torch.Tensor) -> float:
    return float(scores(confusion(labels.long(), masks).numpy())["miou"])


def bench_arch_size(
    params: Params, arch: str, size: int, backends: list[str], *, cache: Path, models: Path,
    images: int, rounds: int, batch_size: int,
) -> list[dict]:  # fmt: skip
    """One row per backend for `arch` at `size`; eager first, ratios within each round."""
    chosen = bench_model(params, arch, size, models)
    x, masks = cached_test_images(cache, size, chosen.mean, chosen.std, images)
    x = x.numpy()  # a Predict's batch is a host array
    calibration = None  # train images, never the test images being scored
    if any(b in CALIBRATED for b in backends):
        calibration = calibration_images(cache, size, chosen.mean, chosen.std)
    names = ["eager", *[b for b in backends if b != "eager"]]
    predictors, build_s, memory = {}, {}, {}
    for name in names:
        start = time.perf_counter()
        with _PeakRss() as rss:
            predictors[name] = build_predictor(
                chosen.model, name, "cpu", size, calibration=calibration
            )
            predictors[name](x[:batch_size])  # warm-up (and compilation)
        build_s[name], memory[name] = time.perf_counter() - start, rss.mb
    labels, seconds = {}, {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            with _PeakRss() as rss:
                labels[name], took = _run(predictors[name], x, batch_size)
            seconds[name].append(took)
            memory[name] = max(memory[name], rss.mb)
    reference = _miou(labels["eager"], masks)
    rows = []
    for name in names:
        miou = _miou(labels[name], masks)
        ratios = [e / s for e, s in zip(seconds["eager"], seconds[name], strict=True)]
        rate = len(x) / statistics.median(seconds[name])
        rows.append({
            "arch": arch, "encoder": chosen.encoder, "trained": chosen.trained, "size": size,
            "backend": name, "images": len(x), "img_s": rate, "ms_per_image": 1000.0 / rate,
            "speedup": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_max": max(ratios), "peak_rss_mb": memory[name], "setup_s": build_s[name],
            "agreement": float((labels[name] == labels["eager"]).float().mean()),
            "miou": miou, "miou_diff_points": 100.0 * (miou - reference),
        })  # fmt: skip
    return rows


def bench_infer(
    params: Params, archs: list[str], sizes: list[int], backends: list[str], *, cache: Path,
    models: Path, images: int = 8, rounds: int = 3, batch_size: int = 4,
) -> dict:  # fmt: skip
    """All rows, and per size and arch the best backend within 0.5 mIoU points of eager."""
    backends = [check_backend(b) for b in backends]
    rows = []
    for size in sizes:
        for arch in archs:
            rows += bench_arch_size(
                params, arch, size, backends, cache=cache, models=models, images=images,
                rounds=rounds, batch_size=batch_size,
            )  # fmt: skip
    return {"rows": rows, "best": best_backends(rows), "threads": torch.get_num_threads()}


def best_backends(rows: list[dict], max_miou_drop: float = 0.5) -> dict[str, dict]:
    """Per `arch@size`, the fastest backend whose mIoU is within `max_miou_drop` points."""
    best: dict[str, dict] = {}
    for row in rows:
        if abs(row["miou_diff_points"]) > max_miou_drop:
            continue
        key = f"{row['arch']}@{row['size']}"
        if key not in best or row["speedup"] > best[key]["speedup"]:
            best[key] = row
    return best


def loggable(figures: dict) -> dict[str, float]:
    """Flat {metric name: value} for MLflow: `infer/ARCH/SIZE/BACKEND/FIGURE`."""
    keys = ("img_s", "ms_per_image", "speedup", "peak_rss_mb", "agreement", "miou_diff_points")
    return {
        f"infer/{r['arch']}/{r['size']}/{r['backend']}/{k}": float(r[k])
        for r in figures["rows"]
        for k in keys
    }


def inference_markdown(figures: dict) -> str:
    """reports/inference.md: the table, the best backend per model, and how it was measured."""
    lines = [
        "# Inference backends against eager fp32",
        "",
        f"CPU, {figures['threads']} threads; speed-up = eager time / backend time within one "
        "interleaved round (median, [min, max] over rounds); agreement = share of test pixels "
        "with eager's label; ΔmIoU in points against eager's mIoU on the same images.",
        "",
        "| arch | encoder | size | trained | backend | img/s | ms/img | speed-up | peak RSS MB "
        "| agreement | ΔmIoU (pt) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in figures["rows"]:
        lines.append(
            f"| {r['arch']} | {r['encoder']} | {r['size']} | {'yes' if r['trained'] else 'no'} "
            f"| {r['backend']} | {r['img_s']:.2f} | {r['ms_per_image']:.0f} "
            f"| {r['speedup']:.2f}× [{r['speedup_min']:.2f}, {r['speedup_max']:.2f}] "
            f"| {r['peak_rss_mb']:.0f} | {r['agreement']:.4f} | {r['miou_diff_points']:+.2f} |"
        )
    if any(not r["trained"] for r in figures["rows"]):
        lines += [
            "",
            "trained = no: no models/ARCH with that encoder, so seeded untrained weights; their "
            "mIoU is near zero and ΔmIoU says little, and their near-tied logits make agreement "
            "a pessimistic bound. Speed does not depend on the weights.",
        ]
    lines += ["", "## Best backend within 0.5 mIoU points", ""]
    for key, r in figures["best"].items():
        lines.append(f"- {key}: **{r['backend']}**, {r['speedup']:.2f}× eager fp32")
    return "\n".join(lines) + "\n"


def write_report(figures: dict, path: Path) -> None:
    """The markdown table, and beside it the same figures as JSON (`loggable` reads them)."""
    atomic_write_text(path, inference_markdown(figures))
    write_json(path.with_suffix(".json"), figures)
