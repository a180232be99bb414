"""The IIIF outputs of a damage map: level-0 tiles whose every URL exists, a Presentation 3
manifest, the atomic folder, and the OpenSeadragon viewer in headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import iiif_prezi3 as prezi
import numpy as np
import pytest
import pyvips
from PIL import Image

from heritageseg.core.classes import CLASSES, OVERLAY_ALPHA
from heritageseg.core.errors import HeritagesegError
from heritageseg.stages import iiif
from tests.browser import Tab, ink

PAPER = (236, 226, 204)  # the scan: plain paper, so blended class colours are predictable
# class id -> rectangle as fractions of the image (x, y, w, h)
RECTS = {1: (0.08, 0.10, 0.22, 0.18), 5: (0.50, 0.30, 0.30, 0.30), 9: (0.15, 0.72, 0.50, 0.10)}
UNLABELLED = (0.85, 0.05, 0.10, 0.10)  # mask 255: not damage, never drawn
STEM = "scan1"


def scene(width: int = 3000, height: int = 2000) -> tuple[pyvips.Image, pyvips.Image, dict]:
    """A plain scan, a mask with one rectangle of classes 1, 5 and 9 (and one of 255), and
    the damage report of that mask."""
    scan = (pyvips.Image.black(width, height, bands=3) + list(PAPER)).cast("uchar")
    scan = scan.copy(interpretation="srgb")
    mask = pyvips.Image.black(width, height).cast("uchar")
    classes = {
        c.name: {"id": c.id, "pixels": 0, "area_pct": 0.0, "regions": 0, "bbox": None}
        for c in CLASSES
    }
    x, y, w, h = _box(UNLABELLED, width, height)
    mask = mask.draw_rect(255, x, y, w, h, fill=True)
    for cid, fractions in RECTS.items():
        x, y, w, h = _box(fractions, width, height)
        mask = mask.draw_rect(cid, x, y, w, h, fill=True)
        pct = 100 * w * h / (width * height)
        classes[CLASSES[cid].name].update(pixels=w * h, area_pct=pct, regions=1, bbox=[x, y, w, h])
    report = {
        "width": width,
        "height": height,
        "image": "/archive/scans/scan1.tif",
        "model": {"name": "heritageseg-segformer", "version": "7"},
        "damage_area_pct": sum(v["area_pct"] for v in classes.values() if v["id"]),
        "classes": classes,
    }
    return scan, mask, report


def _box(fractions, width: int, height: int) -> tuple[int, int, int, int]:
    fx, fy, fw, fh = fractions
    return int(fx * width), int(fy * height), int(fw * width), int(fh * height)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    scan, mask, report = scene()
    return iiif.write_iiif(scan, mask, report, tmp_path_factory.mktemp("out"), STEM)


def _tile_urls(info: dict, extension: str) -> list[str]:
    """What a level-0 client asks for (written here independently of the module, after
    OpenSeadragon's IIIFTileSource.getTileUrl): per scale factor, tiles of `width` pixels,
    `full` for a region covering the image, `max` for the size of the whole image."""
    width, height = info["width"], info["height"]
    tile = info["tiles"][0]
    tw, th = tile["width"], tile.get("height", tile["width"])
    urls = []
    for factor in tile["scaleFactors"]:
        lw, lh = math.ceil(width / factor), math.ceil(height / factor)
        if lw < tw and lh < th:
            size = "max" if (lw, lh) == (width, height) else f"{lw},{lh}"
            urls.append(f"{info['id']}/full/{size}/0/default.{extension}")
            continue
        for row in range(math.ceil(lh / th)):
            for col in range(math.ceil(lw / tw)):
                x, y = col * tw * factor, row * th * factor
                w, h = min(tw * factor, width - x), min(th * factor, height - y)
                region = "full" if (x, y, w, h) == (0, 0, width, height) else f"{x},{y},{w},{h}"
                sw, sh = min(tw, lw - col * tw), min(th, lh - row * th)
                size = "max" if (sw, sh) == (width, height) else f"{sw},{sh}"
                urls.append(f"{info['id']}/{region}/{size}/0/default.{extension}")
    return urls


def _layers() -> dict[str, str]:
    """Each layer folder of the scene's output and its tiles' extension."""
    layers = {"scan": "jpg", "overlay": "png"}
    layers.update({f"class-{cid}": "png" for cid in RECTS})
    return layers


# ---------------------------------------------------------------- manifest


def test_manifest_is_presentation_3(written):
    data = json.loads((written / "manifest.json").read_text())
    model = prezi.Manifest(**data)  # the models validate it
    assert isinstance(model.items[0], prezi.Canvas)
    base = written.resolve().as_uri()
    assert data["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert data["type"] == "Manifest" and data["id"] == f"{base}/manifest.json"
    assert "scan1.tif" in data["label"]["en"][0]
    meta = {m["label"]["en"][0]: m["value"]["en"][0] for m in data["metadata"]}
    assert meta["Source image"] == "scan1.tif" and meta["Model"] == "heritageseg-segformer"
    assert meta["Model version"] == "7" and meta["Damage area"].endswith(" %")
    canvas = data["items"][0]
    assert canvas["type"] == "Canvas" and (canvas["width"], canvas["height"]) == (3000, 2000)
    painting = canvas["items"][0]["items"]
    assert [a["motivation"] for a in painting] == ["painting", "painting"]
    services = [a["body"]["service"][0] for a in painting]
    assert [s["id"] for s in services] == [f"{base}/scan", f"{base}/overlay"]
    assert {(s["type"], s["profile"]) for s in services} == {("ImageService3", "level0")}
    for annotation in painting:
        assert annotation["target"] == canvas["id"]
        body = annotation["body"]
        assert Path(body["id"].removeprefix(base + "/")).parts[1] == "full"
        assert (written / body["id"].removeprefix(base + "/")).is_file()
    comments = canvas["annotations"][0]["items"]
    assert len(comments) == len(RECTS)
    _, _, report = scene()
    for comment, cid in zip(comments, sorted(RECTS), strict=True):
        entry = report["classes"][CLASSES[cid].name]
        assert comment["motivation"] == "commenting"
        assert comment["target"] == f"{canvas['id']}#xywh={','.join(map(str, entry['bbox']))}"
        text = comment["body"]["value"]
        assert text == f"{CLASSES[cid].name}: {entry['area_pct']:.2f} % of the image, 1 region"


def test_info_json_ids_follow_base_url(tmp_path):
    scan, mask, report = scene(700, 500)
    base = "https://museum.example/maps/scan1_iiif"
    out = iiif.write_iiif(scan, mask, report, tmp_path, STEM, base_url=base + "/")
    for layer in _layers():
        info = json.loads((out / layer / "info.json").read_text())
        assert info["id"] == f"{base}/{layer}" and info["profile"] == "level0"
        assert info["type"] == "ImageService3"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["id"] == f"{base}/manifest.json"
    assert base not in (out / "viewer.html").read_text()  # the viewer's URLs are relative


# ---------------------------------------------------------------- tiles


@pytest.mark.parametrize("size", [(3000, 2000), (1537, 1025), (300, 200)])
def test_every_tile_url_exists(tmp_path, size):
    scan, mask, report = scene(*size)
    out = iiif.write_iiif(scan, mask, report, tmp_path, STEM)
    base = out.resolve().as_uri()
    for layer, extension in _layers().items():
        info = json.loads((out / layer / "info.json").read_text())
        assert (info["width"], info["height"]) == size
        urls = _tile_urls(info, extension)
        missing = [u for u in urls if not (out / u.removeprefix(base + "/")).is_file()]
        assert urls and not missing, f"{layer}: {len(missing)} of {len(urls)} missing"
    assert not (out / ".mask.tif").exists() and not (out / "vips-properties.xml").exists()


def _pixel(out: Path, layer: str, x: int, y: int) -> tuple[int, ...]:
    """The full-resolution RGBA value at (x, y) of a layer, read from its tile."""
    tx, ty = x // 512 * 512, y // 512 * 512
    region = out / layer / f"{tx},{ty},{min(512, 3000 - tx)},{min(512, 2000 - ty)}"
    tile = next(region.glob("*/0/default.png"))
    return tuple(np.asarray(Image.open(tile).convert("RGBA"))[y - ty, x - tx])


def test_overlay_tiles_are_clear_on_clean_pixels_and_coloured_on_damage(written):
    alpha = round(OVERLAY_ALPHA * 255)
    for cid, fractions in RECTS.items():
        x, y, w, h = _box(fractions, 3000, 2000)
        centre = (x + w // 2, y + h // 2)
        colour = (*CLASSES[cid].rgb, alpha)
        assert _pixel(written, "overlay", *centre) == colour
        assert _pixel(written, f"class-{cid}", *centre) == colour
        for other in RECTS.keys() - {cid}:  # a class layer holds its class only
            assert _pixel(written, f"class-{other}", *centre)[3] == 0
    x, y, w, h = _box(UNLABELLED, 3000, 2000)
    assert _pixel(written, "overlay", x + w // 2, y + h // 2)[3] == 0  # 255 is not damage
    assert _pixel(written, "overlay", 5, 1995)[3] == 0  # Clean
    # a tile with no damage anywhere is wholly clear
    clear = written / "overlay" / "2560,1536,440,464" / "440,464" / "0" / "default.png"
    assert not np.asarray(Image.open(clear).convert("RGBA"))[..., 3].any()


def test_sequential_files_are_read_once(tmp_path):
    scan, mask, report = scene(1200, 900)
    scan.jpegsave(str(tmp_path / "scan.jpg"))
    mask.pngsave(str(tmp_path / "mask.png"))
    scan = pyvips.Image.new_from_file(str(tmp_path / "scan.jpg"), access="sequential")
    mask = pyvips.Image.new_from_file(str(tmp_path / "mask.png"), access="sequential")
    out = iiif.write_iiif(scan, mask, report, tmp_path, STEM)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*_layers(), "manifest.json", "openseadragon.min.js", "viewer.html"]
    )


# ---------------------------------------------------------------- the folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_older_folder_is_replaced_whole(tmp_path):
    old = tmp_path / f"{STEM}_iiif"
    (old / "class-12").mkdir(parents=True)
    (old / "stale.txt").write_text("from an older run")
    scan, mask, report = scene(700, 500)
    assert iiif.write_iiif(scan, mask, report, tmp_path, STEM) == old
    assert not (old / "stale.txt").exists() and not (old / "class-12").exists()
    assert (old / "viewer.html").is_file() and _leftovers(tmp_path) == []


def test_a_failure_midway_leaves_the_older_folder_and_no_staging(tmp_path, monkeypatch):
    old = tmp_path / f"{STEM}_iiif"
    old.mkdir()
    (old / "manifest.json").write_text('{"old": true}')
    real = iiif._write_layer
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:  # after the scan and the overlay: the first class layer
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(iiif, "_write_layer", failing)
    scan, mask, report = scene(700, 500)
    with pytest.raises(OSError, match="disk full"):
        iiif.write_iiif(scan, mask, report, tmp_path, STEM)
    assert calls == ["overlay", "class-1"]
    assert sorted(p.name for p in old.iterdir()) == ["manifest.json"]
    assert (old / "manifest.json").read_text() == '{"old": true}'
    assert _leftovers(tmp_path) == []


def test_a_mask_of_another_size_is_refused(tmp_path):
    scan, _, report = scene(700, 500)
    _, mask, _ = scene(700, 499)
    with pytest.raises(HeritagesegError, match=r"700 x 499.*700 x 500"):
        iiif.write_iiif(scan, mask, report, tmp_path, STEM)
    assert list(tmp_path.iterdir()) == []


def test_missing_openseadragon_says_run_make_setup(tmp_path, monkeypatch):
    missing = tmp_path / "no_node_modules"
    monkeypatch.setenv(iiif.NODE_MODULES_ENV, str(missing))
    scan, mask, report = scene(700, 500)
    with pytest.raises(HeritagesegError, match="make setup") as error:
        iiif.write_iiif(scan, mask, report, tmp_path / "out", STEM)
    assert str(missing / "openseadragon" / "build" / "openseadragon") in str(error.value)
    assert not (tmp_path / "out").exists()


def test_node_modules_is_the_repository_roots_by_default(monkeypatch):
    monkeypatch.delenv(iiif.NODE_MODULES_ENV, raising=False)
    root = Path(__file__).resolve().parents[1]
    assert iiif.node_modules() == root / "node_modules"
    assert iiif.openseadragon_script().is_file()  # `make setup` ran npm ci


# ---------------------------------------------------------------- the viewer


def _near(shot: Path, rgb: tuple[int, int, int], tolerance: int = 8) -> float:
    """Share of the screenshot's pixels within `tolerance` of `rgb`."""
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    return float((np.abs(pixels - rgb).max(axis=-1) <= tolerance).mean())


def _blended(cid: int) -> tuple[int, int, int]:
    """A class colour over the paper at the overlay's opacity, as the canvas draws it."""
    alpha = round(OVERLAY_ALPHA * 255) / 255
    return tuple(round(p + (c - p) * alpha) for c, p in zip(CLASSES[cid].rgb, PAPER, strict=True))


# every layer added, every shown one fully loaded (OpenSeadragon loads no tiles of a hidden
# one), and nothing waiting to be drawn
_DRAWN = (
    "items.size === CONFIG.layers.length && [...Array(viewer.world.getItemCount()).keys()]"
    ".map((i) => viewer.world.getItemAt(i)).every((t) => t.getOpacity() === 0 || "
    "t.getFullyLoaded()) && !viewer.world.needsDraw()"
)


def _drawn_page(url: str, out: Path) -> Path:
    """A screenshot of `url` once every layer is loaded and drawn (a fixed wait was flaky on
    a loaded machine: a screenshot without the scan)."""
    with Tab(out.parent) as tab:
        tab.open(url, _DRAWN)
        return tab.screenshot(out)


@pytest.mark.browser
def test_viewer_shows_the_overlay_and_hides_classes_from_the_address(written, tmp_path):
    page = (written / "viewer.html").resolve().as_uri()
    shown = _drawn_page(page, tmp_path / "viewer.png")
    shutil.copyfile(shown, "/tmp/iiif_viewer.png")
    assert ink(shown) > 0.2  # the page is not blank
    assert _near(shown, PAPER) > 0.1  # the scan is drawn
    # each rectangle covers >= 2 % of the image, which fills most of a 1400 x 1000 page
    for cid in RECTS:
        assert _near(shown, _blended(cid)) > 0.01, CLASSES[cid].name
    assert _near(shown, CLASSES[5].rgb) < 0.001  # the overlay is translucent
    hidden = _drawn_page(f"{page}#hide=5", tmp_path / "hide5.png")
    assert _near(hidden, _blended(5)) < 0.0005
    assert _near(hidden, _blended(1)) > 0.01 and _near(hidden, _blended(9)) > 0.01
    off = _drawn_page(f"{page}?overlay=off", tmp_path / "off.png")
    assert all(_near(off, _blended(cid)) < 0.0005 for cid in RECTS)
    assert _near(off, PAPER) > _near(shown, PAPER)


@pytest.mark.browser
def test_clicking_the_checkboxes_hides_a_class_then_the_whole_overlay(written, tmp_path):
    with Tab(tmp_path) as tab:
        tab.open((written / "viewer.html").resolve().as_uri(), _DRAWN)
        shown = tab.screenshot(tmp_path / "clicked_none.png")
        assert all(_near(shown, _blended(cid)) > 0.01 for cid in RECTS)
        tab.click('input.layer[data-id="5"]')
        tab.wait_for(f"items.get(5).getOpacity() === 0 && {_DRAWN}")
        no5 = tab.screenshot(tmp_path / "clicked_class_5.png")
        assert _near(no5, _blended(5)) < 0.0005
        assert _near(no5, _blended(1)) > 0.01 and _near(no5, _blended(9)) > 0.01
        tab.click("#overlay")
        tab.wait_for(f"items.get(1).getOpacity() === 0 && {_DRAWN}")
        off = tab.screenshot(tmp_path / "clicked_overlay.png")
        assert all(_near(off, _blended(cid)) < 0.0005 for cid in RECTS)
        tab.click("#overlay")  # back on: the class unticked before stays hidden
        tab.wait_for(f"items.get(1).getOpacity() === 1 && {_DRAWN}")
        back = tab.screenshot(tmp_path / "clicked_overlay_again.png")
        assert _near(back, _blended(1)) > 0.01 and _near(back, _blended(5)) < 0.0005
    for shot in (shown, no5, off, back):
        shutil.copyfile(shot, f"/tmp/{shot.name}")
