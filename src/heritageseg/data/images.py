"""The one image reader: ingest, `predict` and the served model turn a file into RGB pixels here.

Every PIL mode becomes (H, W, 3) uint8 RGB the same way wherever an image enters the project:
16/32-bit greyscale is scaled, not clipped; palette, alpha, CMYK and the rest are converted.
Sizes are checked from the header, before any pixel is decoded, against a limit the caller
sets deliberately; PIL's own limit is raised for the block and restored, never switched off.

A scan larger than memory is read by `open_scan` instead: a libvips pipeline that decodes
the file top to bottom as rows are asked for (`ScanRows`), giving the same pixels as
`read_rgb` for every mode (the conversions are written as libvips operations, tested equal).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from heritageseg.core.errors import HeritagesegError

if TYPE_CHECKING:
    import pyvips

# The suffixes `predict DIR` takes from a folder (what PIL reads of a conservation scan).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# Below this a declared resolution is a writer's placeholder (PIL's TIFFs say 1 dpi), not a scan's.
_MIN_DPI = 10.0
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
            width, height = declared_size(data)
            raise ImageTooLarge(_too_large(name, max_pixels, option, width, height)) from None
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


def _too_large(name: str, max_pixels: int, option: str, width: int, height: int) -> str:
    size = f"{width} x {height} = {width * height:,} pixels" if width else "its header"
    return (f"{name}: {size} is over the limit of {max_pixels:,} pixels; raise {option} "
            f"to map it (memory and time grow with the area)")  # fmt: skip


def declared_size(data: bytes) -> tuple[int, int]:
    """The size the header declares; (0, 0) when even that fails."""
    return _pil_header(io.BytesIO(data))[0]


def _pil_header(source) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """(size, dpi) the header declares, read with PIL's limit out of the way but warnings off
    (the header only: nothing is decoded); ((0, 0), None) when even that fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = max(previous or 0, 1 << 62)
            with Image.open(source) as image:
                dpi = image.info.get("dpi")
                valid = dpi is not None and len(dpi) == 2 and min(map(float, dpi)) >= _MIN_DPI
                return image.size, (float(dpi[0]), float(dpi[1])) if valid else None
        except Exception:
            return (0, 0), None
        finally:
            Image.MAX_IMAGE_PIXELS = previous


# ---------------------------------------------------------------- scans larger than memory


@dataclass(frozen=True)
class Scan:
    """An image file opened for reading top to bottom: `pixels` is a libvips pipeline of
    (height, width, 3) uint8 RGB that decodes as it is read; `dpi` is the resolution the file
    declares (None when it declares none: areas then stay in pixels)."""

    path: Path
    name: str
    pixels: pyvips.Image
    dpi: tuple[float, float] | None
    grey_scale: float | None = None  # 16-bit greyscale: the divisor its maximum chose

    @property
    def width(self) -> int:
        return self.pixels.width

    @property
    def height(self) -> int:
        return self.pixels.height

    def rows(self) -> ScanRows:
        return ScanRows(self.pixels, self.name)

    def again(self) -> Scan:
        """The same scan opened afresh for another pass (a sequential pipeline is read once),
        its size, resolution and greyscale divisor already known."""
        image = _vips_open(self.path, self.name)
        pixels, _ = _vips_rgb(image, self.path, self.name, self.grey_scale)
        return dataclasses.replace(self, pixels=pixels)


def open_scan(path: Path, *, max_pixels: int, name: str, option: str) -> Scan:
    """`path` as a `Scan`, its size checked against `max_pixels` from the header (nothing is
    decoded here); every pixel it gives equals `read_rgb`'s."""
    path = Path(path)
    if _file_size(path, name) == 0:
        raise ImageError(f"{name}: empty file (0 bytes): not an image")
    (width, height), dpi = _pil_header(path)  # the header alone, before libvips opens it
    if width * height > max_pixels:
        raise ImageTooLarge(_too_large(name, max_pixels, option, width, height))
    image = _vips_open(path, name)
    if image.width * image.height > max_pixels:  # a format PIL cannot read the header of
        raise ImageTooLarge(_too_large(name, max_pixels, option, image.width, image.height))
    pixels, grey_scale = _vips_rgb(image, path, name)
    return Scan(path, name, pixels, dpi, grey_scale)


class ScanRows:
    """Rows [top, bottom) of a pipeline, asked for top to bottom; the rows the last request
    shares with the next are kept, so every row is decoded once."""

    def __init__(self, image: pyvips.Image, name: str):
        import pyvips

        # the image is kept: a region does not keep the Python object, whose references
        # hold the file stream libvips reads through (`streamed_image`)
        self.image, self.region = image, pyvips.Region.new(image)
        self.name, self.width = name, image.width
        self.top, self.kept = 0, np.zeros((0, image.width, 3), np.uint8)

    def __call__(self, top: int, bottom: int) -> np.ndarray:
        import pyvips

        if top < self.top:
            raise ValueError(f"rows are read top to bottom: {top} after {self.top}")
        kept = self.kept[top - self.top :]
        start = top + len(kept)
        if bottom > start:
            try:
                data = self.region.fetch(0, start, self.width, bottom - start)
            except pyvips.Error as exc:
                raise ImageError(
                    f"{self.name}: the image does not decode at row {start} "
                    f"({_vips_reason(exc)}); is it truncated?"
                ) from None
            fresh = np.frombuffer(data, np.uint8).reshape(bottom - start, self.width, 3)
            kept = np.concatenate([kept, fresh]) if len(kept) else fresh
        self.top, self.kept = top, kept
        return kept[: bottom - top]


def streamed_image(path: Path, **options) -> pyvips.Image:
    """The libvips image of a file read through a stream, not a memory map. libvips maps a
    file it opens by name, and every page of it read counts in the process's RSS: a 174 MB
    JPEG of a 500 Mpx scan added 170 MB to the peak of each pass over it. Read, the pages stay
    in the page cache. `options` go to the loader (access, fail_on)."""
    import pyvips

    stream = Path(path).open("rb")  # noqa: SIM115 - closed with the last image made from it
    source = pyvips.SourceCustom()
    source.on_read(stream.read)
    source.on_seek(stream.seek)
    image = pyvips.Image.new_from_source(source, "", **options)
    image._references.append((source, stream))  # alive as long as an image made from it
    return image


def _vips_open(path: Path, name: str) -> pyvips.Image:
    import pyvips

    pyvips.cache_set_max(0)  # one pass over each scan: nothing to reuse, memory to keep
    try:
        return streamed_image(path, access="sequential", fail_on="error")
    except pyvips.Error as exc:
        if "not in a known format" in str(exc) or "not a known file format" in str(exc):
            raise ImageError(
                f"{name}: not an image libvips can read (PNG, JPEG, TIFF, ...)"
            ) from None
        raise ImageError(f"{name}: unreadable image header ({_vips_reason(exc)})") from None


def _vips_rgb(
    image: pyvips.Image, path: Path, name: str, grey_scale: float | None = None
) -> tuple[pyvips.Image, float | None]:
    """`image` as 3-band uint8 RGB, converted the way `to_rgb` converts PIL's modes, and the
    divisor of a 16-bit greyscale image (from its maximum: a pass of its own unless given)."""
    bands, fmt = image.bands, image.format
    if fmt == "uchar" and image.interpretation == "cmyk" and bands == 4:
        return _cmyk_to_rgb(image), None
    if fmt == "uchar":
        grey = bands < 3
        rgb = image[0].bandjoin([image[0], image[0]]) if grey else image.extract_band(0, n=3)
        return rgb, None
    if fmt == "ushort" and bands < 3:  # 16-bit greyscale: scaled by the whole image's maximum
        if grey_scale is None:
            grey_scale = 257.0 if _vips_open(path, name)[0].max() > 255 else 1.0
        grey = (image[0] / grey_scale).rint().cast("uchar")
        return grey.bandjoin([grey, grey]), grey_scale
    if fmt == "ushort":  # 48-bit RGB(A): PIL keeps the high byte
        return (image.extract_band(0, n=3) >> 8).cast("uchar"), None
    return _in_memory(path, name, image.width * image.height), None  # float, 32-bit: whole


def _cmyk_to_rgb(image: pyvips.Image) -> pyvips.Image:
    """PIL's CMYK -> RGB (Convert.c cmyk2rgb), in libvips integer arithmetic."""
    ink = image.cast("int")
    rest = 255 - ink[3]
    channels = []
    for band in range(3):
        product = ink[band] * rest + 128
        channels.append((rest - (((product >> 8) + product) >> 8)).cast("uchar"))
    return channels[0].bandjoin(channels[1:])


def _in_memory(path: Path, name: str, pixels: int) -> pyvips.Image:
    import pyvips

    rgb = read_rgb(path, max_pixels=pixels, name=name, option="(already checked)")
    return pyvips.Image.new_from_array(rgb, interpretation="srgb")


def _file_size(path: Path, name: str) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read the file ({exc.strerror or exc})") from None


def _vips_reason(exc: Exception) -> str:
    """libvips' last line says what failed (the first says only which call)."""
    return str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__


class MaskPng:
    """A label mask written as a greyscale PNG one band of rows at a time: the IDAT stream is
    compressed as rows arrive, so a mask larger than memory is never held whole."""

    def __init__(self, stream: BinaryIO, width: int, height: int):
        self.stream, self.width, self.height, self.rows = stream, width, height, 0
        self.zlib = zlib.compressobj(6)
        stream.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))

    def write(self, band: np.ndarray) -> None:
        """The next rows, (n, width) uint8."""
        if band.ndim != 2 or band.shape[1] != self.width or band.dtype != np.uint8:
            raise ValueError(
                f"mask rows must be (n, {self.width}) uint8, got {band.shape} {band.dtype}"
            )
        self.rows += len(band)
        filtered = np.zeros((len(band), self.width + 1), np.uint8)  # filter byte 0: none
        filtered[:, 1:] = band
        self._idat(self.zlib.compress(filtered.tobytes()))

    def close(self) -> None:
        if self.rows != self.height:
            raise ValueError(f"mask has {self.rows} rows, its header says {self.height}")
        self._idat(self.zlib.flush())
        self._chunk(b"IEND", b"")

    def _idat(self, data: bytes) -> None:
        if data:
            self._chunk(b"IDAT", data)

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.stream.write(struct.pack(">I", len(data)) + kind + data)
        self.stream.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
