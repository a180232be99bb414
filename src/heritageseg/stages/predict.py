"""Damage maps for conservators: a registered model applied to images of any size.

Per input `STEM.ext`, in the output folder: `STEM.png` (label mask, mode L, the input's size,
values = class ids), `STEM_overlay.png` (the published class colours blended over the image,
with a legend of the classes found) and `STEM.json` (area % and connected regions per class,
image size, model name and version).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from tqdm import tqdm

from heritageseg.core.classes import CLASSES, OVERLAY_ALPHA, colourise
from heritageseg.core.config import MAX_PIXELS_OPTION, PredictConfig
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_write_bytes, write_json
from heritageseg.data.images import ImageError, image_files, read_rgb

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
_OVERLAY_BAND = 1024  # rows blended at a time


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


def damage_report(mask: np.ndarray, name: str, version: str | None, source: str) -> dict:
    """Area % of the image and number of 8-connected regions, per class."""
    total = mask.size
    classes = {}
    for entry in CLASSES:
        where = mask == entry.id
        pixels = int(where.sum())
        regions = int(ndimage.label(where, structure=_EIGHT_NEIGHBOURS)[1]) if pixels else 0
        classes[entry.name] = {"id": entry.id, "pixels": pixels,
                               "area_pct": 100.0 * pixels / total, "regions": regions}  # fmt: skip
    damaged = int(((mask != 0) & (mask < len(CLASSES))).sum())
    return {
        "image": source,
        "width": int(mask.shape[1]),
        "height": int(mask.shape[0]),
        "model": {"name": name, "version": version},
        "damage_area_pct": 100.0 * damaged / total,
        "classes": classes,
    }


def overlay(image: np.ndarray, mask: np.ndarray, report: dict) -> Image.Image:
    """The image with damage in its class colours and a legend of the classes present.

    Blended a band of rows at a time, in place in a uint8 copy: full-size float copies of
    the image and of its colours cost ~25 bytes a pixel (3.3 GB at 133 Mpx)."""
    picture = image.copy()
    for top in range(0, mask.shape[0], _OVERLAY_BAND):
        rows = slice(top, top + _OVERLAY_BAND)
        damaged = mask[rows] != 0
        part = picture[rows]
        mixed = (1 - OVERLAY_ALPHA) * part[damaged].astype(np.float32)
        mixed += OVERLAY_ALPHA * colourise(mask[rows])[damaged].astype(np.float32)
        part[damaged] = mixed.round().astype(np.uint8)
    picture = Image.fromarray(picture)
    present = [(n, c) for n, c in report["classes"].items() if c["pixels"] and c["id"] != 0]
    return _with_legend(picture, present or [("no damage found", None)])


def _with_legend(picture: Image.Image, entries: list[tuple[str, dict | None]]) -> Image.Image:
    font = ImageFont.load_default(size=max(12, min(28, picture.width // 50)))
    line = int(font.size * 1.6)
    legend_width = max(220, int(font.size * 18))
    canvas = Image.new("RGB", (picture.width + legend_width, max(picture.height,
                       line * (len(entries) + 2))), "white")  # fmt: skip
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = picture.width + line // 2
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
    max_pixels: int = PredictConfig().max_pixels,
    on_error: str = "stop",
) -> tuple[list[dict], list[str]]:
    """Predict every image (files, or the images in a folder) with the pyfunc model at
    `model_uri` (on `backend`, default: the model's own) and write the three files of each.

    A bad image stops the run with its message (`on_error="stop"`) or is skipped and listed
    in the failures returned beside the reports (`"skip"`)."""
    import mlflow.pyfunc

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
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise HeritagesegError(f"cannot load model {model_uri}: {exc}") from None
    segmenter = model.unwrap_python_model().segmenter
    if backend is not None:
        segmenter.use_backend(backend)
    name, version = model_identity(model_uri)
    reports, failures = [], []
    for path in tqdm(files, desc="damage maps", unit="img"):
        try:
            image = read_rgb(path, max_pixels=max_pixels, name=str(path), option=MAX_PIXELS_OPTION)
        except ImageError as exc:
            if on_error == "stop":
                raise
            failures.append(str(exc))
            continue
        mask = segmenter.labels(image)  # what model.predict does, without a PNG round trip
        report = {**damage_report(mask, name, version, str(path)), "backend": segmenter.backend}
        atomic_write_bytes(out / f"{path.stem}.png", _png(Image.fromarray(mask, mode="L")))
        atomic_write_bytes(out / f"{path.stem}_overlay.png", _png(overlay(image, mask, report)))
        write_json(out / f"{path.stem}.json", report)
        reports.append(report)
    return reports, failures


def summary_line(report: dict) -> str:
    top = sorted(((c["area_pct"], n) for n, c in report["classes"].items() if c["id"]),
                 reverse=True)[:3]  # fmt: skip
    worst = ", ".join(f"{n} {a:.1f}%" for a, n in top if a > 0) or "none"
    return (f"{Path(report['image']).name}: {report['width']}x{report['height']}, damage "
            f"{report['damage_area_pct']:.1f}% ({worst})")  # fmt: skip
