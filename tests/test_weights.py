"""Class weights: each formula by hand, the max/min cap, absent classes, pixel counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heritageseg.core.classes import BACKGROUND_ID, CLASS_NAMES, NUM_CLASSES
from heritageseg.core.config import WeightsConfig
from heritageseg.core.errors import ConfigError, DataError
from heritageseg.data.weights import class_weights, pixel_counts, weights_document

# Classes 0..3 hold 900, 90, 9, 1 of 1000 pixels; the 12 others are absent.
COUNTS = np.array([900, 90, 9, 1] + [0] * 12, dtype=np.int64)
FREQ = (0.9, 0.09, 0.009, 0.001)
NO_CAP = 1e9


def _expected(present: list[float]) -> np.ndarray:
    """Absent classes take the largest present weight, then the mean is scaled to 1."""
    raw = np.array(present + [max(present)] * 12)
    return raw / raw.mean()


@pytest.mark.parametrize(
    ("method", "present"),
    [
        ("inverse", [1 / 0.9, 1 / 0.09, 1 / 0.009, 1 / 0.001]),
        ("inverse_sqrt", [1 / math.sqrt(f) for f in FREQ]),
        ("inverse_sqrt_log_scaled", [math.log(1 + 1 / math.sqrt(f)) for f in FREQ]),
        ("none", [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_formula_by_hand(method: str, present: list[float]) -> None:
    np.testing.assert_allclose(class_weights(COUNTS, method, NO_CAP), _expected(present))


def test_hand_values() -> None:
    """The same in numbers: 1/sqrt(0.001) = 31.6228 and log(1 + 31.6228) = 3.4850."""
    w = class_weights(COUNTS, "inverse_sqrt_log_scaled", NO_CAP)
    np.testing.assert_allclose(
        w[:4] / w[3], np.array([0.71983, 1.46634, 2.44590, 3.48501]) / 3.48501, rtol=1e-4
    )
    w = class_weights(COUNTS, "inverse_sqrt", NO_CAP)
    np.testing.assert_allclose(w[3] / w[:4], [30.0, 9.48683, 3.0, 1.0], rtol=1e-5)


def test_cap_binds_exactly() -> None:
    w = class_weights(COUNTS, "inverse", 36.0)  # uncapped ratio 900
    assert abs(w.max() / w.min() - 36.0) < 1e-9
    # 1/0.9 and 1/0.09 are raised to 1000/36; 1/0.009 = 111.1 is above the floor and kept.
    np.testing.assert_allclose(w, _expected([1000 / 36, 1000 / 36, 1000 / 9, 1000.0]))


def test_cap_unchanged_when_not_binding() -> None:
    w = class_weights(COUNTS, "inverse_sqrt", 36.0)  # uncapped ratio 30
    assert w.max() / w.min() == pytest.approx(30.0, rel=1e-12)
    np.testing.assert_allclose(w, class_weights(COUNTS, "inverse_sqrt", NO_CAP))


@pytest.mark.parametrize("method", ["inverse_sqrt_log_scaled", "inverse", "inverse_sqrt", "none"])
def test_mean_is_one_and_absent_get_max(method: str) -> None:
    counts = np.random.default_rng(0).integers(0, 10**6, NUM_CLASSES)
    counts[[5, 14]] = 0
    w = class_weights(counts, method, 36.0)
    assert w.shape == (NUM_CLASSES,) and w.dtype == np.float64
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    present = np.delete(w, [5, 14])
    assert w[5] == w[14] == present.max()


def test_pixel_counts_ignores_background() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([*range(NUM_CLASSES), BACKGROUND_ID], dtype=np.uint8)
    masks = [rng.choice(labels, size=(37, 53)).astype(np.uint8) for _ in range(3)]
    masks.append(rng.choice(labels, size=(2, 10, 11)).astype(np.uint8))  # a stack of masks
    expected = [sum(int((m == c).sum()) for m in masks) for c in range(NUM_CLASSES)]
    counts = pixel_counts(iter(masks))
    assert counts.dtype == np.int64 and counts.tolist() == expected
    assert counts.sum() == sum(int((m != BACKGROUND_ID).sum()) for m in masks)
    assert pixel_counts([m.astype(np.int64) for m in masks]).tolist() == expected


def test_pixel_counts_rejects_stray_labels() -> None:
    with pytest.raises(DataError, match="16"):
        pixel_counts([np.array([[0, 16]], dtype=np.uint8)])
    with pytest.raises(DataError):
        pixel_counts([np.array([[0, -1]], dtype=np.int64)])
    with pytest.raises(DataError):
        pixel_counts([np.zeros((2, 2), dtype=np.float32)])


def test_errors() -> None:
    with pytest.raises(ConfigError, match="inverse_sqrt_log_scaled"):
        class_weights(COUNTS, "median_frequency", 36.0)
    with pytest.raises(ConfigError):
        class_weights(COUNTS, "inverse", 0.5)
    with pytest.raises(DataError, match="all zero"):
        class_weights(np.zeros(NUM_CLASSES, dtype=np.int64), "inverse", 36.0)
    with pytest.raises(DataError, match="shape"):
        class_weights(np.ones(15), "inverse", 36.0)
    with pytest.raises(DataError):
        class_weights(-COUNTS, "inverse", 36.0)


def test_document() -> None:
    doc = weights_document(COUNTS, WeightsConfig(method="inverse", max_ratio=36.0))
    assert doc["method"] == "inverse" and doc["max_ratio"] == 36.0
    assert doc["classes"] == list(CLASS_NAMES)
    assert doc["pixel_counts"] == COUNTS.tolist()
    assert all(type(n) is int for n in doc["pixel_counts"])
    assert len(doc["weights"]) == NUM_CLASSES and all(type(w) is float for w in doc["weights"])
    assert max(doc["weights"]) / min(doc["weights"]) == pytest.approx(36.0)
