"""Damage maps for conservators: a registered model applied to scans of any size.

A scan is read, predicted and written a band of rows at a time (libvips decodes and encodes
in strips), so memory does not grow with its area. Per input `STEM.ext`, in the output
folder: `STEM.png` (label mask, mode L, the input's size, values = class ids),
`STEM_overlay.tif` (the class colours blended over the scan as a tiled pyramidal TIFF, which
desktop and web viewers open at any zoom), `STEM_legend.png` (the classes found, with area
%), `STEM_iiif/` (IIIF tiles of the scan and of the damage layers, a IIIF Presentation 3
manifest and a local viewer page) and `STEM.json` (area % and connected regions per class
with their bounding boxes, in mm^2 too when the scan declares its resolution; image size,
model, backend). Every file appears under its name whole or not at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from heritageseg.core.classes import CLASSES, OVERLAY_ALPHA, palette
from heritageseg.core.config import MAX_PIXELS_OPTION, PREDICT_DEFAULTS, PredictConfig
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_file, atomic_write_bytes, write_json
from heritageseg.data.images import (
    ImageError,
    MaskPng,
    Scan,
    image_files,
    open_scan,
    streamed_image,
)
from heritageseg.infer.regions import RegionCounter

_MM_PER_INCH = 25.4
# Regions listed with their boxes per class, the largest first: a noisy map of a large scan
# has millions of specks, all counted, none worth a line each.
REGIONS_LISTED = 1000


def registry_reference(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version number) of a `models:/NAME@alias` or `models:/NAME/N` URI (the
    one not given is None); None for any other URI (a run or a folder)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))?", uri)
    return match.groups() if match else None  # type: ignore[return-value]


def model_identity(uri: str) -> tuple[str, str | None]:
    """(registered name, version) of a `models:/NAME@alias` or `models:/NAME/N` URI; for any
    other URI (a run or a folder) the URI itself and no version."""
    reference = registry_reference(uri)
    if reference is None:
        return uri, None
    name, alias, number = reference
    if number:
        return name, number
    from mlflow.tracking import MlflowClient

    if alias:
        return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
    return name, None


def damage_report(counter: RegionCounter, scan: Scan, name: str, version: str | None) -> dict:
    """Per class: pixels, area %, 8-connected regions with their bounding boxes
    ([x, y, width, height]) and, when the scan declares its resolution, areas in mm^2."""
    total = scan.width * scan.height
    mm2 = None if scan.dpi is None else (_MM_PER_INCH / scan.dpi[0]) * (_MM_PER_INCH / scan.dpi[1])
    by_label: dict[int, list] = {}
    for region in counter.regions():  # the REGIONS_LISTED largest of each class
        by_label.setdefault(region.label, []).append(region)
    classes = {}
    for entry in CLASSES:
        regions = by_label.get(entry.id, [])
        pixels = int(counter.pixels[entry.id])
        classes[entry.name] = {
            "id": entry.id, "pixels": pixels, "area_pct": 100.0 * pixels / total,
            "area_mm2": None if mm2 is None else pixels * mm2,
            "regions": int(counter.counts[entry.id]), "bbox": _box(counter, entry.id),
        }  # fmt: skip
        if entry.id != 0:  # Clean's pieces are not damage: counted, not listed
            classes[entry.name]["region_boxes"] = [
                {
                    "bbox": [r.x, r.y, r.width, r.height],
                    "pixels": r.pixels,
                    "area_mm2": None if mm2 is None else r.pixels * mm2,
                }
                for r in regions
            ]
    damaged = int(counter.pixels[1 : len(CLASSES)].sum())
    return {
        "image": scan.name,
        "width": scan.width,
        "height": scan.height,
        "resolution_dpi": None if scan.dpi is None else list(scan.dpi),
        "model": {"name": name, "version": version},
        "damage_area_pct": 100.0 * damaged / total,
        "damage_area_mm2": None if mm2 is None else damaged * mm2,
        "classes": classes,
    }


def _box(counter: RegionCounter, label: int) -> list[int] | None:
    box = counter.extent(label)
    return None if box is None else [box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1]


def write_mask(segmenter, scan: Scan, path: Path, progress: tqdm) -> RegionCounter:
    """Predict `scan` band by band into a PNG at `path`, counting pixels and regions."""
    counter = RegionCounter(listed=REGIONS_LISTED)
    with atomic_file(path) as temp, temp.open("wb") as stream:
        png = MaskPng(stream, scan.width, scan.height)
        for top, band in segmenter.bands(scan.rows(), scan.height, scan.width, progress.update):
            png.write(np.ascontiguousarray(band))
            counter.add(top, band)
        png.close()
    counter.finish()
    return counter


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


@contextlib.contextmanager
def _free_memory_returned(every: float = 0.1) -> Iterator[None]:
    """Give the pages malloc holds free back to the system every `every` seconds while the
    block runs. Without it the peak RSS grew with the scan's width: buffers the size of a
    band, freed and allocated again by libvips's threads (decoding, the TIFF and IIIF
    pyramids) and by the sweep, leave free pages in glibc's heaps."""
    libc, stop = _libc(), threading.Event()

    def trim() -> None:
        while not stop.wait(every):
            libc.malloc_trim(0)

    thread = threading.Thread(target=trim, name="malloc-trim", daemon=True)
    if libc is not None:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def damage_colours(mask):
    """(colours, damaged) of a libvips label mask: the published class colours, and 255
    where a pixel is not Clean (the unlabelled 255 included, in its own colour)."""
    import pyvips

    lut = pyvips.Image.new_from_array(palette().reshape(1, 256, 3), interpretation="srgb")
    return mask.maplut(lut), mask != 0


def overlay(pixels, mask):
    """libvips pipeline: the class colours blended over `pixels` where `mask` is not Clean."""
    colours, damaged = damage_colours(mask)
    mixed = (pixels * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA).rint().cast("uchar")
    return damaged.ifthenelse(mixed, pixels)


def write_overlay(scan: Scan, mask_png: Path, path: Path) -> None:
    """The overlay as a tiled pyramidal TIFF (JPEG tiles, 256 px), read as it is written."""
    picture = overlay(scan.pixels, _mask_image(mask_png))
    big = scan.width * scan.height * 3 > 3 << 30  # classic TIFF ends at 4 GiB of offsets
    with atomic_file(path) as temp:
        picture.tiffsave(
            str(temp), tile=True, pyramid=True, compression="jpeg", Q=90, tile_width=256,
            tile_height=256, bigtiff=big,
        )  # fmt: skip


def legend(report: dict) -> Image.Image:
    """The classes found, each with its colour, area % and number of regions."""
    entries = [(n, c) for n, c in report["classes"].items() if c["pixels"] and c["id"] != 0]
    entries = entries or [("no damage found", None)]
    font = ImageFont.load_default(size=18)
    line = int(font.size * 1.6)
    canvas = Image.new("RGB", (int(font.size * 22), line * (len(entries) + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    x = line // 2
    draw.text((x, line // 2), "Damage (area %)", fill="black", font=font)
    by_name = {c.name: c for c in CLASSES}
    for row, (name, entry) in enumerate(entries, start=1):
        y = line // 2 + row * line
        if entry is not None:
            draw.rectangle([x, y, x + font.size, y + font.size], fill=by_name[name].rgb,
                           outline="black")  # fmt: skip
            name = f"{name}  {entry['area_pct']:.2f}%  ({entry['regions']} regions)"
        draw.text((x + int(font.size * 1.5), y), name, fill="black", font=font)
    return canvas


def _png(picture: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_damage_maps(
    images: Sequence[Path],
    model_uri: str,
    out: Path,
    backend: str | None = None,
    *,
    window: PredictConfig = PREDICT_DEFAULTS,
    on_error: str = "stop",
    iiif_base: str | None = None,
) -> tuple[list[dict], list[str]]:
    """Predict every image (files, or the images in a folder) with the pyfunc model at
    `model_uri` (on `backend`, default: the model's own; with the sliding `window` of
    params.yaml's `predict`) and write the outputs of each.

    A bad image stops the run with its message (`on_error="stop"`) or is skipped and listed
    in the failures returned beside the reports (`"skip"`). `iiif_base` is the URL the
    `STEM_iiif` folders will be published under (default: their file:// location)."""
    files = _checked_inputs(images, on_error)
    segmenter = _load_segmenter(model_uri, backend, window)
    name, version = model_identity(model_uri)
    reports, failures = [], []
    for path in tqdm(files, desc="damage maps", unit="img"):
        try:
            with _free_memory_returned():
                report = _map_one(segmenter, path, out, window, name, version, iiif_base)
        except ImageError as exc:
            if on_error == "stop":
                raise
            failures.append(str(exc))
            continue
        reports.append(report)
    return reports, failures


def _checked_inputs(images: Sequence[Path], on_error: str) -> list[Path]:
    files = image_files(list(images))
    missing = [str(p) for p in files if not p.is_file()]
    if missing and on_error == "stop":  # before the model loads and any image is mapped
        raise HeritagesegError(f"image(s) not found: {', '.join(missing)}")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise HeritagesegError(
            f"inputs share the file stem(s) {', '.join(twice)}; their outputs would collide: "
            "rename one or map them into separate --out folders"
        )
    return files


def _load_segmenter(model_uri: str, backend: str | None, window: PredictConfig):
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise HeritagesegError(f"cannot load model {model_uri}: {exc}") from None
    segmenter = model.unwrap_python_model().segmenter
    segmenter.use_window(window)
    if backend is not None:
        segmenter.use_backend(backend)
    return segmenter


def _map_one(segmenter, path: Path, out: Path, window: PredictConfig, name: str,
             version: str | None, iiif_base: str | None) -> dict:  # fmt: skip
    from heritageseg.stages.iiif import write_iiif

    first = open_scan(path, max_pixels=window.max_pixels, name=str(path), option=MAX_PIXELS_OPTION)
    mask_png = out / f"{path.stem}.png"
    tiles = segmenter.tiles(first.height, first.width)
    with tqdm(total=tiles, desc=path.name, unit="tile", leave=False) as progress:
        counter = write_mask(segmenter, first, mask_png, progress)
    report = {**damage_report(counter, first, name, version), "backend": segmenter.backend,
              "window": {"tile": segmenter.tile, "overlap": segmenter.overlap}}  # fmt: skip
    write_overlay(first.again(), mask_png, out / f"{path.stem}_overlay.tif")
    atomic_write_bytes(out / f"{path.stem}_legend.png", _png(legend(report)))
    write_iiif(first.again().pixels, _mask_image(mask_png), report, out, path.stem, iiif_base)
    write_json(out / f"{path.stem}.json", report)
    return report


def _mask_image(mask_png: Path):
    return streamed_image(mask_png, access="sequential", fail_on="error")


def summary_line(report: dict) -> str:
    top = sorted(((c["area_pct"], n) for n, c in report["classes"].items() if c["id"]),
                 reverse=True)[:3]  # fmt: skip
    worst = ", ".join(f"{n} {a:.1f}%" for a, n in top if a > 0) or "none"
    return (f"{Path(report['image']).name}: {report['width']}x{report['height']}, damage "
            f"{report['damage_area_pct']:.1f}% ({worst})")  # fmt: skip
