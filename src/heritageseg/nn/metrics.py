"""Segmentation metrics from a streaming confusion matrix.

The matrix is accumulated batch by batch (memory independent of the test set size, unlike
the reference, which kept every prediction), with Background (255) ignored. Every score is
derived from the summed matrix, so mIoU does not depend on the batch size. A class with no
pixel in ground truth or prediction is `present: false` and left out of every mean (the
reference counted it as 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from heritageseg.core.classes import BACKGROUND_ID, CLASS_NAMES, NUM_CLASSES


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over every rank, on the CPU (itself outside torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    total = values.to(device)
    torch.distributed.all_reduce(total)
    return total.cpu()


class ConfusionMatrix:
    """Pixel counts, rows = ground truth, columns = prediction, ignore label excluded."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = BACKGROUND_ID):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of label maps (any shape, same for both)."""
        self.matrix += confusion(prediction, target, self.num_classes, self.ignore_index).cpu()

    def all_reduce(self) -> None:
        """Sum the matrices of every rank (no-op outside torch.distributed)."""
        self.matrix = all_reduce_sum(self.matrix)

    def numpy(self) -> np.ndarray:
        return self.matrix.numpy().copy()


def confusion(
    prediction: torch.Tensor,
    target: torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = BACKGROUND_ID,
) -> torch.Tensor:
    """One batch's confusion matrix by a single bincount (no Python loop over pixels)."""
    target = target.reshape(-1).long()
    prediction = prediction.reshape(-1).long()
    keep = target != ignore_index
    codes = target[keep] * num_classes + prediction[keep]
    counts = torch.bincount(codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(
        numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0
    )


def scores(matrix: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """Every metric of metrics.json that comes from the confusion matrix.

    Means are over present classes; `miou_damage` leaves out Clean (id 0). Within a present
    class an undefined ratio (e.g. precision of a class never predicted) counts as 0.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    true_positive = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    present = (support + predicted) > 0
    iou = _ratio(true_positive, support + predicted - true_positive)
    dice = _ratio(2 * true_positive, support + predicted)
    precision = _ratio(true_positive, predicted)
    recall = _ratio(true_positive, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    damage = present.copy()
    damage[0] = False

    def mean(values: np.ndarray, mask: np.ndarray = present) -> float:
        return float(values[mask].mean()) if mask.any() else 0.0

    per_class = {
        name: {
            "iou": float(iou[i]),
            "dice": float(dice[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "present": bool(present[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "miou": mean(iou),
        "miou_damage": mean(iou, damage),
        "dice": mean(dice),
        "pixel_accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "precision": mean(precision),
        "recall": mean(recall),
        "f1": mean(f1),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def miou(matrix: np.ndarray) -> float:
    return scores(matrix)["miou"]


def majority_baseline_miou(matrix: np.ndarray) -> float:
    """mIoU of labelling every scored pixel with the most frequent true class (no model).

    The floor a trained model has to clear: on ARTeFACT-like data Clean dominates, so this
    alone scores IoU(Clean) / number of present classes.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    support = matrix.sum(axis=1)
    baseline = np.zeros_like(matrix)
    baseline[:, int(support.argmax())] = support
    return miou(baseline)


def bootstrap_miou(
    per_image: np.ndarray, iterations: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of mIoU over images resampled with replacement.

    `per_image` is (N, C, C): one confusion matrix per test image, so each resample is the
    sum of N matrices drawn with replacement — the unit of variation is the artwork, not the
    pixel (pixels of one image are far from independent).
    """
    per_image = np.asarray(per_image, dtype=np.int64)
    if len(per_image) == 0:
        return 0.0, 0.0
    values = _resampled_mious(per_image, _draws(len(per_image), iterations, seed))
    return _interval(values, level)


def paired_bootstrap(
    per_image_a: np.ndarray,
    per_image_b: np.ndarray,
    iterations: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """mIoU(a) - mIoU(b) on the same test images, with a paired bootstrap interval.

    Both models are scored on the *same* resampled images in every draw, so the interval
    reflects how consistently one beats the other image by image, not the spread of either
    alone. `p_value` is the two-sided share of draws on the other side of zero: a difference
    whose interval excludes 0 is more than resampling noise.
    """
    a = np.asarray(per_image_a, dtype=np.int64)
    b = np.asarray(per_image_b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same images: shapes {a.shape} vs {b.shape}")
    if len(a) == 0:
        raise ValueError("paired bootstrap needs at least one image")
    draws = _draws(len(a), iterations, seed)
    differences = _resampled_mious(a, draws) - _resampled_mious(b, draws)
    low, high = _interval(differences, level)
    tail = min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0)))
    return {
        "difference": miou(a.sum(axis=0)) - miou(b.sum(axis=0)),
        "ci95": [low, high],
        "p_value": min(1.0, 2 * tail),
        "images": len(a),
    }


def _draws(images: int, iterations: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, images, size=(iterations, images))


def _resampled_mious(per_image: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """mIoU of every resample, as `miou` scores it, without building a dict per draw: each
    resampled matrix is (how often each image was drawn) @ (the per-image matrices)."""
    iterations, images = draws.shape
    offsets = np.arange(iterations)[:, None] * images
    times_drawn = np.bincount((draws + offsets).ravel(), minlength=iterations * images)
    flat = per_image.reshape(images, -1)
    matrices = (times_drawn.reshape(iterations, images) @ flat).reshape(-1, *per_image.shape[1:])
    return mious(matrices)


def mious(matrices: np.ndarray) -> np.ndarray:
    """`miou` of each of a stack of (C, C) confusion matrices, vectorised."""
    true_positive = np.diagonal(matrices, axis1=1, axis2=2).astype(float)
    support = matrices.sum(axis=2).astype(float)
    predicted = matrices.sum(axis=1).astype(float)
    iou = _ratio(true_positive, support + predicted - true_positive)
    present = (support + predicted) > 0
    return _ratio((iou * present).sum(axis=1), present.sum(axis=1))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def spread(values: np.ndarray) -> tuple[float, float]:
    """(mean, sample std) over the first axis, NaNs (e.g. a class absent from a run) left
    out; the std of a single value is 0, not NaN."""
    values = np.asarray(values, dtype=float)
    kept = values[~np.isnan(values)]
    if len(kept) == 0:
        return float("nan"), float("nan")
    return float(kept.mean()), float(kept.std(ddof=1)) if len(kept) > 1 else 0.0


def study_bootstrap(
    strata_a: Sequence[np.ndarray],
    strata_b: Sequence[np.ndarray],
    iterations: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean mIoU(a) - mean mIoU(b) over training runs and test images, with a two-stage
    (seeds, then images) bootstrap interval; the keys of `paired_bootstrap`, plus `runs`.

    Each stratum is one held-out fold (or the whole test split): an (S, N, C, C) array of S
    training runs' per-image confusion matrices on the fold's N test images, in the same
    order for a and b. Every run is scored on every image (seeds and images are crossed),
    so resampling only images — `paired_bootstrap` — leaves the run-to-run spread out, and
    resampling only runs leaves out which images were drawn. Each draw, per stratum: N images
    with replacement, the same for a and b (paired), and S runs with replacement for each
    architecture on its own (run i of a has nothing to do with run i of b). The statistic is
    the mean over strata of the mean over the drawn runs; folds are the protocol, not a
    sample, so they are never resampled. With 2-3 seeds the interval is coarse (a draw of 2
    runs repeats one half the time): it is wide when the seeds disagree, as it should be.
    """
    if len(strata_a) != len(strata_b) or not strata_a:
        raise ValueError("study bootstrap needs the same folds, at least one, for a and b")
    rng = np.random.default_rng(seed)
    differences, point, images, runs = np.zeros(iterations), 0.0, 0, None
    for a, b in zip(strata_a, strata_b, strict=True):
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.ndim != 4 or a.shape[1:] != b.shape[1:] or a.shape[1] == 0:
            raise ValueError(f"study bootstrap needs the same images: {a.shape} vs {b.shape}")
        draws = rng.integers(0, a.shape[1], size=(iterations, a.shape[1]))
        differences += _run_means(a, draws, rng) - _run_means(b, draws, rng)
        point += mious(a.sum(axis=1)).mean() - mious(b.sum(axis=1)).mean()
        images, runs = images + a.shape[1], (len(a), len(b))
    differences /= len(strata_a)
    low, high = _interval(differences, level)
    tail = min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0)))
    return {
        "difference": float(point / len(strata_a)),
        "ci95": [low, high],
        "p_value": min(1.0, 2 * tail),
        "images": images,
        "runs": list(runs),
    }


def _run_means(runs: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per draw: the mean mIoU, on the drawn images, of len(runs) runs drawn with replacement."""
    per_run = np.stack([_resampled_mious(run, draws) for run in runs])  # (S, iterations)
    iterations = draws.shape[0]
    picks = rng.integers(0, len(runs), size=(iterations, len(runs)))
    return per_run[picks, np.arange(iterations)[:, None]].mean(axis=1)
