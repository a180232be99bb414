"""Sliding-window prediction: blending and band-wise finalising must not change the answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heritageseg.infer.backends import model_predictor
from heritageseg.infer.window import blend_window, first_argmax, sliding_window_predict

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
    assert np.array_equal(blend_window(8, 0), np.ones((8, 8)))
    assert blend_window(8, 3).dtype == np.float32


def test_the_window_ramp_is_within_an_ulp_of_torchs_linspace():
    """The ramp was torch.linspace's; it is now (i + 1) / (overlap + 1) rounded once, which
    does not depend on the CPU's vector width as torch's does."""
    for overlap in (8, 21, 32, 85):
        torch_ramp = torch.linspace(1.0 / (overlap + 1), 1.0, overlap + 1)[:-1].numpy()
        ramp = blend_window(2 * overlap + 2, overlap)[overlap + 1, :overlap]
        ulps = np.abs(torch_ramp.view(np.int32) - ramp.view(np.int32))
        assert ulps.max() <= 1, overlap


def test_first_argmax_is_argmax_ties_included():
    scores = np.random.default_rng(0).normal(size=(7, 33, 41)).astype(np.float32)
    scores[3, :5] = scores[5, :5] = 9.0  # ties: the lower class wins
    labels = first_argmax(scores)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=0))
    assert (labels[:5] == 3).all()


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

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        logits = np.zeros((len(batch), 2, 32, 32), np.float32)
        logits[:, 1] = np.linspace(-1, 1, 32)[None, None, :]  # left says 0, right says 1
        return logits

    labels = sliding_window_predict(
        predict, _image(32, 56), tile=32, overlap=8, num_classes=2, mean=MEAN, std=STD
    )
    assert sum(calls) == 2  # tiles at x = 0 and x = 24
    assert labels[0, 0] == 0 and labels[0, -1] == 1
    assert set(np.unique(labels)) == {0, 1}


def _whole_image_blend(predict, image, tile, overlap, classes):
    """The definition the streaming sweep must equal: every tile's weighted logits added into
    full-size accumulators (rows, then columns), then one argmax."""
    from heritageseg.data.cache import tile_starts

    height, width = image.shape[:2]
    padded = np.zeros((max(height, tile), max(width, tile), 3), np.uint8)
    padded[:height, :width] = image
    logits = torch.zeros(classes, *padded.shape[:2])
    weights = torch.zeros(padded.shape[:2])
    window = torch.from_numpy(blend_window(tile, overlap))
    for y in tile_starts(padded.shape[0], tile, overlap):
        for x in tile_starts(padded.shape[1], tile, overlap):
            crop = torch.from_numpy(padded[y : y + tile, x : x + tile]).permute(2, 0, 1).float()
            crop = (crop - torch.tensor(MEAN).view(3, 1, 1) * 255) / (
                torch.tensor(STD).view(3, 1, 1) * 255
            )
            out = torch.from_numpy(predict(crop[None].numpy()))
            logits[:, y : y + tile, x : x + tile] += out[0] * window
            weights[y : y + tile, x : x + tile] += window
    return (logits / weights).argmax(0).to(torch.uint8).numpy()[:height, :width]


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "batch", "in_flight"),
    [(203, 311, 64, 16, 3, 1), (64, 200, 64, 8, 1, 1), (150, 90, 48, 24, 8, 1),
     (30, 40, 64, 8, 4, 1), (203, 311, 64, 16, 3, 3), (150, 90, 48, 24, 2, 2),
     (120, 100, 48, 40, 1, 1), (121, 200, 48, 40, 3, 2), (97, 70, 48, 16, 2, 1)],
)  # fmt: skip
def test_the_band_and_column_sweep_equals_whole_image_blending(
    height, width, tile, overlap, batch, in_flight
):
    """Batches predicted side by side (`in_flight`) are still blended in order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 7, 5, padding=2)
    )
    predict = model_predictor(model)
    image = _image(height, width, seed=3)
    expected = _whole_image_blend(predict, image, tile, overlap, 7)
    swept = sliding_window_predict(
        predict, image, tile=tile, overlap=overlap, num_classes=7, mean=MEAN, std=STD,
        batch_size=batch, in_flight=in_flight,
    )  # fmt: skip
    np.testing.assert_array_equal(swept, expected)


def test_tied_logits_take_the_first_class_as_argmax_does():
    """The sweep's labels come from first_argmax: ties must still go to the lower class."""
    tied = np.zeros((5, 32, 32), np.float32)
    tied[2:] = 1.0  # classes 2, 3 and 4 tie for the maximum everywhere

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.repeat(tied[None], len(batch), axis=0)

    labels = sliding_window_predict(
        predict, _image(50, 70), tile=32, overlap=8, num_classes=5, mean=MEAN, std=STD
    )
    assert tied.argmax(0)[0, 0] == 2
    assert (labels == 2).all()


def test_rows_are_asked_for_one_band_at_a_time_top_to_bottom():
    from heritageseg.infer.window import predict_bands, tile_count

    image, asked, counted = _image(300, 130), [], []

    def rows(top, bottom):
        asked.append((top, bottom))
        return image[top:bottom]

    model = model_predictor(torch.nn.Conv2d(3, 4, 1))
    bands = list(
        predict_bands(
            model,
            rows,
            300,
            130,
            tile=64,
            overlap=8,
            num_classes=4,
            mean=MEAN,
            std=STD,
            on_tiles=counted.append,
        )
    )
    assert all(bottom - top <= 64 for top, bottom in asked[:-1])  # a band of tiles
    assert asked[-1] == (asked[-2][0] + 56, 300)  # the last two tile rows: one band
    assert [t for t, _ in asked] == sorted(t for t, _ in asked)
    assert sum(len(b) for _, b in bands) == 300 and bands[0][0] == 0
    assert sum(counted) == tile_count(300, 130, 64, 8)
