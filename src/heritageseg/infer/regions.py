"""Connected damage regions of a label mask that arrives one band of rows at a time.

Each band is labelled on its own (8-connected, per label); a region that touches the band
above is joined to the region it continues with a union-find. A region no pixel of the
band's last row belongs to can grow no more: it is counted and, if among the largest of its
label, kept, and everything else about it is dropped. Memory is the band, the open regions
(at most one per column) and `listed` regions per label, never the mask and never the count
of regions, which a noisy map of a large scan has by the million. Counts, and the boxes and
areas of the regions listed, equal `scipy.ndimage.label` on the whole mask (tested).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Region:
    """One connected region of one label: bounding box (x, y, width, height) and pixels."""

    label: int
    x: int
    y: int
    width: int
    height: int
    pixels: int


class RegionCounter:
    """Pixels and 8-connected regions per label of a mask fed top to bottom (`add`); the
    `listed` largest regions of each label are kept with their boxes (None: all)."""

    def __init__(self, labels: int = 256, listed: int | None = None):
        self.pixels = np.zeros(labels, dtype=np.int64)
        self.counts = np.zeros(labels, dtype=np.int64)
        self._extent: dict[int, list[int]] = {}  # label -> x0, y0, x1, y1 of all its regions
        self.listed = listed
        self._kept: dict[int, list] = {}  # label -> heap of (pixels, order, box)
        self._boxes: dict[int, list[int]] = {}  # open root -> [x0, y0, x1, y1, pixels, label]
        self._parent: dict[int, int] = {}
        self._last_row: np.ndarray | None = None  # piece per column of the row above, or -1
        self._last_values: np.ndarray | None = None
        self._next_piece = 0
        self._next_top = 0
        self._order = 0

    def add(self, top: int, band: np.ndarray) -> None:
        """The next band of the mask, rows [top, top + len(band))."""
        if top != self._next_top:
            raise ValueError(f"bands arrive in order: expected row {self._next_top}, got {top}")
        self._next_top = top + len(band)
        self.pixels += np.bincount(band.ravel(), minlength=len(self.pixels))
        pieces = np.full(band.shape, -1, dtype=np.int64)
        for label in np.unique(band):
            self._label_pieces(band == label, int(label), top, pieces)
        if self._last_row is not None:
            self._join(self._last_row, self._last_values, pieces[0], band[0])
        self._close_all_but(pieces[-1])
        self._last_row, self._last_values = pieces[-1].copy(), band[-1].copy()

    def finish(self) -> None:
        """Count the regions still open at the bottom edge."""
        self._close_all_but(np.zeros(0, dtype=np.int64))
        self._last_row = None

    def extent(self, label: int) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1), inclusive, around every region of `label`; None if it has none."""
        box = self._extent.get(label)
        return None if box is None else tuple(box)

    def regions(self) -> list[Region]:
        """The regions kept, ordered by label, then top, then left (call `finish` first)."""
        found = [Region(label, b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1, b[4])
                 for label, heap in self._kept.items() for _, _, b in heap]  # fmt: skip
        return sorted(found, key=lambda r: (r.label, r.y, r.x))

    def _label_pieces(self, where: np.ndarray, label: int, top: int, pieces: np.ndarray) -> None:
        numbered, count = ndimage.label(where, structure=_EIGHT_NEIGHBOURS)
        first = self._next_piece
        self._next_piece += count
        sizes = np.bincount(numbered.ravel(), minlength=count + 1)[1:]
        for index, (rows, cols) in enumerate(ndimage.find_objects(numbered)):
            piece = first + index
            self._parent[piece] = piece
            self._boxes[piece] = [cols.start, top + rows.start, cols.stop - 1,
                                  top + rows.stop - 1, int(sizes[index]), label]  # fmt: skip
        pieces[where] = numbered[where] - 1 + first

    def _join(self, above, above_values, below, below_values) -> None:
        """Union the pieces of the row above with those of the same label 8-touching them in
        the row below."""
        width = len(above)
        pairs = set()
        for shift in (-1, 0, 1):
            upper = slice(max(0, -shift), width - max(0, shift))
            lower = slice(max(0, shift), width - max(0, -shift))
            same = (above_values[upper] == below_values[lower]) & (above[upper] >= 0)
            pairs.update(zip(above[upper][same].tolist(), below[lower][same].tolist(), strict=True))
        for a, b in pairs:
            self._union(a, b)

    def _find(self, piece: int) -> int:
        parent = self._parent
        while parent[piece] != piece:
            parent[piece] = parent[parent[piece]]
            piece = parent[piece]
        return piece

    def _union(self, a: int, b: int) -> None:
        a, b = self._find(a), self._find(b)
        if a == b:
            return
        keep, gone = min(a, b), max(a, b)
        self._parent[gone] = keep
        into, box = self._boxes[keep], self._boxes.pop(gone)
        into[0], into[1] = min(into[0], box[0]), min(into[1], box[1])
        into[2], into[3] = max(into[2], box[2]), max(into[3], box[3])
        into[4] += box[4]

    def _close_all_but(self, last_row: np.ndarray) -> None:
        """Count and drop every region without a pixel in `last_row`; the union-find is cut
        down to the pieces of that row, the only ones the next band can touch."""
        open_pieces = {int(p) for p in np.unique(last_row) if p >= 0}
        roots = {piece: self._find(piece) for piece in open_pieces}
        still_open = set(roots.values())
        for root in [r for r in self._boxes if r not in still_open]:
            self._keep(self._boxes.pop(root))
        self._parent = {**{p: r for p, r in roots.items()}, **{r: r for r in still_open}}

    def _keep(self, box: list[int]) -> None:
        label = box[5]
        self.counts[label] += 1
        extent = self._extent.setdefault(label, box[:4])
        extent[0], extent[1] = min(extent[0], box[0]), min(extent[1], box[1])
        extent[2], extent[3] = max(extent[2], box[2]), max(extent[3], box[3])
        heap = self._kept.setdefault(label, [])
        self._order += 1
        entry = (box[4], -self._order, box)  # the largest; among equals, the first found
        if self.listed is None or len(heap) < self.listed:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
