"""Metrics from the streaming confusion matrix, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heritageseg.nn.metrics import (
    ConfusionMatrix,
    bootstrap_miou,
    confusion,
    majority_baseline_miou,
    miou,
    mious,
    paired_bootstrap,
    scores,
    spread,
    study_bootstrap,
)


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


def _image(hit: int, miss: int) -> np.ndarray:
    """One image's matrix: Clean all right, `hit` Cracks pixels right and `miss` called Clean."""
    matrix = np.zeros((16, 16), np.int64)
    matrix[0, 0] = 1000
    matrix[9, 9], matrix[9, 0] = hit, miss
    return matrix


def test_paired_bootstrap_of_a_model_with_itself_is_exactly_zero():
    images = np.stack([_image(h, 50 - h) for h in range(5, 45, 2)])
    result = paired_bootstrap(images, images, iterations=200)
    assert result["difference"] == 0.0 and result["ci95"] == [0.0, 0.0]
    assert result["p_value"] == 1.0 and result["images"] == 20


def test_paired_bootstrap_separates_a_consistent_winner_from_a_coin_flip():
    rng = np.random.default_rng(1)
    hits = rng.integers(10, 40, size=24)
    base = np.stack([_image(h, 50 - h) for h in hits])
    better = np.stack([_image(h + 5, 45 - h) for h in hits])  # 5 more pixels on every image
    result = paired_bootstrap(better, base, iterations=500)
    assert result["difference"] > 0
    assert 0 < result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    assert result["p_value"] < 0.01
    # Wins on half the images, loses as much on the other half: not a real difference.
    swing = np.where(np.arange(24) % 2 == 0, 8, -8)
    mixed = np.stack([_image(h + s, 50 - h - s) for h, s in zip(hits, swing, strict=True)])
    noise = paired_bootstrap(mixed, base, iterations=500)
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and noise["p_value"] > 0.05


def test_paired_bootstrap_refuses_different_image_sets():
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(np.zeros((3, 16, 16)), np.zeros((4, 16, 16)))


def _runs(hits: np.ndarray, shifts: list[int]) -> np.ndarray:
    """(S, N, 16, 16): one training run per shift, each `shift` more Cracks pixels right on
    every image than `hits` (the same test images in every run)."""
    return np.stack([np.stack([_image(h + s, 50 - h - s) for h in hits]) for s in shifts])


def test_study_bootstrap_of_identical_runs_is_exactly_zero():
    hits = np.arange(5, 45, 2)
    runs = _runs(hits, [0, 0, 0])
    result = study_bootstrap([runs], [runs.copy()], iterations=200)
    assert result["difference"] == 0.0 and result["ci95"] == [0.0, 0.0]
    assert result["p_value"] == 1.0 and result["images"] == 20 and result["runs"] == [3, 3]
    fewer = study_bootstrap([runs], [runs[:2]], iterations=200)  # means of 3 and of 2 runs
    assert fewer["runs"] == [3, 2] and np.abs(fewer["ci95"]).max() < 1e-12


def test_a_seed_effect_larger_than_the_image_effect_widens_the_interval():
    rng = np.random.default_rng(2)
    hits = rng.integers(10, 30, size=24)
    base = _runs(hits, [0, 0, 0])
    steady = _runs(hits, [4, 4, 4])  # 4 pixels better on every image, whatever the seed
    seedy = _runs(hits, [-4, 4, 12])  # the same on average, but the seed moves it 16 pixels
    images_only = paired_bootstrap(steady[0], base[0], iterations=1000)
    with_steady = study_bootstrap([steady], [base], iterations=1000)
    with_seeds = study_bootstrap([seedy], [base], iterations=1000)
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert with_steady["difference"] == pytest.approx(images_only["difference"])
    assert width(with_steady) == pytest.approx(width(images_only), rel=0.2)
    assert width(with_seeds) > 3 * width(with_steady)
    assert with_steady["ci95"][0] > 0  # a real win when every seed agrees...
    assert with_seeds["ci95"][0] < with_seeds["difference"] < with_seeds["ci95"][1]
    assert with_seeds["ci95"][0] < 0  # ...within noise when the seed decides


def test_study_bootstrap_averages_folds_and_refuses_mismatched_ones():
    hits = np.arange(10, 30)
    fold_1, fold_2 = _runs(hits[:10], [0, 0]), _runs(hits[10:], [0, 0])
    better_1, better_2 = _runs(hits[:10], [6, 6]), _runs(hits[10:], [2, 2])
    result = study_bootstrap([better_1, better_2], [fold_1, fold_2], iterations=300)
    each = [study_bootstrap([a], [b], iterations=300)["difference"]
            for a, b in ((better_1, fold_1), (better_2, fold_2))]  # fmt: skip
    assert result["difference"] == pytest.approx(np.mean(each))
    assert result["images"] == 20
    with pytest.raises(ValueError, match="same folds"):
        study_bootstrap([better_1], [fold_1, fold_2])
    with pytest.raises(ValueError, match="same images"):
        study_bootstrap([better_1], [fold_2[:, :5]])


def test_spread_leaves_out_absent_values_and_gives_one_value_no_spread():
    assert spread(np.array([0.1, 0.3])) == (pytest.approx(0.2), pytest.approx(0.1414, abs=1e-4))
    assert spread(np.array([0.25, np.nan])) == (0.25, 0.0)
    assert all(np.isnan(v) for v in spread(np.array([np.nan])))


def test_majority_baseline_labels_every_pixel_with_the_commonest_class():
    matrix = np.zeros((16, 16), dtype=np.int64)
    matrix[0, 0], matrix[0, 3] = 70, 10  # 80 Clean pixels
    matrix[3, 3], matrix[5, 0] = 15, 5  # 15 class-3 and 5 class-5 pixels
    # Everything called Clean: IoU(Clean) = 80 / 100, classes 3 and 5 get 0; 3 present.
    assert majority_baseline_miou(matrix) == pytest.approx(0.8 / 3)
    assert majority_baseline_miou(matrix) < scores(matrix)["miou"]


def test_vectorised_mious_equal_miou_of_each_matrix():
    rng = np.random.default_rng(3)
    matrices = rng.integers(0, 50, size=(40, 16, 16)) * (rng.random((40, 16, 16)) < 0.2)
    matrices[0] = 0  # nothing present: 0, as miou gives
    matrices[1, 3:] = 0
    matrices[1, :, 3:] = 0  # only three classes present
    expected = [miou(m) for m in matrices]
    assert mious(matrices) == pytest.approx(expected, abs=1e-12)
