"""Sliding-window prediction for images of any size, in memory that does not grow with them.

Overlapping tiles are predicted in batches and their logits blended with a window that
falls off towards the tile edges (where a network sees the least context). The image is
swept one band of tile rows at a time, and each band left to right: logits are accumulated
only for the batch of tiles at hand (classes x tile x a few tiles) and for the rows the next
band will overlap (classes x overlap x width), and every pixel that no later tile touches is
turned into its label at once. The image itself is asked for one band of rows at a time
(`RowSource`), so a scan larger than memory is never decoded whole.

NumPy only: a served model that runs an exported graph maps a scan without importing torch
(its import alone is 0.6 GB of RSS). While the network predicts (in helper threads;
onnxruntime and torch release the GIL), the sweep cuts the next batch's tiles and blends the
last one, so the cores the network leaves idle do that work; the pipeline runs on across
bands.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from heritageseg.data.cache import tile_starts

# A normalised batch (B, 3, tile, tile) float32 -> fine logits (B, C, tile, tile) float32,
# both host arrays: every backend (heritageseg.infer.backends) is one of these.
Predict = Callable[[np.ndarray], np.ndarray]
# rows [top, bottom) of the image as (bottom - top, width, 3) uint8; tops never decrease
RowSource = Callable[[int, int], np.ndarray]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 weights: 1 in the middle, a linear ramp over `overlap` pixels at
    the edges, never 0 (so a pixel covered by one tile only keeps that tile's prediction)."""
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        edge = (np.arange(1, overlap + 1) / (overlap + 1)).astype(np.float32)
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return ramp[:, None] * ramp[None, :]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles `predict_bands` runs on an image (for a progress bar)."""
    rows = tile_starts(max(height, tile), tile, overlap)
    return len(rows) * len(tile_starts(max(width, tile), tile, overlap))


def first_argmax(scores: np.ndarray) -> np.ndarray:
    """argmax over the first axis as uint8, ties to the lowest index (as np.argmax), in one
    pass per class: twice as fast as np.argmax, which copies the array to reduce over it."""
    best = scores[0].copy()
    labels = np.zeros(best.shape, dtype=np.uint8)
    higher = np.empty(best.shape, dtype=bool)
    for index in range(1, len(scores)):
        np.greater(scores[index], best, out=higher)
        np.putmask(labels, higher, index)
        np.maximum(best, scores[index], out=best)
    return labels


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
    in_flight: int = 1,
) -> np.ndarray:
    """Labels (H, W) uint8 of an RGB uint8 image (H, W, 3) held in memory."""
    height, width = image.shape[:2]
    labels = np.empty((height, width), dtype=np.uint8)
    bands = predict_bands(
        predict, lambda top, bottom: image[top:bottom], height, width, tile=tile,
        overlap=overlap, num_classes=num_classes, mean=mean, std=std, batch_size=batch_size,
        in_flight=in_flight,
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
    in_flight: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """(top, labels) of consecutive bands of rows, top to bottom, covering the image.

    Images smaller than a tile, and tiles past the edge, are padded with black.
    `on_tiles(n)` is told after every batch of n tiles (a progress bar). `in_flight` batches
    are predicted at once, besides the one being blended: more than one keeps a `predict`
    that spreads each batch over single-threaded workers (onnx) from waiting for its slowest
    worker; the batches are blended in order whatever the number.
    """
    padded_w = max(width, tile)
    bands = _bands(tile_starts(max(height, tile), tile, overlap), tile)
    xs = tile_starts(padded_w, tile, overlap)
    sweep = _BandSweep(tile, overlap, num_classes, mean, std, xs, batch_size, padded_w, bands)
    running: deque[tuple[_Band, int, int, Future]] = deque()
    with ThreadPoolExecutor(in_flight, thread_name_prefix="window") as network:
        for band in bands:
            pixels = rows(band.top, min(band.top + band.offsets[-1] + tile, height))
            for step, (row, number) in enumerate(sweep.order(band)):
                crops = sweep.crops(pixels[band.offsets[row] :], sweep.batches[number])
                running.append((band, step, number, network.submit(predict, crops)))
                if len(running) > in_flight:  # blended while the network runs the others
                    yield from _finished(sweep, height, width, *running.popleft(), on_tiles)
        while running:
            yield from _finished(sweep, height, width, *running.popleft(), on_tiles)


@dataclass(frozen=True)
class _Band:
    """Rows swept left to right at once: tile rows starting at `top` + each of `offsets`,
    whose first `final` rows no later band reaches."""

    top: int
    offsets: tuple[int, ...]
    final: int


def _bands(ys: list[int], tile: int) -> list[_Band]:
    """A band per tile row, but the last two tile rows in one band: the last row starts
    where the image ends, off the stride, and would share up to a whole tile of rows with the
    one above, sums that a separate band would carry across the whole width."""
    if len(ys) == 1:
        return [_Band(ys[0], (0,), tile)]
    bands = [_Band(y, (0,), below - y) for y, below in itertools.pairwise(ys[:-1])]
    return [*bands, _Band(ys[-2], (0, ys[-1] - ys[-2]), ys[-1] + tile - ys[-2])]


def _finished(sweep, height, width, band, step, number, future, on_tiles) -> Iterator:
    """Blend step `step` of `band` (tiles of batch `number`); after its last, its final rows."""
    if step == 0:
        sweep.start(band)
    sweep.blend(step, future.result())
    if on_tiles is not None:
        on_tiles(len(sweep.batches[number]))
    if step == len(sweep.order(band)) - 1:
        labels, keep = sweep.finish(), min(band.final, height - band.top)
        if keep > 0:
            yield band.top, labels[:keep, :width]


class _BandSweep:
    """One band of tile rows after another, carrying the logits of the rows bands share.

    Within a band the sums live in fixed buffers whose column 0 is `left`, the first column
    not yet final: a batch adds its tiles, labels the columns no later tile reaches and
    moves the rest to the front. In a band of two tile rows, the lower row's batches follow
    the upper row's by as many batches as its tiles overlap, so that every pixel gets its
    tiles' logits in the order of a row-by-row sweep (the same float sums, the same labels).
    """

    def __init__(self, tile, overlap, num_classes, mean, std, xs, batch_size, padded_w, bands):
        self.tile, self.classes, self.width = tile, num_classes, padded_w
        self.batches = [xs[i : i + batch_size] for i in range(0, len(xs), batch_size)]
        self.orders = {len(b.offsets): self._order(len(b.offsets)) for b in bands}
        self.window = blend_window(tile, overlap)
        self.shift = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
        self.scale = np.asarray(std, dtype=np.float32).reshape(3, 1, 1) * 255.0
        height = tile + max(b.offsets[-1] for b in bands)
        span = max(self._span(order) for order in self.orders.values())
        self.logits = np.empty((num_classes, height, span), dtype=np.float32)
        self.weights = np.empty((height, span), dtype=np.float32)
        # scratch, so that a batch allocates nothing the size of a band (freed and allocated
        # again for every batch, such blocks fragment the heap: RSS grows with the width)
        self.weighted = np.empty((num_classes, tile, tile), dtype=np.float32)
        self.blended = np.empty_like(self.logits)
        self.divisor = np.empty_like(self.weights)
        # The sums of the rows a band shares with the next, for every column, in one buffer
        # that a band reads and rewrites column by column (a batch writes only the columns
        # whose carried sums it has read). Only one-row bands carry: `overlap` rows.
        shared = max((tile - b.final for b in bands if len(b.offsets) == 1), default=0)
        self.carried = np.empty((num_classes, shared, padded_w), dtype=np.float32)
        self.carried_weights = np.empty((shared, padded_w), dtype=np.float32)
        self.carry, self.carry_weights = self.carried[:, :0], self.carried_weights[:0]

    def _order(self, rows: int) -> list[tuple[int, int]]:
        """(tile row, batch) in blending order: a lower row's batch once every batch of the
        row above whose tiles reach its columns is blended."""
        if rows == 1:
            return [(0, number) for number in range(len(self.batches))]
        order, above = [], 0
        for number, batch_xs in enumerate(self.batches):
            while above < len(self.batches) and self.batches[above][0] < batch_xs[-1] + self.tile:
                order.append((0, above))
                above += 1
            order.append((1, number))
        return order

    def _span(self, order: list[tuple[int, int]]) -> int:
        """The most columns held at once: from `left` to the end of the last opened tile."""
        left, most = self.batches[0][0], 0
        for row, number in order:
            batch_xs = self.batches[number]
            most = max(most, batch_xs[-1] + self.tile - left)
            if row == order[-1][0]:  # the lowest tile row closes columns
                left = self._later(number)
        return most

    def _later(self, number: int) -> int:
        """The first column a batch after `number` reaches (the end, after the last)."""
        if number + 1 < len(self.batches):
            return self.batches[number + 1][0]
        return self.batches[number][-1] + self.tile

    def order(self, band: _Band) -> list[tuple[int, int]]:
        return self.orders[len(band.offsets)]

    def crops(self, pixels: np.ndarray, batch_xs: list[int]) -> np.ndarray:
        """A batch's tiles of rows starting at the tiles' top, normalised; zero-padded
        (black) past the image's edge."""
        tile = self.tile
        crops = np.zeros((len(batch_xs), 3, tile, tile), dtype=np.float32)
        for crop, x in zip(crops, batch_xs, strict=True):
            part = pixels[:tile, x : x + tile]
            crop[:, : part.shape[0], : part.shape[1]] = part.transpose(2, 0, 1)
        crops -= self.shift
        crops /= self.scale
        return crops

    def start(self, band: _Band) -> None:
        """A new band: its labels, and where the rows it shares with the next go."""
        self.band, shared = band, self.tile + band.offsets[-1] - band.final
        self.labels = np.empty((band.final, self.width), dtype=np.uint8)
        self.next_carry = self.carried[:, :shared]
        self.next_weights = self.carried_weights[:shared]
        self.left, self.live = self.batches[0][0], 0  # columns [left, left + live) hold sums

    def blend(self, step: int, out: np.ndarray) -> None:
        """Add the logits `out` of the band's step `step`; after a batch of its lowest tile
        row, label the columns no later tile reaches."""
        row, number = self.order(self.band)[step]
        batch_xs, offset = self.batches[number], self.band.offsets[row]
        self._open(batch_xs[-1] + self.tile)
        tile, left = self.tile, self.left
        rows = slice(offset, offset + tile)
        for logits, x in zip(out, batch_xs, strict=True):
            cols = slice(x - left, x - left + tile)
            self.logits[:, rows, cols] += np.multiply(logits, self.window, out=self.weighted)
            self.weights[rows, cols] += self.window
        if row == len(self.band.offsets) - 1:
            self._close(self._later(number) - left)

    def _open(self, end: int) -> None:
        """Columns up to `end` hold sums: new ones start from what the band above left in
        them (its shared rows), zero below."""
        left, carried = self.left, self.carry.shape[1]
        if end <= left + self.live:
            return
        new, cols = slice(self.live, end - left), slice(left + self.live, end)
        self.logits[:, :carried, new] = self.carry[:, :, cols]
        self.logits[:, carried:, new] = 0.0
        self.weights[:carried, new] = self.carry_weights[:, cols]
        self.weights[carried:, new] = 0.0
        self.live = end - left

    def _close(self, done: int) -> None:
        """Label columns [left, left + done) and keep their shared rows for the next band."""
        left, final = self.left, self.band.final
        divisor = np.maximum(self.weights[:final, :done], 1e-12, out=self.divisor[:final, :done])
        blended = np.divide(
            self.logits[:, :final, :done], divisor, out=self.blended[:, :final, :done]
        )
        self.labels[:, left : left + done] = first_argmax(blended)
        shared = slice(final, final + self.next_carry.shape[1])
        self.next_carry[:, :, left : left + done] = self.logits[:, shared, :done]
        self.next_weights[:, left : left + done] = self.weights[shared, :done]
        self.live -= done
        self.logits[:, :, : self.live] = self.logits[:, :, done : done + self.live]
        self.weights[:, : self.live] = self.weights[:, done : done + self.live]
        self.left += done

    def finish(self) -> np.ndarray:
        """The band's labels; its shared rows' sums become the next band's start."""
        self.carry, self.carry_weights = self.next_carry, self.next_weights
        return self.labels
