"""Connected damage regions of a label mask that arrives one band of rows at a time.

Each band is labelled on its own (8-connected, per class); a region that touches the band
above is joined to the region it continues with a union-find over region numbers. Memory is
the band plus a few numbers per region, never the mask: the region count and every region's
bounding box and area equal `scipy.ndimage.label` on the whole mask (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Region:
    """One connected region of one class: bounding box (x, y, width, height) and pixels."""

    label: int
    x: int
    y: int
    width: int
    height: int
    pixels: int


class RegionCounter:
    """Pixels per label and 8-connected regions of a mask fed top to bottom (`add`)."""

    def __init__(self, labels: int = 256):
        self.pixels = np.zeros(labels, dtype=np.int64)
        self._parent: list[int] = []
        self._label: list[int] = []
        self._boxes: list[np.ndarray] = []  # per band: x0, y0, x1, y1 (inclusive), pixels
        self._last_row: np.ndarray | None = None  # piece number per column of the row above
        self._last_values: np.ndarray | None = None  # and its labels
        self._next_top = 0

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
        self._last_row, self._last_values = pieces[-1].copy(), band[-1].copy()

    def _label_pieces(self, where: np.ndarray, label: int, top: int, pieces: np.ndarray) -> None:
        numbered, count = ndimage.label(where, structure=_EIGHT_NEIGHBOURS)
        first = len(self._parent)
        sizes = np.bincount(numbered.ravel(), minlength=count + 1)[1:]
        boxes = [(c.start, top + r.start, c.stop - 1, top + r.stop - 1)
                 for r, c in ndimage.find_objects(numbered)]  # fmt: skip
        self._boxes.append(np.column_stack([np.array(boxes, np.int64).reshape(-1, 4), sizes]))
        self._parent.extend(range(first, first + count))
        self._label.extend([label] * count)
        pieces[where] = numbered[where] - 1 + first

    def _join(self, above, above_values, below, below_values) -> None:
        """Union the pieces of the row above with those of the same label 8-touching them in
        the row below."""
        width = len(above)
        pairs = set()
        for shift in (-1, 0, 1):
            upper = slice(max(0, -shift), width - max(0, shift))
            lower = slice(max(0, shift), width - max(0, -shift))
            same = above_values[upper] == below_values[lower]
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
        if a != b:
            self._parent[max(a, b)] = min(a, b)

    def regions(self) -> list[Region]:
        """Every region, ordered by label, then top, then left."""
        merged: dict[int, list[int]] = {}
        boxes = np.concatenate(self._boxes).tolist() if self._boxes else []
        for piece, box in enumerate(boxes):
            root = self._find(piece)
            if root not in merged:
                merged[root] = list(box)
                continue
            into = merged[root]
            into[0], into[1] = min(into[0], box[0]), min(into[1], box[1])
            into[2], into[3] = max(into[2], box[2]), max(into[3], box[3])
            into[4] += box[4]
        found = [
            Region(self._label[root], b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1, b[4])
            for root, b in merged.items()
        ]
        return sorted(found, key=lambda r: (r.label, r.y, r.x))
