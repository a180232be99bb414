"""Per-class loss weights from train-split pixel counts.

With ``n_c`` the train pixels of class ``c`` and ``f_c = n_c / sum_k n_k`` its frequency
(Background 255 excluded from both), the raw weight is

- ``inverse_sqrt_log_scaled`` (the reference's): ``w_c = log(1 + 1 / sqrt(f_c))``. The
  reference computed ``np.log1p(np.sqrt(1 / (f + 1e-7)))`` and rescaled; the epsilon only
  guarded absent classes, which are handled explicitly below;
- ``inverse``: ``w_c = 1 / f_c``;
- ``inverse_sqrt``: ``w_c = 1 / sqrt(f_c)``;
- ``none``: ``w_c = 1``.

Then: (1) a class absent from train gets the largest weight among present classes;
(2) every weight below ``max(w) / max_ratio`` is raised to that floor, so ``max / min``
equals ``max_ratio`` exactly when the cap binds and is unchanged otherwise (the reference
capped at 36x; an uncapped 734x collapsed training); (3) the weights are scaled so that
their mean over the 16 classes is 1, which keeps the loss on the scale of an unweighted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from heritageseg.core.classes import BACKGROUND_ID, CLASS_NAMES, NUM_CLASSES
from heritageseg.core.config import WeightsConfig
from heritageseg.core.errors import ConfigError, DataError
from heritageseg.core.readers import read_json, require
from heritageseg.core.rebuild import rebuild_hint

_CHUNK = 1 << 24  # pixels per bincount call: bounds its int64 copy to 128 MB on huge masks

_RAW: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "inverse_sqrt_log_scaled": lambda f: np.log1p(1.0 / np.sqrt(f)),
    "inverse": lambda f: 1.0 / f,
    "inverse_sqrt": lambda f: 1.0 / np.sqrt(f),
    "none": np.ones_like,
}
METHODS: tuple[str, ...] = tuple(_RAW)


def pixel_counts(masks: Iterable[np.ndarray]) -> np.ndarray:
    """Pixels per class (16,) int64 over label masks of any shape (a mask or a stack).

    Background (255) is not counted; any other label outside 0..15 is a DataError, since it
    means a corrupt mask rather than a class to ignore.
    """
    total = np.zeros(256, dtype=np.int64)
    for mask in masks:
        flat = _labels(np.asarray(mask)).ravel()
        for start in range(0, flat.size, _CHUNK):
            total += np.bincount(flat[start : start + _CHUNK], minlength=256)
    stray = np.flatnonzero(total[NUM_CLASSES:BACKGROUND_ID]) + NUM_CLASSES
    if stray.size:
        raise DataError(
            f"masks hold labels {stray.tolist()}: valid are 0..{NUM_CLASSES - 1} and "
            f"{BACKGROUND_ID} (Background)"
        )
    return total[:NUM_CLASSES].copy()


def _labels(mask: np.ndarray) -> np.ndarray:
    """The mask as uint8, refusing what cannot be a label mask."""
    if mask.dtype == np.uint8:
        return mask
    if not np.issubdtype(mask.dtype, np.integer):
        raise DataError(f"a mask has dtype {mask.dtype}: expected integer labels")
    if mask.size and (mask.min() < 0 or mask.max() > BACKGROUND_ID):
        raise DataError(f"a mask holds labels {int(mask.min())}..{int(mask.max())}: outside 0..255")
    return mask.astype(np.uint8)


def class_weights(counts: np.ndarray, method: str, max_ratio: float) -> np.ndarray:
    """The 16 class weights (float64, mean 1) for ``method``; see the module docstring."""
    if method not in _RAW:
        raise ConfigError(f"weights.method={method!r}: choose one of {', '.join(METHODS)}")
    if not max_ratio >= 1.0:
        raise ConfigError(f"weights.max_ratio={max_ratio}: need >= 1")
    counts = _checked_counts(counts)
    present = counts > 0
    weights = np.empty(NUM_CLASSES, dtype=np.float64)
    weights[present] = _RAW[method](counts[present] / counts.sum())
    # An absent class contributes nothing to the loss whatever its weight, so it must not
    # set the floor of the cap (its 1/f would be infinite); the largest present weight keeps
    # it harmless if it shows up in a later split and keeps the ratio defined by real data.
    weights[~present] = weights[present].max()
    weights = np.maximum(weights, weights.max() / max_ratio)
    return weights / weights.mean()


def _checked_counts(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.shape != (NUM_CLASSES,):
        raise DataError(f"pixel counts have shape {counts.shape}: expected ({NUM_CLASSES},)")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise DataError(f"pixel counts must be finite and non-negative, got {counts.tolist()}")
    if counts.sum() == 0:
        raise DataError("pixel counts are all zero: the train split has no labelled pixels")
    return counts.astype(np.float64)


def weights_document(counts: np.ndarray, cfg: WeightsConfig) -> dict:
    """The JSON document training reads: method, class names, weights, cap and counts."""
    weights = class_weights(counts, cfg.method, cfg.max_ratio)
    return {
        "method": cfg.method,
        "classes": list(CLASS_NAMES),
        "weights": [float(w) for w in weights],
        "max_ratio": float(cfg.max_ratio),
        "pixel_counts": [int(n) for n in np.asarray(counts)],
    }


def read_class_weights(path: Path) -> list[float]:
    """The weights of class_weights.json, one finite positive number per ARTeFACT class."""
    hint = rebuild_hint("class_weights")
    document = read_json(path, hint, ("classes", "weights"))
    require(document["classes"] == list(CLASS_NAMES), path,
            f"classes do not match the {NUM_CLASSES} ARTeFACT classes", hint)  # fmt: skip
    weights = document["weights"]
    numbers = (
        isinstance(weights, list)
        and len(weights) == NUM_CLASSES
        and all(
            isinstance(w, int | float) and not isinstance(w, bool) and np.isfinite(w) and w > 0
            for w in weights
        )
    )
    require(numbers, path, f"weights must be {NUM_CLASSES} finite positive numbers", hint)
    return [float(w) for w in weights]
