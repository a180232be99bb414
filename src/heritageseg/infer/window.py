"""Sliding-window prediction for images of any size, in bounded memory.

Overlapping tiles are predicted in batches and their logits blended with a window that
falls off towards the tile edges (where a network sees the least context). The image is
swept one band of tile rows at a time: logits are accumulated only for the current band
(classes x tile x width floats), and every row that no later tile touches is turned into
labels at once. Memory is O(tile x width), not O(height x width x classes): a 133 Mpx
ARTeFACT image needs ~0.3 GB of accumulators at 384 px tiles instead of 8.5 GB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from heritageseg.data.cache import tile_starts
from heritageseg.nn.models import fine_logits

Predict = Callable[[torch.Tensor], torch.Tensor]


def blend_window(tile: int, overlap: int) -> torch.Tensor:
    """(tile, tile) weights: 1 in the middle, a linear ramp over `overlap` pixels at the edges,
    never 0 (so a pixel covered by one tile only keeps that tile's prediction)."""
    ramp = torch.ones(tile)
    if overlap > 0:
        edge = torch.linspace(1.0 / (overlap + 1), 1.0, overlap + 1)[:-1]
        ramp[:overlap] = edge
        ramp[-overlap:] = edge.flip(0)
    return ramp[:, None] * ramp[None, :]


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
    """Labels (H, W) uint8 of an RGB uint8 image (H, W, 3) of any size.

    `predict` maps a normalised batch (B, 3, tile, tile) to logits (B, C, tile, tile).
    Images smaller than a tile, and tiles past the edge, are padded with black.
    """
    height, width = image.shape[:2]
    padded_h, padded_w = max(height, tile), max(width, tile)
    ys = tile_starts(padded_h, tile, overlap)
    xs = tile_starts(padded_w, tile, overlap)
    window = blend_window(tile, overlap)
    labels = np.empty((height, width), dtype=np.uint8)
    scale = torch.tensor(std).view(3, 1, 1) * 255.0
    shift = torch.tensor(mean).view(3, 1, 1) * 255.0
    band_top = 0  # first row not yet finalised
    logits = torch.zeros(num_classes, 0, padded_w)
    weights = torch.zeros(0, padded_w)
    for index, y in enumerate(ys):
        # grow the accumulators down to this band's bottom
        grow = y + tile - (band_top + logits.shape[1])
        if grow > 0:
            logits = torch.cat([logits, torch.zeros(num_classes, grow, padded_w)], dim=1)
            weights = torch.cat([weights, torch.zeros(grow, padded_w)], dim=0)
        crops = [_crop(image, y, x, tile) for x in xs]
        for start in range(0, len(crops), batch_size):
            batch = torch.stack(crops[start : start + batch_size]).float()
            batch = (batch - shift) / scale
            out = predict(batch).float()
            for offset, x in enumerate(xs[start : start + batch_size]):
                rows = slice(y - band_top, y - band_top + tile)
                logits[:, rows, x : x + tile] += out[offset] * window
                weights[rows, x : x + tile] += window
        done = ys[index + 1] if index + 1 < len(ys) else band_top + logits.shape[1]
        finished = done - band_top
        _finalise(labels, logits[:, :finished], weights[:finished], band_top, width, height)
        logits, weights = logits[:, finished:], weights[finished:]
        band_top = done
    return labels


def _crop(image: np.ndarray, y: int, x: int, tile: int) -> torch.Tensor:
    """A (3, tile, tile) uint8 crop, zero-padded past the image's edge."""
    part = image[y : y + tile, x : x + tile]
    out = torch.zeros(3, tile, tile, dtype=torch.uint8)
    out[:, : part.shape[0], : part.shape[1]] = torch.from_numpy(np.ascontiguousarray(part)).permute(
        2, 0, 1
    )
    return out


def _finalise(labels, logits, weights, top: int, width: int, height: int) -> None:
    rows = min(logits.shape[1], height - top)
    if rows <= 0:
        return
    blended = logits[:, :rows, :width] / weights[:rows, :width].clamp_min(1e-12)
    labels[top : top + rows] = blended.argmax(dim=0).to(torch.uint8).numpy()


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
