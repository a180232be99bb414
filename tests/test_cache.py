"""The uint8 memmap cache: both modes round-trip the decoded source, splits never leak."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from heritageseg.core.config import PrepareConfig, SplitConfig
from heritageseg.core.errors import DataError
from heritageseg.data.artefact import decode_record, iter_parquet, read_metadata
from heritageseg.data.cache import (
    CacheDataset,
    build_cache,
    iter_masks,
    read_index,
    resize_to_square,
    tile_starts,
)
from heritageseg.data.splits import write_splits

from .conftest import SYNTHETIC, make_raw, write_shards


@pytest.fixture(scope="module")
def split_dir(synthetic_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("splits")
    write_splits(read_metadata(synthetic_raw), SplitConfig(), out)
    return out


def _first_records(raw_dir, count):
    records = []
    for raw in iter_parquet(raw_dir):
        records.append(decode_record(raw))
        if len(records) == count:
            return records
    return records


def test_tile_starts_cover_the_length_with_the_overlap():
    assert tile_starts(100, 128, 16) == [0]
    assert tile_starts(300, 128, 32) == [0, 96, 172]
    for length in (129, 256, 1000):
        starts = tile_starts(length, 128, 32)
        assert starts[-1] + 128 == length
        assert all(b - a <= 96 for a, b in itertools.pairwise(starts))


def test_resize_keeps_aspect_and_labels_padding_as_background():
    image = np.full((50, 100, 3), 200, np.uint8)
    mask = np.full((50, 100), 3, np.uint8)
    piece = resize_to_square(image, mask, 64)
    assert piece.image.shape == (64, 64, 3) and piece.mask.shape == (64, 64)
    assert (piece.height, piece.width) == (32, 64)
    assert set(np.unique(piece.mask[:32])) == {3}
    assert set(np.unique(piece.mask[32:])) == {255}
    assert (piece.image[32:] == 0).all()


@pytest.fixture(scope="module")
def resize_cache(synthetic_raw, split_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "resize"
    build_cache(synthetic_raw, split_dir / "split.csv", out, PrepareConfig(size=96, workers=2))
    return out


def test_resize_cache_round_trips_the_decoded_source(synthetic_raw, resize_cache):
    index = read_index(resize_cache)
    images = np.load(resize_cache / "images.npy", mmap_mode="r")
    masks = np.load(resize_cache / "masks.npy", mmap_mode="r")
    assert len(index) == SYNTHETIC.n and images.shape == (SYNTHETIC.n, 96, 96, 3)
    assert images.dtype == np.uint8
    for row, record in enumerate(_first_records(synthetic_raw, 12)):
        expected = resize_to_square(record.image, record.mask, 96)
        assert index.loc[row, "id"] == record.raw.id
        np.testing.assert_array_equal(images[row], expected.image)
        np.testing.assert_array_equal(masks[row], expected.mask)
        assert (
            index.loc[row, "source_height"],
            index.loc[row, "source_width"],
        ) == record.mask.shape


def test_tile_cache_round_trips_at_native_resolution_and_never_leaks(
    synthetic_raw, split_dir, tmp_path
):
    out = tmp_path / "tiles"
    build_cache(
        synthetic_raw,
        split_dir / "split.csv",
        out,
        PrepareConfig(mode="tile", tile_size=160, tile_overlap=32, workers=2),
    )
    index = read_index(out)
    images = np.load(out / "images.npy", mmap_mode="r")
    masks = np.load(out / "masks.npy", mmap_mode="r")
    assert (index.groupby("id")["split"].nunique() == 1).all()
    split = pd.read_csv(split_dir / "split.csv").set_index("id")["split"]
    assert (index["split"] == index["id"].map(split)).all()
    for record in _first_records(synthetic_raw, 10):
        image = np.zeros_like(record.image)
        mask = np.full_like(record.mask, 255)
        for tile in index[index["id"] == record.raw.id].itertuples():
            h, w = tile.height, tile.width
            image[tile.y : tile.y + h, tile.x : tile.x + w] = images[tile.row][:h, :w]
            mask[tile.y : tile.y + h, tile.x : tile.x + w] = masks[tile.row][:h, :w]
            assert (masks[tile.row] != 255).any()  # all-background tiles are dropped
        labelled = record.mask != 255
        np.testing.assert_array_equal(mask[labelled], record.mask[labelled])
        np.testing.assert_array_equal(image[labelled], record.image[labelled])


def test_stale_split_is_refused_and_the_old_cache_kept(tmp_path):
    records = [make_raw(f"cstale{i:019d}") for i in range(3)]
    raw_dir = write_shards(tmp_path / "raw", records)
    (tmp_path / "split.csv").write_text("id,split,material,content\ncother,train,Paper,Line art\n")
    out = tmp_path / "cache"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(DataError, match="stale"):
        build_cache(raw_dir, tmp_path / "split.csv", out, PrepareConfig(size=32, workers=1))
    assert (out / "keep.txt").read_text() == "old"


def _to_tensors(image, mask):
    return {"image": torch.from_numpy(image).permute(2, 0, 1), "mask": torch.from_numpy(mask)}


def test_dataset_reads_one_split_with_transforms_and_pickles_without_the_map(resize_cache):
    dataset = CacheDataset(resize_cache, "val", transform=_to_tensors)
    assert 0 < len(dataset) < SYNTHETIC.n
    assert set(dataset.index["split"]) == {"val"}
    sample = dataset[0]
    assert tuple(sample["image"].shape) == (3, 96, 96)
    assert sample["mask"].dtype.is_floating_point is False and sample["mask"].dtype.itemsize == 8
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._images is None
    assert (clone[0]["mask"] == sample["mask"]).all()


def test_iter_masks_yields_every_train_row(resize_cache):
    train_rows = (read_index(resize_cache)["split"] == "train").sum()
    assert sum(len(chunk) for chunk in iter_masks(resize_cache, "train", chunk=16)) == train_rows
