"""Sliding-window prediction: blending and band-wise finalising must not change the answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heritageseg.infer.window import blend_window, model_predictor, sliding_window_predict

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalise(image: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()
    return (
        (tensor - torch.tensor(MEAN).view(3, 1, 1) * 255) / (torch.tensor(STD).view(3, 1, 1) * 255)
    )[None]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_blend_window_ramps_at_the_edges_and_is_never_zero():
    window = blend_window(8, 3)
    assert window.shape == (8, 8)
    assert window.min() > 0 and window[4, 4] == 1.0
    assert window[0, 4] < window[1, 4] < window[2, 4] < window[3, 4] == 1.0
    assert torch.equal(blend_window(8, 0), torch.ones(8, 8))


@pytest.mark.parametrize(("height", "width"), [(64, 64), (100, 37), (203, 311)])
def test_pointwise_model_gives_whole_image_labels_whatever_the_tiling(height, width):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 16, kernel_size=1)
    image = _image(height, width)
    whole = model(_normalise(image)).argmax(dim=1)[0].numpy().astype(np.uint8)
    tiled = sliding_window_predict(
        model_predictor(model), image, tile=64, overlap=16, num_classes=16,
        mean=MEAN, std=STD, batch_size=3,
    )  # fmt: skip
    assert tiled.shape == (height, width) and tiled.dtype == np.uint8
    np.testing.assert_array_equal(tiled, whole)


def test_a_tile_covering_the_image_equals_whole_image_inference():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1)
    )
    image = _image(96, 96, seed=1)
    whole = model(_normalise(image)).argmax(dim=1)[0].numpy().astype(np.uint8)
    tiled = sliding_window_predict(
        model_predictor(model), image, tile=96, overlap=32, num_classes=16, mean=MEAN, std=STD
    )
    np.testing.assert_array_equal(tiled, whole)


def test_overlapping_tiles_blend_logits_not_votes():
    """A model whose logits depend on the tile position: blending must average them."""
    calls = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        logits = torch.zeros(len(batch), 2, 32, 32)
        logits[:, 1] = torch.linspace(-1, 1, 32)[None, None, :]  # left says 0, right says 1
        return logits

    labels = sliding_window_predict(
        predict, _image(32, 56), tile=32, overlap=8, num_classes=2, mean=MEAN, std=STD
    )
    assert sum(calls) == 2  # tiles at x = 0 and x = 24
    assert labels[0, 0] == 0 and labels[0, -1] == 1
    assert set(np.unique(labels)) == {0, 1}
