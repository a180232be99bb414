"""The reader of the published format: schema, modes, streaming, and every bad input."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from heritageseg.core.config import RECORD_MAX_PIXELS
from heritageseg.core.errors import DataError, RecordError
from heritageseg.data.artefact import (
    PUBLISHED_COLUMNS,
    SCHEMA,
    check_record,
    decode_record,
    iter_folder,
    iter_parquet,
)
from heritageseg.data.shards import encode_png

from .conftest import SYNTHETIC, make_raw, write_shards


def test_published_columns_are_the_datasets_in_order():
    assert PUBLISHED_COLUMNS == (
        "id",
        "image",
        "annotation",
        "annotation_rgb",
        "material",
        "content",
        "type",
        "damage_description",
        "llava_description",
        "verified_description",
    )


def test_written_shards_have_the_published_schema(synthetic_raw):
    shards = sorted((synthetic_raw / "data").glob("train-*-of-*.parquet"))
    count = math.ceil(SYNTHETIC.n / SYNTHETIC.rows_per_shard)
    assert len(shards) == count
    assert shards[0].name == f"train-00000-of-{count:05d}.parquet"
    for shard in shards:
        schema = pq.read_schema(shard)
        assert schema.names == list(PUBLISHED_COLUMNS)
        assert schema.remove_metadata().equals(SCHEMA)
        image_type = schema.field("image").type
        assert image_type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        assert b"huggingface" in schema.metadata


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if image.mode != "CMYK" else "TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("RGB", (10, 200, 30)),
        ("RGBA", (10, 200, 30)),
        ("L", (128, 128, 128)),
        ("LA", (128, 128, 128)),
        ("P", (10, 200, 30)),
        ("CMYK", (255, 0, 255)),
        ("I;16", (200, 200, 200)),
    ],
)
def test_any_pil_mode_becomes_rgb_uint8(mode, expected):
    if mode in ("RGB", "RGBA"):
        image = Image.new(mode, (8, 6), (10, 200, 30, 255)[: len(mode)])
    elif mode in ("L", "LA"):
        image = Image.new(mode, (8, 6), (128, 255)[: len(mode)])
    elif mode == "P":
        image = Image.new("RGB", (8, 6), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode == "CMYK":
        image = Image.new("CMYK", (8, 6), (0, 255, 0, 0))
    else:
        image = Image.fromarray(np.full((6, 8), 200 * 257, dtype=np.uint16))
        assert image.mode == "I;16"
    raw = make_raw("mode", mask=np.zeros((6, 8), np.uint8), image=None)
    raw = type(raw)(**{**raw.__dict__, "image": _png(image)})
    record = decode_record(raw)
    assert record.image.dtype == np.uint8
    assert record.image.shape == (6, 8, 3)
    assert tuple(record.image[0, 0]) == expected


def _with(raw, **changes):
    return type(raw)(**{**raw.__dict__, **changes})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": b"not a png at all"}, "image does not decode"),
        ({"annotation": b"\x89PNG\r\n\x1a\n broken"}, "annotation does not decode"),
        ({"image": None}, "no image bytes"),
        ({"annotation": encode_png(np.zeros((16, 20), np.uint8), mode="L")}, "20x16"),
        ({"annotation": encode_png(np.full((16, 24), 16, np.uint8), mode="L")}, "16"),
        ({"annotation": encode_png(np.zeros((16, 24, 3), np.uint8))}, "mode RGB"),
    ],
    ids=["image-bytes", "annotation-bytes", "no-image", "size", "labels", "rgb-annotation"],
)
def test_bad_record_error_names_the_record(change, message):
    raw = _with(make_raw("cbadrecord0000000000000001"), **change)
    with pytest.raises(RecordError) as caught:
        check_record(raw)
    assert "cbadrecord0000000000000001" in str(caught.value)
    assert message in str(caught.value)


def test_label_values_outside_the_scheme_are_listed():
    mask = np.zeros((16, 24), np.uint8)
    mask[0, :3] = [16, 200, 255]
    with pytest.raises(RecordError, match=r"outside 0\.\.15 and 255: 16, 200 \(2 pixels\)"):
        decode_record(make_raw("c1", mask=mask))


def test_missing_required_column_names_the_shard_and_column(tmp_path):
    table = pa.table({"id": ["a"], "image": [{"bytes": b"x", "path": "a.png"}]})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"train-00000-of-00001\.parquet.*annotation"):
        list(iter_parquet(tmp_path))


def test_empty_source_is_an_error(tmp_path):
    with pytest.raises(DataError, match="empty source"):
        list(iter_parquet(tmp_path))
    (tmp_path / "metadata.csv").write_text("id,material,content\n")
    with pytest.raises(DataError, match="empty source"):
        list(iter_folder(tmp_path))


def _peak_arrow_bytes_while_reading(folder, count: int) -> tuple[int, int]:
    """Arrow's peak allocation while streaming `count` incompressible records, and their size."""
    rng = np.random.default_rng(0)
    records = [
        make_raw(
            f"c{i:024d}",
            image=rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),  # ~27 kB of PNG each
            mask=np.zeros((96, 96), np.uint8),
        )
        for i in range(count)
    ]
    write_shards(folder, records, rows_per_shard=16)
    base = pa.total_allocated_bytes()
    peak = 0
    ids = []
    for raw in iter_parquet(folder):
        peak = max(peak, pa.total_allocated_bytes() - base)
        ids.append(raw.id)
    assert ids == [r.id for r in records]
    return peak, sum(len(r.image) for r in records)


def test_reader_memory_does_not_grow_with_the_data_set(tmp_path):
    small_peak, _ = _peak_arrow_bytes_while_reading(tmp_path / "small", 32)
    large_peak, large_total = _peak_arrow_bytes_while_reading(tmp_path / "large", 160)
    assert large_peak < 1.5 * small_peak
    assert large_peak < large_total / 4


def test_pixel_limit_is_raised_deliberately_not_removed():
    assert RECORD_MAX_PIXELS >= 1_000_000_000
    assert Image.MAX_IMAGE_PIXELS not in (None, RECORD_MAX_PIXELS)  # nothing global changed


@pytest.mark.slow
def test_a_record_beyond_the_dataset_cards_limit_decodes_and_a_lower_limit_refuses_it():
    width, height = 20_000, 12_500  # 250 M pixels: over the card's 243,748,701 (and PIL's)
    flat = encode_png(np.zeros((height, width), np.uint8), mode="L")
    raw = _with(make_raw("cbig", image=None), image=flat, annotation=flat)
    record = decode_record(raw)  # as prepare and the native evaluation read it
    assert record.image.shape == (height, width, 3) and record.mask.shape == (height, width)
    del record
    with pytest.raises(RecordError, match=r"cbig.*image is 20000 x 12500 = 250,000,000 pixels, "
                       r"over the limit of 243,748,701; raise ingest.max_pixels"):  # fmt: skip
        check_record(_with(raw, max_pixels=243_748_701))
