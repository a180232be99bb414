"""Pictures of a trained model's results, in the published ARTeFACT colours.

Figures are built with matplotlib's object API (no pyplot, no global state, no display) and
returned as PNG bytes, so the stage mains decide where the files go and write them atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from heritageseg.core.classes import (
    BACKGROUND_COLOUR,
    BACKGROUND_ID,
    CLASS_NAMES,
    CLASSES,
    colourise,
)
from heritageseg.core.config import ARCHS

ERROR_COLOUR = (230, 25, 75)
ARCH_COLOURS = dict(zip(ARCHS, ("#1f77b4", "#ff7f0e", "#2ca02c"), strict=True))


@dataclass(frozen=True)
class Sample:
    """One test sample as the model saw it: image (H, W, 3) uint8, truth and prediction (H, W)."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray


def _figure(size: tuple[float, float], rows: int = 1, cols: int = 1, squeeze: bool = True):
    figure = Figure(figsize=size)
    return figure, figure.subplots(rows, cols, squeeze=squeeze)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _wrong(sample: Sample) -> np.ndarray:
    return (sample.prediction != sample.truth) & (sample.truth != BACKGROUND_ID)


def error_map(sample: Sample) -> np.ndarray:
    """The image dimmed to grey, wrong pixels in red, unscored (Background) ones white."""
    grey = sample.image.mean(axis=2, keepdims=True) * 0.45 + 60
    out = np.repeat(grey, 3, axis=2).astype(np.uint8)
    out[_wrong(sample)] = ERROR_COLOUR
    out[sample.truth == BACKGROUND_ID] = 255
    return out


def _legend_handles(samples: Sequence[Sample]) -> list[Patch]:
    seen = set()
    for sample in samples:
        seen |= set(np.unique(sample.truth)) | set(np.unique(sample.prediction))
    handles = [Patch(color=np.array(c.rgb) / 255, label=c.name) for c in CLASSES if c.id in seen]
    if BACKGROUND_ID in seen:
        handles.append(Patch(color=BACKGROUND_COLOUR, label="Background (not scored)"))
    handles.append(Patch(color=np.array(ERROR_COLOUR) / 255, label="error map: wrong"))
    handles.append(Patch(facecolor="white", edgecolor="black", label="error map: not scored"))
    return handles


def sample_panels(samples: Sequence[Sample], title: str) -> bytes:
    """One row per sample: input | ground truth | prediction | error map, with a legend."""
    if not samples:
        raise ValueError("no sample to draw")
    columns = ("input", "ground truth", "prediction", "error map")
    height = 2.7 * len(samples) + 1.2
    figure, axes = _figure((11, height), len(samples), 4, squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        panels = (sample.image, colourise(sample.truth), colourise(sample.prediction))
        for axis, panel in zip(row, (*panels, error_map(sample)), strict=True):
            axis.imshow(panel, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        scored = max(int((sample.truth != BACKGROUND_ID).sum()), 1)
        row[0].set_ylabel(sample.name, fontsize=8)
        row[3].set_xlabel(f"{100 * _wrong(sample).sum() / scored:.1f}% of scored pixels wrong",
                          fontsize=8)  # fmt: skip
    for axis, name in zip(axes[0], columns, strict=True):
        axis.set_title(name)
    figure.suptitle(title)
    figure.legend(handles=_legend_handles(samples), loc="lower center", ncol=6, fontsize=8,
                  frameon=False)  # fmt: skip
    figure.tight_layout(rect=(0, 0.9 / height, 1, 1 - 0.3 / height))
    return _png(figure)


def confusion_heatmap(matrix: np.ndarray, title: str) -> bytes:
    """Row-normalised (recall per true class); rows with no pixel are left blank."""
    matrix = np.asarray(matrix, dtype=float)
    support = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, support, out=np.full_like(matrix, np.nan), where=support > 0)
    figure, axis = _figure((9, 8))
    image = axis.imshow(shares, cmap="viridis", vmin=0, vmax=1)
    ticks = np.arange(len(CLASS_NAMES))
    axis.set_xticks(ticks, CLASS_NAMES, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(ticks, CLASS_NAMES, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("ground truth")
    for (row, col), value in np.ndenumerate(shares):
        if value >= 0.01:
            colour = "black" if value > 0.6 else "white"
            axis.text(col, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=6,
                      color=colour)  # fmt: skip
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class's pixels")
    axis.set_title(title)
    return _png(figure)


def per_class_bars(series: dict[str, dict[str, float | None]], title: str, label: str) -> bytes:
    """Grouped horizontal bars: one group per class, one bar per series (arch or resolution).

    `series` maps a series name to {class name: value or None (absent class)}.
    """
    figure, axis = _figure((9, 0.45 * len(CLASS_NAMES) * max(1, len(series) / 2)))
    height = 0.8 / max(len(series), 1)
    positions = np.arange(len(CLASS_NAMES))
    for k, (name, values) in enumerate(series.items()):
        bars = [values.get(c) for c in CLASS_NAMES]
        axis.barh(
            positions + k * height, [0 if v is None else 100 * v for v in bars], height,
            label=name, color=ARCH_COLOURS.get(name),
        )  # fmt: skip
        for position, value in zip(positions + k * height, bars, strict=True):
            if value is None:
                axis.text(1, position, "absent", va="center", fontsize=6, color="grey")
    axis.set_yticks(positions + height * (len(series) - 1) / 2, CLASS_NAMES, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel(label)
    axis.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        axis.legend(fontsize=8, loc="lower right")
    axis.set_title(title)
    figure.tight_layout()
    return _png(figure)


def fold_bars(series: dict[str, dict[str, tuple[float, float]]], title: str) -> bytes:
    """Grouped vertical bars: one group per held-out fold, one bar per architecture, with the
    spread over seeds as error bars. `series`: arch -> {fold: (mean, std)}."""
    folds = sorted({fold for values in series.values() for fold in values})
    figure, axis = _figure((max(6.0, 1.2 * len(folds) * max(1, len(series)) / 2), 4.5))
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(folds))
    for k, (name, values) in enumerate(series.items()):
        means = [100 * values.get(f, (0.0, 0.0))[0] for f in folds]
        stds = [100 * values.get(f, (0.0, 0.0))[1] for f in folds]
        axis.bar(positions + k * width, means, width, yerr=stds, capsize=3, label=name,
                 color=ARCH_COLOURS.get(name))  # fmt: skip
    axis.set_xticks(positions + width * (len(series) - 1) / 2, folds, rotation=30, ha="right")
    axis.set_ylabel("test mIoU (%), mean ± std over seeds")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    return _png(figure)


def class_distribution(matrix: np.ndarray, title: str) -> bytes:
    """Share of pixels per class in ground truth and in the prediction, on a log scale."""
    matrix = np.asarray(matrix, dtype=float)
    total = max(matrix.sum(), 1.0)
    truth, predicted = matrix.sum(axis=1) / total, matrix.sum(axis=0) / total
    figure, axis = _figure((9, 6))
    positions = np.arange(len(CLASS_NAMES))
    colours = [np.array(c.rgb) / 255 for c in CLASSES]
    axis.barh(positions - 0.2, 100 * truth, 0.4, color=colours, edgecolor="black",
              label="ground truth")  # fmt: skip
    axis.barh(positions + 0.2, 100 * predicted, 0.4, color=colours, hatch="//",
              edgecolor="black", alpha=0.6, label="prediction")  # fmt: skip
    axis.set_yticks(positions, CLASS_NAMES, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlim(1e-4, 100)
    axis.set_xlabel("% of labelled pixels (log scale)")
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(title)
    figure.tight_layout()
    return _png(figure)


def training_curves(histories: dict[str, list[dict]], title: str) -> bytes:
    """Train/val loss and val mIoU per epoch, one colour per architecture."""
    figure, (loss_axis, miou_axis) = _figure((11, 4), 1, 2)
    for arch, rows in histories.items():
        epochs = [int(r["epoch"]) for r in rows]
        colour = ARCH_COLOURS.get(arch)
        loss_axis.plot(epochs, [float(r["train_loss"]) for r in rows], "--", color=colour,
                       label=f"{arch} train")  # fmt: skip
        loss_axis.plot(epochs, [float(r["val_loss"]) for r in rows], color=colour,
                       label=f"{arch} val")  # fmt: skip
        miou_axis.plot(epochs, [100 * float(r["val_miou"]) for r in rows], "o-", color=colour,
                       label=arch)  # fmt: skip
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    miou_axis.set_xlabel("epoch")
    miou_axis.set_ylabel("val mIoU (%)")
    for axis in (loss_axis, miou_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return _png(figure)


def select_samples(supports: np.ndarray, count: int = 9) -> list[int]:
    """Indices of `count` samples that together show as many classes as possible.

    `supports` is (N, C) ground-truth pixels per class. Greedy: each pick adds the most
    classes not yet shown, rare classes first (weighted by 1 / how many samples have them),
    ties to the sample with more damage pixels; then the rest by damage pixels.
    """
    supports = np.asarray(supports)
    has = supports > 0
    rarity = 1.0 / np.maximum(has.sum(axis=0), 1)
    damage = supports[:, 1:].sum(axis=1)
    shown = np.zeros(supports.shape[1], bool)
    chosen: list[int] = []
    for _ in range(min(count, len(supports))):
        gain = (has & ~shown) @ rarity
        gain[chosen] = -1
        order = np.lexsort((-damage, -gain))
        pick = int(order[0])
        chosen.append(pick)
        shown |= has[pick]
    return chosen
