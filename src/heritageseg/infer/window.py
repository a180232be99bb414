"""Sliding-window prediction for images of any size, in memory that does not grow with them.

Overlapping tiles are predicted in batches and their logits blended with a window that
falls off towards the tile edges (where a network sees the least context). The image is
swept one band of tile rows at a time, and each band left to right: logits are accumulated
only for the batch of tiles at hand (classes x tile x a few tiles) and for the rows the next
band will overlap (classes x overlap x width), and every pixel that no later tile touches is
turned into its label at once. The image itself is asked for one band of rows at a time
(`RowSource`), so a scan larger than memory is never decoded whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from heritageseg.data.cache import tile_starts
from heritageseg.nn.models import fine_logits

Predict = Callable[[torch.Tensor], torch.Tensor]
# rows [top, bottom) of the image as (bottom - top, width, 3) uint8; tops never decrease
RowSource = Callable[[int, int], np.ndarray]


def blend_window(tile: int, overlap: int) -> torch.Tensor:
    """(tile, tile) weights: 1 in the middle, a linear ramp over `overlap` pixels at the edges,
    never 0 (so a pixel covered by one tile only keeps that tile's prediction)."""
    ramp = torch.ones(tile)
    if overlap > 0:
        edge = torch.linspace(1.0 / (overlap + 1), 1.0, overlap + 1)[:-1]
        ramp[:overlap] = edge
        ramp[-overlap:] = edge.flip(0)
    return ramp[:, None] * ramp[None, :]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles `predict_bands` runs on an image (for a progress bar)."""
    rows = tile_starts(max(height, tile), tile, overlap)
    return len(rows) * len(tile_starts(max(width, tile), tile, overlap))


def sliding_window_predict(
    predict: Predict,
    image: np.ndarray,
    *,
    tile: int,
    overlap: int,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 4,
) -> np.ndarray:
    """Labels (H, W) uint8 of an RGB uint8 image (H, W, 3) held in memory."""
    height, width = image.shape[:2]
    labels = np.empty((height, width), dtype=np.uint8)
    bands = predict_bands(
        predict, lambda top, bottom: image[top:bottom], height, width, tile=tile,
        overlap=overlap, num_classes=num_classes, mean=mean, std=std, batch_size=batch_size,
    )  # fmt: skip
    for top, band in bands:
        labels[top : top + len(band)] = band
    return labels


def predict_bands(
    predict: Predict,
    rows: RowSource,
    height: int,
    width: int,
    *,
    tile: int,
    overlap: int,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 4,
    on_tiles: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(top, labels) of consecutive bands of rows, top to bottom, covering the image.

    `predict` maps a normalised batch (B, 3, tile, tile) to logits (B, C, tile, tile).
    Images smaller than a tile, and tiles past the edge, are padded with black.
    `on_tiles(n)` is told after every batch of n tiles (a progress bar).
    """
    padded_h, padded_w = max(height, tile), max(width, tile)
    ys = tile_starts(padded_h, tile, overlap)
    xs = tile_starts(padded_w, tile, overlap)
    sweep = _BandSweep(predict, tile, overlap, num_classes, mean, std, padded_w)
    for index, y in enumerate(ys):
        bottom = ys[index + 1] if index + 1 < len(ys) else y + tile  # rows final after it
        band = rows(y, min(y + tile, height))
        labels = sweep.band(band, xs, bottom - y, batch_size, on_tiles)
        keep = min(bottom, height) - y
        if keep > 0:
            yield y, labels[:keep, :width]


class _BandSweep:
    """One band of tile rows after another, carrying the logits of the rows bands share."""

    def __init__(self, predict, tile, overlap, num_classes, mean, std, padded_w):
        self.predict, self.tile, self.classes, self.width = predict, tile, num_classes, padded_w
        self.window = blend_window(tile, overlap)
        self.scale = torch.tensor(std).view(3, 1, 1) * 255.0
        self.shift = torch.tensor(mean).view(3, 1, 1) * 255.0
        self.carry = torch.zeros(num_classes, 0, padded_w)  # rows the last band overlaps
        self.carry_weights = torch.zeros(0, padded_w)

    def band(self, image, xs, final, batch_size, on_tiles) -> np.ndarray:
        """Labels of the band's first `final` rows; the rest is carried to the next band."""
        tile, carried = self.tile, self.carry.shape[1]
        labels = np.empty((final, self.width), dtype=np.uint8)
        next_carry = torch.zeros(self.classes, tile - final, self.width)
        next_weights = torch.zeros(tile - final, self.width)
        left = xs[0]  # the accumulators hold columns [left, left + width)
        logits = torch.zeros(self.classes, tile, 0)
        weights = torch.zeros(tile, 0)
        for start in range(0, len(xs), batch_size):
            batch_xs = xs[start : start + batch_size]
            grow = batch_xs[-1] + tile - (left + logits.shape[2])
            if grow > 0:  # new columns start from what the band above left in them
                cols = slice(left + logits.shape[2], left + logits.shape[2] + grow)
                more, more_w = torch.zeros(self.classes, tile, grow), torch.zeros(tile, grow)
                more[:, :carried], more_w[:carried] = (
                    self.carry[:, :, cols],
                    self.carry_weights[:, cols],
                )
                logits, weights = torch.cat([logits, more], 2), torch.cat([weights, more_w], 1)
            crops = torch.stack([_crop(image, x, tile) for x in batch_xs]).float()
            out = self.predict((crops - self.shift) / self.scale).float()
            for offset, x in enumerate(batch_xs):
                cols = slice(x - left, x - left + tile)
                logits[:, :, cols] += out[offset] * self.window
                weights[:, cols] += self.window
            if on_tiles is not None:
                on_tiles(len(batch_xs))
            after = start + batch_size
            done = (xs[after] if after < len(xs) else left + logits.shape[2]) - left
            cols = slice(left, left + done)
            blended = logits[:, :final, :done] / weights[:final, :done].clamp_min(1e-12)
            # max(0).indices is argmax(0), ties to the first class included, at a fifth of
            # its time over the class dimension (torch 2.14, two cores)
            labels[:, cols] = blended.max(dim=0).indices.to(torch.uint8).numpy()
            next_carry[:, :, cols], next_weights[:, cols] = (
                logits[:, final:, :done],
                weights[final:, :done],
            )
            logits, weights, left = logits[:, :, done:], weights[:, done:], left + done
        self.carry, self.carry_weights = next_carry, next_weights
        return labels


def _crop(band: np.ndarray, x: int, tile: int) -> torch.Tensor:
    """A (3, tile, tile) uint8 crop of a band's columns [x, x + tile), zero-padded past the
    image's edge."""
    part = band[:tile, x : x + tile]
    out = torch.zeros(3, tile, tile, dtype=torch.uint8)
    out[:, : part.shape[0], : part.shape[1]] = torch.from_numpy(np.ascontiguousarray(part)).permute(
        2, 0, 1
    )
    return out


def model_predictor(model: torch.nn.Module, autocast: Callable | None = None) -> Predict:
    """Wrap a segmentation model (fine or hierarchical heads) as a `Predict` function."""
    model.eval()

    @torch.no_grad()
    def predict(batch: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        if autocast is None:
            return fine_logits(model(batch.to(device))).cpu()
        with autocast():
            return fine_logits(model(batch.to(device))).cpu()

    return predict
