"""The one image reader: ingest, `predict` and the served model turn a file into RGB pixels here.

Every PIL mode becomes (H, W, 3) uint8 RGB the same way wherever an image enters the project:
16/32-bit greyscale is scaled, not clipped; palette, alpha, CMYK and the rest are converted.
Sizes are checked from the header, before any pixel is decoded, against a limit the caller
sets deliberately; PIL's own limit is raised for the block and restored, never switched off.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from heritageseg.core.errors import HeritagesegError

# The suffixes `predict DIR` takes from a folder (what PIL reads of a conservation scan).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageError(HeritagesegError):
    """An input that is no readable image, or larger than the pixel limit."""


class ImageTooLarge(ImageError):
    """An image whose header declares more pixels than the limit allows."""


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB. 16/32-bit greyscale is scaled, not clipped."""
    if image.mode in _WIDE_GREY:
        wide = np.asarray(image, dtype=np.float64)
        scale = 257.0 if wide.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGBA" if image.mode in ("P", "PA") else image.mode)
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


@contextlib.contextmanager
def pixel_limit(limit: int) -> Iterator[None]:
    """Accept images up to `limit` pixels and refuse larger ones, for this block only."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def read_rgb(source: Path | bytes, *, max_pixels: int, name: str, option: str) -> np.ndarray:
    """The pixels of an image file (or its bytes) as RGB; `name` and `option` (the setting
    that raises the limit) go into every message."""
    data = source if isinstance(source, bytes) else _file_bytes(Path(source), name)
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes): not an image")
    with pixel_limit(max_pixels):
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLarge(_too_large(name, max_pixels, option, data)) from None
        except UnidentifiedImageError:
            raise ImageError(
                f"{name}: not an image PIL can read (PNG, JPEG, TIFF, BMP, WebP)"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name}: unreadable image header ({exc})") from None
        try:
            with image:
                return to_rgb(image)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(
                f"{name}: the image does not decode ({exc}); is it truncated?"
            ) from None


def image_files(inputs: list[Path]) -> list[Path]:
    """Files as given, and the images (by suffix, sorted) inside any folder among them."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{item}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
            files += found
        else:
            files.append(item)
    return files


def _file_bytes(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read the file ({exc.strerror or exc})") from None


def _too_large(name: str, max_pixels: int, option: str, data: bytes) -> str:
    width, height = _declared_size(data)
    size = f"{width} x {height} = {width * height:,} pixels" if width else "its header"
    return (f"{name}: {size} is over the limit of {max_pixels:,} pixels; raise {option} "
            f"to map it (memory and time grow with the area)")  # fmt: skip


def _declared_size(data: bytes) -> tuple[int, int]:
    """The size the header declares, read with PIL's limit left as it is, but warnings off
    (the header only: nothing is decoded); (0, 0) when even that fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = max(previous or 0, 1 << 62)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Exception:
            return 0, 0
        finally:
            Image.MAX_IMAGE_PIXELS = previous
