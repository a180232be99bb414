"""Metrics from the streaming confusion matrix, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heritageseg.metrics import ConfusionMatrix, bootstrap_miou, confusion, scores


def _names(n):
    return tuple(f"c{i}" for i in range(n))


def test_hand_computed_case_with_absent_ignored_and_spurious_classes():
    # classes: 0 and 1 in truth; 2 predicted but absent in truth; 3 absent everywhere
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    prediction = torch.tensor([[0, 0, 1, 1], [1, 2, 3, 0]])  # last two are ignored pixels
    matrix = confusion(prediction, target, num_classes=4).numpy()
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    result = scores(matrix, _names(4))
    iou = {"c0": 2 / 3, "c1": 2 / 4, "c2": 0.0}
    for name, value in iou.items():
        assert result["per_class"][name]["iou"] == pytest.approx(value)
        assert result["per_class"][name]["present"]
    assert not result["per_class"]["c3"]["present"]
    assert result["miou"] == pytest.approx(np.mean(list(iou.values())))
    assert result["miou_damage"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["pixel_accuracy"] == pytest.approx(4 / 6)
    dice = {"c0": 4 / 5, "c1": 4 / 6, "c2": 0.0}
    assert result["dice"] == pytest.approx(np.mean(list(dice.values())))
    assert result["per_class"]["c0"]["precision"] == pytest.approx(1.0)
    assert result["per_class"]["c0"]["recall"] == pytest.approx(2 / 3)
    assert result["per_class"]["c1"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["c1"]["support"] == 3
    assert result["per_class"]["c2"]["precision"] == 0.0
    assert result["precision"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    f1_c0 = 2 * 1 * (2 / 3) / (1 + 2 / 3)
    assert result["per_class"]["c0"]["f1"] == pytest.approx(f1_c0)


def test_streaming_over_batches_equals_computing_at_once():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 16, (12, 20, 20), generator=generator)
    target[target == 15] = 255
    prediction = torch.randint(0, 16, (12, 20, 20), generator=generator)
    streaming = ConfusionMatrix()
    for start in range(0, 12, 5):
        streaming.update(prediction[start : start + 5], target[start : start + 5])
    at_once = confusion(prediction, target).numpy()
    np.testing.assert_array_equal(streaming.numpy(), at_once)
    assert scores(streaming.numpy())["miou"] == scores(at_once)["miou"]


def test_ignored_pixels_never_count():
    target = torch.full((4, 4), 255)
    assert confusion(torch.zeros(4, 4), target).sum() == 0
    assert scores(np.zeros((16, 16), np.int64))["miou"] == 0.0


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_agreement():
    rng = np.random.default_rng(0)
    noisy = []
    for _ in range(30):
        matrix = np.zeros((16, 16), np.int64)
        matrix[0, 0] = 1000
        matrix[3, 3], matrix[3, 0] = rng.integers(0, 100), rng.integers(0, 100)
        noisy.append(matrix)
    noisy = np.stack(noisy)
    low, high = bootstrap_miou(noisy, iterations=300)
    estimate = scores(noisy.sum(axis=0))["miou"]
    assert low < estimate < high
    identical = np.stack([noisy[0]] * 30)
    same_low, same_high = bootstrap_miou(identical, iterations=300)
    assert same_low == pytest.approx(same_high)
    assert bootstrap_miou(noisy, iterations=300) == (low, high)  # seeded
