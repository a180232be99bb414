"""Regions counted band by band equal scipy's labelling of the whole mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from heritageseg.infer.regions import RegionCounter

EIGHT = np.ones((3, 3), dtype=bool)


def _whole_mask_regions(mask: np.ndarray) -> list[tuple]:
    found = []
    for label in np.unique(mask):
        numbered, _ = ndimage.label(mask == label, structure=EIGHT)
        sizes = np.bincount(numbered.ravel())
        for index, (rows, cols) in enumerate(ndimage.find_objects(numbered), start=1):
            found.append((int(label), cols.start, rows.start, cols.stop - cols.start,
                          rows.stop - rows.start, int(sizes[index])))  # fmt: skip
    return sorted(found, key=lambda r: (r[0], r[2], r[1]))


def _counted(mask: np.ndarray, bands: list[int], listed: int | None = None) -> RegionCounter:
    counter, top = RegionCounter(listed=listed), 0
    for size in bands:
        counter.add(top, mask[top : top + size])
        top += size
    assert top == len(mask)
    counter.finish()
    return counter


@pytest.mark.parametrize("seed", range(6))
def test_band_by_band_regions_equal_whole_mask_labelling(seed):
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array([0, 0, 0, 1, 3, 255], np.uint8), (57, 41))
    mask = ndimage.median_filter(mask, 3) if seed % 2 else mask  # blobs as well as noise
    cuts = np.sort(rng.choice(np.arange(1, 57), 5, replace=False))
    bands = np.diff(np.concatenate([[0], cuts, [57]])).tolist()
    counter = _counted(mask, bands)
    got = [(r.label, r.x, r.y, r.width, r.height, r.pixels) for r in counter.regions()]
    assert got == _whole_mask_regions(mask)
    assert counter.pixels[:256].tolist() == np.bincount(mask.ravel(), minlength=256).tolist()


def test_a_diagonal_touch_across_a_band_edge_joins_two_pieces():
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 0] = mask[2, 1] = 5  # diagonal neighbours, one on each side of the cut
    counter = _counted(mask, [2, 2])
    fives = [r for r in counter.regions() if r.label == 5]
    assert len(fives) == 1 and (fives[0].x, fives[0].y, fives[0].width, fives[0].height) == (
        0,
        1,
        2,
        2,
    )
    assert fives[0].pixels == 2


def test_a_u_shape_joined_two_bands_later_is_one_region():
    mask = np.zeros((6, 5), np.uint8)
    mask[0:5, 0] = mask[0:5, 4] = mask[4:6, 0:5] = 2  # two arms meeting only at the bottom
    counter = _counted(mask, [1, 1, 1, 1, 1, 1])
    assert [r.pixels for r in counter.regions() if r.label == 2] == [int((mask == 2).sum())]


def test_bands_out_of_order_are_refused():
    counter = RegionCounter()
    counter.add(0, np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="expected row 3"):
        counter.add(5, np.zeros((3, 4), np.uint8))
