"""Read ARTeFACT records from the published parquet shards or a folder of PNG pairs.

Both sources stream record by record: a parquet shard is read a few rows at a time and a
folder one file pair at a time, so memory is bounded by the largest record, never by the
data set (the real one is 13.5 GB decoded). Decoding and validation happen per record and
raise `RecordError` naming the record, so `--on-error skip` can drop it and go on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from heritageseg.core.classes import NUM_CLASSES
from heritageseg.core.config import RECORD_MAX_PIXELS, RECORD_PIXELS_OPTION
from heritageseg.core.errors import DataError, RecordError
from heritageseg.core.paths import FOLDER_METADATA, MANIFEST
from heritageseg.data.images import declared_size, pixel_limit, to_rgb

IMAGE_COLUMNS = ("image", "annotation", "annotation_rgb")
TEXT_COLUMNS = (
    "material",
    "content",
    "type",
    "damage_description",
    "llava_description",
    "verified_description",
)
PUBLISHED_COLUMNS = ("id", *IMAGE_COLUMNS, *TEXT_COLUMNS)
# What the benchmark cannot do without: pixels, labels, and the metadata splits group by.
REQUIRED_COLUMNS = ("id", "image", "annotation", "material", "content")

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [("id", pa.string())]
    + [(name, IMAGE_STRUCT) for name in IMAGE_COLUMNS]
    + [(name, pa.string()) for name in TEXT_COLUMNS]
)

_READ_BATCH_ROWS = 4
_LABEL_BINS = 256

# Ids become file names and CSV cells downstream: letters, digits and `_ . -` only.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_LABEL_MAX_CHARS = 200  # material, content, type: short category names
_DESCRIPTION_MAX_CHARS = 100_000
_COLOUR_MODES = ("RGB", "RGBA", "P")


@dataclass(frozen=True)
class RawRecord:
    """One record as stored: encoded image bytes and metadata, nothing decoded yet."""

    id: str
    origin: str  # where it came from, for error messages: "shard.parquet row 3"
    image: bytes | None
    annotation: bytes | None
    annotation_rgb: bytes | None = None
    material: str | None = None
    content: str | None = None
    type: str | None = None
    damage_description: str | None = None
    llava_description: str | None = None
    verified_description: str | None = None
    image_path: str | None = None
    annotation_path: str | None = None
    annotation_rgb_path: str | None = None
    problem: str | None = None  # found while reading the source (a file empty, unreadable...)
    # its images may decode to at most this many pixels: ingest.max_pixels, which an
    # ingested folder's manifest carries to every later reader (prepare, native evaluation)
    max_pixels: int = RECORD_MAX_PIXELS


@dataclass(frozen=True)
class RecordCheck:
    """What validation learnt about a record without converting its pixels."""

    width: int
    height: int
    label_counts: np.ndarray  # (256,) int64 pixel count per label value


@dataclass(frozen=True)
class Record:
    """A decoded record: RGB uint8 image and uint8 label mask of the same size."""

    raw: RawRecord
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, values in {0..15, 255}


# ---------------------------------------------------------------- sources


def find_shards(path: Path) -> list[Path]:
    shards = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not shards:
        raise DataError(
            f"{path}: empty source — no *.parquet shards and no metadata.csv found. "
            "Point --path at the folder holding data/train-*.parquet or a PNG folder "
            "with metadata.csv."
        )
    return shards


def iter_parquet(path: str | Path) -> Iterator[RawRecord]:
    """Stream records from published shards, a few rows at a time."""
    shards = find_shards(Path(path))
    limit = ingested_pixel_limit(Path(path))
    for shard in shards:
        parquet = _open_parquet(shard)
        columns = _check_columns(parquet.schema_arrow, shard)
        row = 0
        for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, columns=columns):
            for values in batch.to_pylist():
                yield record_from_row(values, f"{shard.name} row {row}", limit)
                row += 1


def ingested_pixel_limit(path: Path) -> int:
    """The pixel limit a folder written by ingest was validated under (its manifest's
    `pixel_limit`); the default for published shards and folders from before it was kept."""
    manifest = path / MANIFEST if path.is_dir() else path.parent / MANIFEST
    try:
        return int(json.loads(manifest.read_text())["pixel_limit"])
    except (OSError, ValueError, KeyError, TypeError):
        return RECORD_MAX_PIXELS


def iter_folder(path: str | Path) -> Iterator[RawRecord]:
    """Stream records from the dataset card's layout: metadata.csv + image/annotation PNGs."""
    root = Path(path)
    with (root / FOLDER_METADATA).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("id", "material", "content") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{root / 'metadata.csv'}: missing required column(s) {', '.join(missing)}; "
                "expected id, material, content and optionally image_path, annotation_path, "
                "annotation_rgb_path, type and the descriptions"
            )
        count = 0
        for line, row in enumerate(reader, start=2):
            count += 1
            yield _record_from_folder_row(root, row, f"metadata.csv line {line}")
    if count == 0:
        raise DataError(f"{root / 'metadata.csv'}: empty source — the file lists no records")


def read_metadata(path: str | Path, columns: tuple[str, ...] = ("id", "material", "content")):
    """The metadata columns of every record as a DataFrame, without touching image bytes."""
    import pandas as pd

    frames = []
    for shard in find_shards(Path(path)):
        parquet = _open_parquet(shard)
        _check_columns(parquet.schema_arrow, shard)
        frames.append(parquet.read(columns=list(columns)).to_pandas())
    return pd.concat(frames, ignore_index=True)


def _open_parquet(shard: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(shard)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{shard}: not a readable parquet file ({exc})") from exc


def _check_columns(schema: pa.Schema, shard: Path) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise DataError(
            f"{shard}: missing required column(s) {', '.join(missing)}; the published "
            f"ARTeFACT schema has {', '.join(PUBLISHED_COLUMNS)}"
        )
    for name in IMAGE_COLUMNS:
        if name in schema.names and not _is_image_type(schema.field(name).type):
            raise DataError(
                f"{shard}: column {name!r} has type {schema.field(name).type}; expected the "
                "Hugging Face image struct {bytes: binary, path: string} or binary"
            )
    return [c for c in PUBLISHED_COLUMNS if c in schema.names]


def _is_image_type(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return kind.get_field_index("bytes") >= 0
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _split_image(value: object) -> tuple[bytes | None, str | None]:
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    return value, None  # type: ignore[return-value]


def record_from_row(values: dict, origin: str, max_pixels: int = RECORD_MAX_PIXELS) -> RawRecord:
    images = {name: _split_image(values.get(name)) for name in IMAGE_COLUMNS}
    return RawRecord(
        id=str(values.get("id") or ""),
        origin=origin,
        max_pixels=max_pixels,
        image=images["image"][0],
        annotation=images["annotation"][0],
        annotation_rgb=images["annotation_rgb"][0],
        image_path=images["image"][1],
        annotation_path=images["annotation"][1],
        annotation_rgb_path=images["annotation_rgb"][1],
        **{name: values.get(name) for name in TEXT_COLUMNS},
    )


def _record_from_folder_row(root: Path, row: dict[str, str], origin: str) -> RawRecord:
    """The row's record; a file it cannot use (outside the folder, empty, unreadable) becomes
    the record's `problem`, so the stream goes on and `--on-error skip` can drop it."""
    record_id = (row.get("id") or "").strip()
    texts = {name: (row.get(name) or None) for name in TEXT_COLUMNS}
    try:
        files = {
            name: _resolve_file(root, row.get(f"{name}_path"), name, record_id)
            for name in IMAGE_COLUMNS
        }
        data = {name: _read_bytes(path, name) for name, path in files.items()}
    except _UnusableFile as problem:
        return RawRecord(id=record_id, origin=origin, image=None, annotation=None,
                         problem=str(problem), **texts)  # fmt: skip
    return RawRecord(
        id=record_id,
        origin=origin,
        **data,
        **{f"{name}_path": path.name for name, path in files.items()},
        **texts,
    )


def _resolve_file(root: Path, listed: str | None, column: str, record_id: str) -> Path:
    """The file of `column`, inside `root` (symlinks followed): metadata.csv is untrusted, a
    path leading out of the folder is an error. The card's example writes absolute paths of
    the machine it ran on; those fall back to the same file name under <column>/, then to
    the conventional <column>/<id>.png."""
    candidates = []
    if listed:
        listed_path = Path(listed)
        if not listed_path.is_absolute() and not _inside(root, root / listed_path):
            raise _UnusableFile(_outside(f"{column}_path {listed!r}", root))
        candidates += [root / listed_path, root / column / listed_path.name]
    candidates.append(root / column / f"{record_id}.png")
    existing = [c for c in candidates if c.exists()]
    usable = [c for c in existing if _inside(root, c)]
    if existing and not usable:
        raise _UnusableFile(_outside(f"{column} file {existing[0]}", root))
    return usable[0] if usable else candidates[-1]


class _UnusableFile(Exception):
    """A file a folder row names cannot be used; the message says why."""


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _outside(what: str, root: Path) -> str:
    return f"{what} leads outside the source folder {root}; list files inside it, relative to it"


def _read_bytes(path: Path, column: str) -> bytes | None:
    """The file's bytes; None if it does not exist, an error if it is empty or unreadable."""
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
    except PermissionError:
        raise _UnusableFile(f"{column} file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise _UnusableFile(f"{column} file {path} cannot be read: {exc.strerror}") from None
    if not data:
        raise _UnusableFile(f"{column} file {path} is empty (0 bytes)")
    return data


# ---------------------------------------------------------------- decoding and validation


def check_record(raw: RawRecord) -> RecordCheck:
    """Validate a record fully (both images decode, sizes agree, labels are valid)
    without converting the image to RGB."""
    if raw.problem:
        raise RecordError(raw.id or "<no id>", raw.origin, raw.problem)
    check_fields(raw)
    with _open_image(raw, "image") as image:
        image.load()
        size = image.size
    _, counts = _annotation_array(raw, expected_size=size)
    if raw.annotation_rgb:
        _check_annotation_rgb(raw, expected_size=size)
    return RecordCheck(width=size[0], height=size[1], label_counts=counts)


def check_fields(raw: RawRecord) -> None:
    """The id and the text fields: an id usable as a file name, texts that are strings of
    reasonable length without control characters (descriptions may hold line breaks)."""
    if not raw.id:
        raise RecordError("<no id>", raw.origin, "the id is empty; every record needs its id")
    if not isinstance(raw.id, str) or not _ID_PATTERN.fullmatch(raw.id):
        raise RecordError(
            str(raw.id)[:60],
            raw.origin,
            "the id is not 1..128 letters, digits, '_', '.' or '-' (starting with a letter "
            "or digit); ids become file names, e.g. cljmrkz5n341f07clcujw105j",
        )
    for name in TEXT_COLUMNS:
        problem = _text_problem(getattr(raw, name), name.endswith("description"))
        if problem:
            raise RecordError(raw.id, raw.origin, f"{name} {problem}")


def _text_problem(value: object, description: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    limit = _DESCRIPTION_MAX_CHARS if description else _LABEL_MAX_CHARS
    if len(value) > limit:
        return f"has {len(value):,} characters; at most {limit:,} are accepted"
    text = value.replace("\n", "").replace("\r", "").replace("\t", "") if description else value
    if _CONTROL_CHARACTERS.search(text):
        return "holds control characters"
    return None


def _check_annotation_rgb(raw: RawRecord, expected_size: tuple[int, int]) -> None:
    """The colour rendering of the labels, optional but, when given, a colour image of the
    image's size that decodes."""
    with _open_image(raw, "annotation_rgb") as rendering:
        if rendering.mode not in _COLOUR_MODES:
            raise RecordError(
                raw.id, raw.origin, f"annotation_rgb has mode {rendering.mode}; expected a "
                "colour PNG (RGB) in the published class colours",
            )  # fmt: skip
        if rendering.size != expected_size:
            raise RecordError(
                raw.id, raw.origin, f"annotation_rgb is {_wxh(rendering.size)} but the image "
                f"is {_wxh(expected_size)}",
            )  # fmt: skip
        rendering.load()


def decode_record(raw: RawRecord) -> Record:
    """Decode a record to an RGB uint8 image and a validated label mask."""
    with _open_image(raw, "image") as image:
        rgb = to_rgb(image)
    mask, _ = _annotation_array(raw, expected_size=(rgb.shape[1], rgb.shape[0]))
    return Record(raw=raw, image=rgb, mask=mask)


def decode_annotation(raw: RawRecord) -> np.ndarray:
    """The validated label mask alone; the image is only opened to read its size."""
    with _open_image(raw, "image") as image:
        size = image.size
    mask, _ = _annotation_array(raw, expected_size=size)
    return mask


def label_counts(mask: np.ndarray) -> np.ndarray:
    """Pixel count of every label value 0..255 in one pass (no sort, unlike np.unique)."""
    return np.bincount(mask.ravel(), minlength=_LABEL_BINS).astype(np.int64)


@contextlib.contextmanager
def _open_image(raw: RawRecord, column: str) -> Iterator[Image.Image]:
    data = getattr(raw, column)
    if not data:
        where = getattr(raw, f"{column}_path", None)
        missing = f" (file {where} not found)" if where else ""
        raise RecordError(raw.id, raw.origin, f"no {column} bytes{missing}")
    with pixel_limit(raw.max_pixels):
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            width, height = declared_size(data)
            raise RecordError(
                raw.id, raw.origin, f"{column} is {width} x {height} = {width * height:,} pixels, "
                f"over the limit of {raw.max_pixels:,}; raise {RECORD_PIXELS_OPTION} to accept it "
                "(the largest ARTeFACT image has about 133 M; decoding takes ~4 bytes a pixel)",
            ) from None  # fmt: skip
        except UnidentifiedImageError as exc:
            raise RecordError(
                raw.id, raw.origin, f"{column} does not decode: not an image file PIL can read"
            ) from exc
        except (OSError, ValueError) as exc:
            raise RecordError(raw.id, raw.origin, f"{column} does not decode: {exc}") from exc
        try:
            yield image
        except (OSError, ValueError, SyntaxError) as exc:
            raise RecordError(raw.id, raw.origin, f"{column} does not decode: {exc}") from exc
        finally:
            image.close()


def _annotation_array(
    raw: RawRecord, expected_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The validated label mask and its per-label pixel counts."""
    with _open_image(raw, "annotation") as annotation:
        if annotation.mode not in ("L", "P", "I;16", "I"):
            raise RecordError(
                raw.id,
                raw.origin,
                f"annotation has mode {annotation.mode}; expected a single-channel label "
                "PNG (mode L) with values 0..15 and 255",
            )
        if annotation.size != expected_size:
            raise RecordError(
                raw.id,
                raw.origin,
                f"annotation is {_wxh(annotation.size)} but the image is {_wxh(expected_size)}",
            )
        values = np.asarray(annotation)
    if values.dtype != np.uint8:
        if values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise RecordError(raw.id, raw.origin, _bad_labels_message(values))
        values = values.astype(np.uint8)
    mask = np.ascontiguousarray(values)
    counts = label_counts(mask)
    _check_labels(raw, counts)
    return mask, counts


def _check_labels(raw: RawRecord, counts: np.ndarray) -> None:
    bad = np.flatnonzero(counts[NUM_CLASSES:255])
    if bad.size:
        found = ", ".join(str(v + NUM_CLASSES) for v in bad[:8])
        raise RecordError(
            raw.id,
            raw.origin,
            f"annotation has label values outside 0..15 and 255: {found} "
            f"({int(counts[NUM_CLASSES:255].sum())} pixels)",
        )


def _bad_labels_message(values: np.ndarray) -> str:
    return (
        f"annotation has label values outside 0..15 and 255 (range {values.min()}..{values.max()})"
    )


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
