"""Scans read and written a band of rows at a time: the same pixels as the whole-image
reader for every mode, masks and overlays that equal their in-memory definitions, reports
with bounding boxes and mm^2, and bad files named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image
from scipy import ndimage

from heritageseg.core.classes import OVERLAY_ALPHA, palette
from heritageseg.core.config import MAX_PIXELS_OPTION
from heritageseg.data.images import ImageError, ImageTooLarge, MaskPng, open_scan, read_rgb
from heritageseg.infer.regions import RegionCounter
from heritageseg.stages.predict import damage_report, overlay, write_overlay

from .images import header_only_png

LIMIT = 10**9


def _open(path: Path, limit: int = LIMIT):
    return open_scan(path, max_pixels=limit, name=str(path), option=MAX_PIXELS_OPTION)


def _picture(height: int = 203, width: int = 157) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _modes() -> dict[str, Image.Image]:
    rgb = Image.fromarray(_picture())
    grey = np.asarray(rgb.convert("L"), dtype=np.uint16)
    transparent = rgb.convert("P")
    transparent.info["transparency"] = 3
    return {
        "rgb.png": rgb, "rgb.jpg": rgb, "grey.png": rgb.convert("L"), "la.png": rgb.convert("LA"),
        "rgba.png": rgb.convert("RGBA"), "palette.png": rgb.convert("P"),
        "palette_alpha.png": transparent, "cmyk.jpg": rgb.convert("CMYK"),
        "cmyk.tif": rgb.convert("CMYK"), "grey16.png": Image.fromarray(grey * 257),
        "grey16_low.png": Image.fromarray(grey), "grey16.tif": Image.fromarray(grey * 250),
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(_modes()))
def test_a_scan_read_in_bands_equals_the_whole_image_reader_in_every_mode(tmp_path, name):
    path = tmp_path / name
    _modes()[name].save(path)
    scan = _open(path)
    rows = scan.rows()
    parts = [rows(0, 90), rows(60, 150)[30:], rows(150, 203)]  # overlapping, as the sweep asks
    expected = read_rgb(path, max_pixels=LIMIT, name=name, option=MAX_PIXELS_OPTION)
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    np.testing.assert_array_equal(scan.again().rows()(0, 203), expected)  # a second pass


def test_48_bit_rgb_keeps_the_high_byte_as_pil_does(tmp_path):
    wide = np.random.default_rng(1).integers(0, 65536, (40, 30, 3)).astype(np.uint16)
    path = tmp_path / "rgb48.png"
    pyvips.Image.new_from_array(wide).copy(interpretation="rgb16").pngsave(str(path))
    expected = read_rgb(path, max_pixels=LIMIT, name="x", option="x")
    np.testing.assert_array_equal(_open(path).rows()(0, 40), expected)


def test_a_scan_over_the_limit_is_refused_from_its_header(tmp_path):
    path = header_only_png(tmp_path / "huge.png", 40_000, 30_000)
    with pytest.raises(ImageTooLarge, match=r"huge.png: 40000 x 30000 = 1,200,000,000 pixels"):
        _open(path)
    with pytest.raises(ImageTooLarge, match=MAX_PIXELS_OPTION):
        _open(path)


def test_bad_scans_are_named(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(_picture(400, 300)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"empty.jpg: empty file \(0 bytes\)"):
        _open(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match=r"notes.png: not an image"):
        _open(tmp_path / "notes.png")
    with pytest.raises(ImageError, match=r"missing.tif: file not found"):
        _open(tmp_path / "missing.tif")
    rows = _open(tmp_path / "cut.png").rows()
    with pytest.raises(
        ImageError, match=r"cut.png: the image does not decode at row \d+.*truncated"
    ):
        for top in range(0, 400, 50):
            rows(top, top + 50)


def test_rows_are_read_top_to_bottom_only(tmp_path):
    Image.fromarray(_picture()).save(tmp_path / "a.png")
    rows = _open(tmp_path / "a.png").rows()
    rows(50, 100)
    with pytest.raises(ValueError, match="top to bottom"):
        rows(10, 20)


def test_the_declared_resolution_is_kept_and_placeholders_are_not(tmp_path):
    Image.fromarray(_picture()).save(tmp_path / "scan.jpg", dpi=(600, 600))
    Image.fromarray(_picture()).save(tmp_path / "plain.png")
    Image.fromarray(_picture()).save(tmp_path / "one.tif", dpi=(1, 1))  # a writer's default
    assert _open(tmp_path / "scan.jpg").dpi == (600.0, 600.0)
    assert _open(tmp_path / "plain.png").dpi is None
    assert _open(tmp_path / "one.tif").dpi is None


def test_the_streamed_mask_png_is_the_mask(tmp_path):
    mask = np.random.default_rng(2).integers(0, 16, (301, 77), dtype=np.uint8)
    stream = io.BytesIO()
    png = MaskPng(stream, 77, 301)
    for top in range(0, 301, 100):
        png.write(mask[top : top + 100])
    png.close()
    image = Image.open(io.BytesIO(stream.getvalue()))
    assert image.mode == "L" and image.size == (77, 301)
    np.testing.assert_array_equal(np.asarray(image), mask)
    short = MaskPng(io.BytesIO(), 77, 301)
    short.write(mask[:10])
    with pytest.raises(ValueError, match="10 rows, its header says 301"):
        short.close()


def test_the_overlay_blends_class_colours_where_damaged_and_is_a_tiled_pyramid(tmp_path):
    picture = _picture(700, 600)
    Image.fromarray(picture).save(tmp_path / "scan.png")
    mask = np.zeros((700, 600), np.uint8)
    mask[100:300, 50:400], mask[500:520, :], mask[600:, 590:] = 9, 3, 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    vips_mask = pyvips.Image.new_from_file(str(tmp_path / "mask.png"))
    blended = overlay(_open(tmp_path / "scan.png").pixels, vips_mask)
    got = np.frombuffer(blended.write_to_memory(), np.uint8).reshape(700, 600, 3)
    mixed = (1 - OVERLAY_ALPHA) * picture + OVERLAY_ALPHA * palette()[mask].astype(float)
    expected = np.where((mask != 0)[..., None], np.rint(mixed), picture)
    np.testing.assert_array_equal(got, expected)
    write_overlay(_open(tmp_path / "scan.png"), tmp_path / "mask.png", tmp_path / "o.tif")
    tiff = Image.open(tmp_path / "o.tif")
    assert tiff.size == (600, 700) and tiff.tag_v2[322] == 256  # TileWidth
    sizes = []
    for level in range(tiff.n_frames):
        tiff.seek(level)
        sizes.append(tiff.size)
    assert sizes[:3] == [(600, 700), (300, 350), (150, 175)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging


def test_the_report_gives_every_region_its_box_and_areas_in_mm2(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[2:6, 3:9], mask[20:30, 40:44], mask[35, 10] = 9, 9, 3  # two Cracks, one Dust
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "s.jpg", dpi=(254, 254))
    counter = RegionCounter()
    for top in range(0, 40, 7):
        counter.add(top, mask[top : top + 7])
    counter.finish()
    report = damage_report(counter, _open(tmp_path / "s.jpg"), "model", "3")
    cracks = report["classes"]["Cracks"]
    assert (cracks["pixels"], cracks["regions"]) == (64, 2)
    assert [r["bbox"] for r in cracks["region_boxes"]] == [[3, 2, 6, 4], [40, 20, 4, 10]]
    assert cracks["bbox"] == [3, 2, 41, 28]
    assert cracks["area_mm2"] == pytest.approx(64 * 0.01)  # 254 dpi: 0.1 mm a pixel
    assert report["resolution_dpi"] == [254.0, 254.0]
    assert report["damage_area_pct"] == pytest.approx(100 * 65 / 2400)
    assert report["classes"]["Clean"]["regions"] == ndimage.label(mask == 0, np.ones((3, 3)))[1]
    assert "region_boxes" not in report["classes"]["Clean"]
