"""The uint8 memmap cache the training Dataset reads, built once from the raw shards.

The reference preloaded the whole set as float32 into RAM (30 GB, 30 minutes per job). Here
images and masks are decoded once, in parallel, into two `.npy` arrays of uint8 that every
job memory-maps: parallel jobs on one node share the OS page cache, at a quarter of float32's
memory, and start at once.

Two modes: `resize` (each image scaled to fit a square, aspect kept, padding labelled 255)
and `tile` (native-resolution tiles with overlap; all-background tiles dropped), so thin
damage that vanishes when a 4,000 px image is shrunk to 384 px survives.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from heritageseg.core.classes import BACKGROUND_ID
from heritageseg.core.config import PrepareConfig
from heritageseg.core.errors import DataError
from heritageseg.core.fileio import atomic_dir, write_json
from heritageseg.core.paths import CACHE_IMAGES, CACHE_INDEX, CACHE_INFO, CACHE_MASKS
from heritageseg.core.readers import (
    BrokenFile,
    read_csv_table,
    read_json,
    require,
    require_file,
)
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.data.artefact import (
    RawRecord,
    Record,
    decode_annotation,
    decode_record,
    iter_parquet,
    read_metadata,
)
from heritageseg.data.splits import check_no_leakage, read_split

INDEX_COLUMNS = [
    "row", "id", "split", "material", "content",
    "y", "x", "height", "width", "source_height", "source_width", "scale",
]  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """One cached sample: a resized image or a tile, and where it sits in its source."""

    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) uint8, padding = 255
    y: int  # top-left of the covered region, in source pixels (tiles) or cache pixels (resize)
    x: int
    height: int  # extent of real content inside the piece, in cache pixels
    width: int
    scale: float  # cache pixels per source pixel


# ---------------------------------------------------------------- geometry


def resize_to_square(image: np.ndarray, mask: np.ndarray, size: int) -> Piece:
    """Fit the longest side to `size`, keep the aspect, pad bottom/right (image 0, mask 255).

    Images are resampled with an antialiasing filter, masks with nearest neighbour so that no
    label is invented between two classes.
    """
    height, width = mask.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    labels = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.Resampling.NEAREST))
    out_image = np.zeros((size, size, 3), dtype=np.uint8)
    out_mask = np.full((size, size), BACKGROUND_ID, dtype=np.uint8)
    out_image[:new_h, :new_w] = small
    out_mask[:new_h, :new_w] = labels
    return Piece(out_image, out_mask, 0, 0, new_h, new_w, scale)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by >= `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tile_boxes(mask: np.ndarray, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners of the tiles that hold at least one labelled (non-255) pixel."""
    height, width = mask.shape
    labelled = mask != BACKGROUND_ID
    return [
        (y, x)
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
        if labelled[y : y + tile, x : x + tile].any()
    ]


def cut_tile(image: np.ndarray, mask: np.ndarray, y: int, x: int, tile: int) -> Piece:
    crop_mask = mask[y : y + tile, x : x + tile]
    height, width = crop_mask.shape
    out_image = np.zeros((tile, tile, 3), dtype=np.uint8)
    out_mask = np.full((tile, tile), BACKGROUND_ID, dtype=np.uint8)
    out_image[:height, :width] = image[y : y + tile, x : x + tile]
    out_mask[:height, :width] = crop_mask
    return Piece(out_image, out_mask, y, x, height, width, 1.0)


def pieces_of(record: Record, cfg: PrepareConfig) -> list[Piece]:
    """What the cache stores of one decoded record."""
    if cfg.mode == "resize":
        return [resize_to_square(record.image, record.mask, cfg.size)]
    boxes = tile_boxes(record.mask, cfg.tile_size, cfg.tile_overlap)
    return [cut_tile(record.image, record.mask, y, x, cfg.tile_size) for y, x in boxes]


def _count_job(job: tuple[RawRecord, PrepareConfig]) -> int:
    raw, cfg = job
    return len(tile_boxes(decode_annotation(raw), cfg.tile_size, cfg.tile_overlap))


def _pieces_job(job: tuple[RawRecord, PrepareConfig]) -> tuple[RawRecord, tuple, list[Piece]]:
    raw, cfg = job
    record = decode_record(raw)
    return _slim(raw), record.mask.shape, pieces_of(record, cfg)


def _slim(raw: RawRecord) -> RawRecord:
    """The record without its bytes, so results sent back between processes stay small."""
    return RawRecord(id=raw.id, origin=raw.origin, image=None, annotation=None,
                     material=raw.material, content=raw.content)  # fmt: skip


# ---------------------------------------------------------------- building


def _parallel(function: Callable, jobs: Iterable, workers: int, total: int, desc: str) -> Iterator:
    if workers <= 1:
        yield from tqdm(map(function, jobs), total=total, desc=desc, mininterval=1.0)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.imap(function, jobs, chunksize=1)
        yield from tqdm(results, total=total, desc=desc, mininterval=1.0)


def _check_ids_match(raw_dir: Path, split_csv: Path, split_ids: pd.Index) -> None:
    raw_ids = pd.Index(read_metadata(raw_dir, columns=("id",))["id"])
    unknown = raw_ids.difference(split_ids)
    if len(unknown) or len(raw_ids) != len(split_ids):
        raise DataError(
            f"{split_csv} does not match {raw_dir} ({len(split_ids)} ids listed, "
            f"{len(raw_ids)} records, e.g. {list(unknown[:3])} not listed): the split is "
            f"stale or cut short; {rebuild_hint('split')}"
        )


def build_cache(raw_dir: Path, split_csv: Path, out: Path, cfg: PrepareConfig) -> dict:
    """Decode every record once into `out/images.npy`, `out/masks.npy` and `out/index.csv`."""
    splits = read_split(split_csv).set_index("id")["split"]
    _check_ids_match(raw_dir, split_csv, splits.index)
    workers = cfg.workers or os.cpu_count() or 1
    total = len(splits)

    def jobs() -> Iterator[tuple[RawRecord, PrepareConfig]]:
        return ((raw, cfg) for raw in iter_parquet(raw_dir))

    rows = total
    if cfg.mode == "tile":
        rows = sum(_parallel(_count_job, jobs(), workers, total, "prepare: count tiles"))
    if rows == 0:
        raise DataError(f"{raw_dir}: no tile holds a labelled pixel; nothing to cache")
    side = cfg.size if cfg.mode == "resize" else cfg.tile_size
    with atomic_dir(out) as staging:
        images = np.lib.format.open_memmap(
            staging / CACHE_IMAGES, mode="w+", dtype=np.uint8, shape=(rows, side, side, 3)
        )
        masks = np.lib.format.open_memmap(
            staging / CACHE_MASKS, mode="w+", dtype=np.uint8, shape=(rows, side, side)
        )
        index: list[dict] = []
        for raw, shape, pieces in _parallel(_pieces_job, jobs(), workers, total, "prepare"):
            for piece in pieces:
                row = len(index)
                images[row] = piece.image
                masks[row] = piece.mask
                index.append(_index_row(row, raw, splits[raw.id], shape, piece))
        images.flush()
        masks.flush()
        del images, masks
        frame = pd.DataFrame(index, columns=INDEX_COLUMNS)
        check_no_leakage(frame[["id", "split"]].drop_duplicates())
        frame.to_csv(staging / CACHE_INDEX, index=False)
        info = {"mode": cfg.mode, "side": side, "rows": rows, "records": total,
                "tile_overlap": cfg.tile_overlap if cfg.mode == "tile" else None,
                "rows_per_split": frame["split"].value_counts().sort_index().to_dict()}  # fmt: skip
        write_json(staging / CACHE_INFO, info)
    return info


def _index_row(row: int, raw: RawRecord, split: str, shape: tuple, piece: Piece) -> dict:
    return {
        "row": row, "id": raw.id, "split": split,
        "material": raw.material, "content": raw.content,
        "y": piece.y, "x": piece.x, "height": piece.height, "width": piece.width,
        "source_height": shape[0], "source_width": shape[1], "scale": round(piece.scale, 8),
    }  # fmt: skip


# ---------------------------------------------------------------- reading


_INFO_KEYS = ("mode", "side", "rows", "records", "rows_per_split")
_INDEX_TYPES = {"id": str, "split": str, "material": str, "content": str}


def read_info(folder: Path) -> dict:
    """cache.json: how the cache was built and how many rows of what side it holds."""
    path, hint = Path(folder) / CACHE_INFO, rebuild_hint("cache")
    info = read_json(path, hint, _INFO_KEYS)
    sizes = (info["rows"], info["side"])
    whole = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)
    require(whole, path, f"rows {info['rows']!r} and side {info['side']!r} must be whole", hint)
    return info


def read_index(folder: Path) -> pd.DataFrame:
    """index.csv, one row per cached sample, checked against cache.json's row count."""
    path, hint = Path(folder) / CACHE_INDEX, rebuild_hint("cache")
    index = read_csv_table(path, INDEX_COLUMNS, hint, dtype=_INDEX_TYPES)
    rows = read_info(folder)["rows"]
    require(len(index) == rows, path, f"lists {len(index)} samples, cache.json {rows}", hint)
    valid = index["row"].dtype.kind == "i" and index["row"].between(0, rows - 1).all()
    require(valid, path, f"column row must hold the rows 0..{rows - 1}", hint)
    return index


def cache_array(folder: Path, name: str) -> np.ndarray:
    """images.npy or masks.npy memory-mapped, its shape checked against cache.json (a file cut
    short would fail only when mapped, with numpy's "mmap length is greater than file size")."""
    path, hint = Path(folder) / name, rebuild_hint("cache")
    info = read_info(folder)
    rows, side = info["rows"], info["side"]
    shape = (rows, side, side, 3) if name == CACHE_IMAGES else (rows, side, side)
    require_file(path, hint)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError):  # numpy's words would be about pickle or mmap
        raise BrokenFile(path, "is not a whole .npy array: truncated or corrupt", hint) from None
    expected = f"uint8 {shape}, from cache.json"
    ok = isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.shape == shape
    require(ok, path, f"holds {getattr(array, 'dtype', '?')} {getattr(array, 'shape', '?')}, "
            f"not {expected}", hint)  # fmt: skip
    return array


def iter_masks(folder: Path, split: str, chunk: int = 64) -> Iterator[np.ndarray]:
    """The masks of one split, a chunk of rows at a time straight from the memmap."""
    rows = read_index(folder).query("split == @split")["row"].to_numpy()
    masks = cache_array(folder, CACHE_MASKS)
    for start in range(0, len(rows), chunk):
        yield np.asarray(masks[rows[start : start + chunk]])


class CacheDataset:
    """The samples of one split, read from the memmap: a map-style dataset for DataLoader.

    The arrays are checked and mapped when it is made; a copy sent to a DataLoader worker
    leaves them behind and maps them again on first read, so every worker maps the files
    itself and all of them share the page cache. It needs only `__len__` and `__getitem__`,
    so this module does not import torch: `prepare`, `weights` and their spawned workers
    start without paying torch's import time.
    """

    def __init__(self, folder: str | Path, split: str | None = None, transform=None):
        self.folder = Path(folder)
        index = read_index(self.folder)
        if split is not None:
            index = index[index["split"] == split].reset_index(drop=True)
        self.index = index
        self.rows = index["row"].to_numpy()
        self.transform = transform
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._map()  # now, so a broken array fails here and not in a DataLoader worker

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict:
        if self._images is None:
            self._map()
        row = int(self.rows[item])
        image = np.array(self._images[row])
        mask = np.array(self._masks[row])
        if self.transform is None:
            return {"image": image, "mask": mask, "row": row}
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"].long(), "row": row}

    def _map(self) -> None:
        self._images = cache_array(self.folder, CACHE_IMAGES)
        self._masks = cache_array(self.folder, CACHE_MASKS)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_masks": None}
